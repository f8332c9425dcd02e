"""Documents: the texts a run reads (files, decompressed files, archive members), each read as
a stream of pieces, so that memory holds a chunk, never a whole file.

    bytes -> incremental decoder -> str pieces        (a chunk of pure ASCII: its bytes as is)

A chunk of pure ASCII skips the decoder (its bytes are its code points). Several documents are
read one after another as one text, a separator between them.
"""

from __future__ import annotations

import codecs
import io
import lzma
import os
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from charlm.errors import CharLMError, flag

CHUNK_BYTES = 16 << 20  # bytes read per chunk

Opener = Callable[[], BinaryIO]
# what reading a file or a decompressing stream can raise, besides OSError
READ_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile, RuntimeError)


def decoder(encoding: str, errors: str) -> codecs.IncrementalDecoder:
    """A fresh decoder for --encoding and --errors: unknown ones, and codecs that are not text
    encodings (hex, base64, rot13, zlib_codec: bytes to bytes or str to str), are one line,
    and callers ask for one before they open any file."""
    try:
        codecs.lookup_error(errors)
    except (LookupError, TypeError):
        raise CharLMError(
            f"unknown error handler: {flag('errors', repr(errors))} (strict, replace, "
            f"surrogateescape)"
        ) from None
    try:
        info = codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise CharLMError(f"unknown encoding: {flag('encoding', repr(encoding))}") from None
    if not info._is_text_encoding:  # the codecs module's own mark of a text encoding
        raise CharLMError(
            f"{flag('encoding', encoding)} is not a text encoding (it turns bytes into bytes, or "
            f"text into text): name the encoding of the text, such as utf-8 or latin-1"
        )
    return info.incrementaldecoder(errors)


@dataclass(frozen=True)
class Document:
    """One text of the input: a file, a decompressed file, a member of an archive, or text
    held in memory (the built-in corpus)."""

    name: str  # as messages show it: the path given, or archive.zip/member
    open: Opener
    path: str  # the file on disk, absolute; "" for text held in memory
    size: int  # of the file on disk (compressed, for `packed` documents)
    mtime_ns: int
    member: str = ""  # the member's name, in an archive
    packed: bool = False  # compressed: the text is longer than `size`
    # setting a file's mtime back changes its ctime, and replacing it its inode: with the size
    # they tell an edited file without reading it (a copy with the same text counts as edited)
    ctime_ns: int = 0
    inode: int = 0

    @property
    def identity(self) -> list[Any]:
        """What the encoded cache and --resume record of the document's file."""
        where = f"{self.path}/{self.member}" if self.member else self.path
        return [where, self.size, self.mtime_ns, self.ctime_ns, self.inode]

    def changed(self) -> bool:
        """Whether the file is no longer the one `identity` records (text in memory: never)."""
        if not self.path:
            return False
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        return stamp(st) != (self.size, self.mtime_ns, self.ctime_ns, self.inode)


def stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    """(size, mtime, ctime, inode): what a document's identity records of its file."""
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def text_document(name: str, text: bytes) -> Document:
    """Text held in memory as a document: it has no file, so nothing on disk can change it."""
    return Document(name, lambda: io.BytesIO(text), "", len(text), 0)


def _read(f: BinaryIO, name: str, size: int) -> bytes:
    try:
        return f.read(size)
    except READ_ERRORS as e:
        reason = getattr(e, "strerror", None) or e
        raise CharLMError(f"cannot read {name}: {reason}") from None


def _binary(name: str) -> str:
    return (
        f"{name} looks like a binary file (it contains NUL bytes), not text (see "
        f"{flag('byte_level')})"
    )


def _decoded(doc: Document, encoding: str, errors: str, chunk_size: int) -> Iterator[bytes | str]:
    """The document's text piece by piece: ASCII chunks as their bytes, others decoded to str.

    The incremental decoder carries a multi-byte character cut by a chunk boundary over to the
    next chunk; a decoding error reports its byte offset in the whole file.
    """
    decoding = decoder(encoding, errors)
    ascii_fast = codecs.lookup(encoding).name == "utf-8"
    offset = 0  # file offset of the start of `raw`
    with doc.open() as f:
        while True:
            raw = _read(f, doc.name, chunk_size)
            pending = decoding.getstate()[0]  # bytes of a character cut by the last boundary
            if ascii_fast and raw and not pending and raw.isascii():
                if b"\x00" in raw:
                    raise CharLMError(_binary(doc.name))
                yield raw
            else:
                try:
                    text = decoding.decode(raw, final=not raw)
                except UnicodeDecodeError as e:  # e.object is pending + raw
                    raise CharLMError(
                        f"{doc.name} is not valid {encoding}: bad byte 0x{e.object[e.start]:02x} "
                        f"at byte offset {offset - len(pending) + e.start} (use "
                        f"{flag('encoding')} to name the right encoding, or "
                        f"{flag('errors', 'replace')})"
                    ) from None
                except UnicodeError as e:  # utf-16 without its byte-order mark, idna, ...
                    raise CharLMError(
                        f"{doc.name} cannot be read as {encoding}: {e} (use "
                        f"{flag('encoding')} to name the right encoding)"
                    ) from None
                if "\x00" in text:
                    raise CharLMError(_binary(doc.name))
                if text:
                    yield text
            if not raw:
                return
            offset += len(raw)


def _raw(doc: Document, chunk_size: int) -> Iterator[bytes]:
    """The document's bytes chunk by chunk (byte-level mode: nothing is decoded)."""
    with doc.open() as f:
        while raw := _read(f, doc.name, chunk_size):
            yield raw


def pieces(
    docs: Sequence[Document],
    separator: str,
    encoding: str,
    errors: str,
    chunk_size: int,
    byte_level: bool,
) -> Iterator[bytes | str]:
    """The documents one after another as one text, `separator` between two documents."""
    sep: bytes | str = separator.encode("utf-8") if byte_level or separator.isascii() else separator
    for k, doc in enumerate(docs):
        if k and sep:
            yield sep
        if byte_level:
            yield from _raw(doc, chunk_size)
        else:
            yield from _decoded(doc, encoding, errors, chunk_size)
