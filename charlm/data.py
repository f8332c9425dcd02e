"""Corpus and vocabulary: read UTF-8 text, map characters to integer ids and back.

The vocabulary is the sorted set of Unicode code points of the corpus. Encoding goes through a
numpy lookup table indexed by code point, so no Python loop runs per character.

A corpus file is read in chunks, twice, so memory does not grow with the file:

    pass 1: bytes -> incremental decoder -> code points -> np.bincount   => vocabulary, length
    pass 2: bytes -> incremental decoder -> code points -> lookup table  => ids (uint8/16/32)

A chunk of pure ASCII skips the decoder (its bytes are its code points). Several documents
(files, archive members) are read one after another as one text, a separator between them, so
memory is a few chunks whatever the number or size of the files. Inputs of IN_MEMORY_BELOW bytes
or more keep their ids in an encoded cache (storage.cache_dir("encoded")), keyed by the list of
documents and each one's size, mtime, ctime and inode, opened as a read-only np.memmap on the
next run; smaller inputs keep their ids in memory.

Byte-level mode reads bytes, not characters: the vocabulary is the 256 byte values, any file can
be read, and the scores are bits per byte, the unit the enwik8 literature reports.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import lzma
import os
import stat
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from charlm.errors import CharLMError
from charlm.storage import WriteFailed, atomic_write, cache_dir, write_text

BUILTIN = "builtin"
CHUNK_BYTES = 16 << 20  # bytes read per chunk
FIRST_LOOK = 1 << 16  # characters of the first chunk scanned on their own
IN_MEMORY_BELOW = 32 << 20  # smaller files are encoded in memory, larger ones cached on disk
CACHE_FORMAT = 2
UNICODE = 0x110000  # code points 0 .. 0x10FFFF


def _codepoints(text: str) -> np.ndarray:
    """The code points of `text` as a uint32 array (one per character, no Python loop)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def _show(chars: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(repr(c) for c in chars[:limit])
    return shown + (f" ... ({len(chars)} in all)" if len(chars) > limit else "")


class Vocab:
    """Sorted characters <-> ids 0..V-1."""

    def __init__(self, chars: Sequence[str]) -> None:
        if list(chars) != sorted(set(chars)) or any(len(c) != 1 for c in chars):
            raise CharLMError("a vocabulary must be sorted, distinct single characters")
        self.chars: list[str] = list(chars)
        self.codepoints = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        top = int(self.codepoints[-1]) + 1 if self.chars else 1
        self._lut = np.full(top, -1, dtype=np.int64)  # code point -> id, -1 when absent
        self._lut[self.codepoints] = np.arange(len(self.chars))

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        return cls([chr(c) for c in np.unique(_codepoints(text))])

    @classmethod
    def of_bytes(cls) -> Vocab:
        """The 256 byte values, id = byte (no text corpus has them all: NUL makes it binary)."""
        return cls([chr(b) for b in range(256)])

    @property
    def is_bytes(self) -> bool:
        """A byte-level vocabulary: text goes in and out as UTF-8 bytes."""
        return len(self.chars) == 256 and self.chars[0] == "\x00" and self.chars[-1] == "\xff"

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.chars == other.chars

    def _lookup(self, text: str) -> np.ndarray:
        if self.is_bytes:
            return np.frombuffer(text.encode("utf-8", "surrogatepass"), np.uint8).astype(np.int64)
        cps = _codepoints(text)
        ids = np.full(len(cps), -1, dtype=np.int64)
        inside = cps < len(self._lut)
        ids[inside] = self._lut[cps[inside]]
        return ids

    def unknown(self, text: str) -> list[str]:
        """Distinct characters of `text` that are not in the vocabulary, sorted."""
        if self.is_bytes:
            return []
        cps = _codepoints(text)
        return [chr(c) for c in np.unique(cps[self._lookup(text) < 0])]

    def encode(self, text: str, skip_unknown: bool = False) -> np.ndarray:
        """Ids of `text`; unknown characters are an error naming them, or dropped if asked."""
        ids = self._lookup(text)
        missing = ids < 0
        if missing.any():
            if not skip_unknown:
                unknown = self.unknown(text)
                raise CharLMError(
                    f"{len(unknown)} character(s) not in the model's vocabulary: {_show(unknown)}"
                )
            ids = ids[~missing]
        return ids

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        if self.is_bytes:  # bytes cut inside a character, or not UTF-8, show as U+FFFD
            return np.asarray(ids, dtype=np.uint8).tobytes().decode("utf-8", "replace")
        cps = self.codepoints[np.asarray(ids, dtype=np.int64)].astype("<u4")
        return cps.tobytes().decode("utf-32-le", "surrogatepass")


@dataclass
class Corpus:
    """An encoded text: ids (int64, or a smaller unsigned dtype) and the vocabulary."""

    ids: np.ndarray
    vocab: Vocab
    source: str
    # Document.identity of each document read: what --resume checks the inputs against
    inputs: list[list[Any]] = field(default_factory=list)
    # a named corpus's declared split, in ids: (end of train, end of validation)
    declared: tuple[int, int] | None = None
    note: str = ""  # one line on what was read and skipped, when there were several documents

    def split(self, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
        """(train, val): the declared parts if any, else the last `val_fraction` is validation."""
        if self.declared is not None:
            train_end, val_end = self.declared
            return self.ids[:train_end], self.ids[train_end:val_end]
        n_val = int(len(self.ids) * val_fraction)
        cut = len(self.ids) - n_val
        return self.ids[:cut], self.ids[cut:]


def builtin_text() -> str:
    """Python's own help topics (`pydoc_data.topics`): ~0.5 MB of English prose, always offline."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def not_regular(path: str | os.PathLike[str]) -> str:
    """Why a pipe or a device is refused: a corpus is read twice (vocabulary, then ids)."""
    return (
        f"{path} is not a regular file (a pipe, socket or device?): charlm reads a corpus twice, "
        f"so save it to a file first (e.g. `cat > corpus.txt`) and pass that"
    )


def _check_file(path: str) -> os.stat_result:
    if not os.path.exists(path):
        raise CharLMError(f"no such file: {path}")
    if os.path.isdir(path):
        raise CharLMError(f"{path} is a directory, not a text file")
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
        raise CharLMError(not_regular(path))
    return st


Opener = Callable[[], BinaryIO]
# what reading a file or a decompressing stream can raise, besides OSError
READ_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile, RuntimeError)


def opener(path: str, open_fn: Callable[..., BinaryIO] = open) -> Opener:
    """Opens `path` for reading (with `open_fn`: gzip.open, ...), a failure as a CharLMError."""

    def open_file() -> BinaryIO:
        try:
            return open_fn(path, "rb")
        except OSError as e:
            raise CharLMError(f"cannot read {path}: {e.strerror or e}") from None

    return open_file


@dataclass(frozen=True)
class Document:
    """One text of the input: a file, a decompressed file or a member of an archive."""

    name: str  # as messages show it: the path given, or archive.zip/member
    open: Opener
    path: str  # the file on disk, absolute
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
        where = f"{self.path}/{self.member}" if self.member else self.path
        return [where, self.size, self.mtime_ns, self.ctime_ns, self.inode]

    def changed(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        return stamp(st) != (self.size, self.mtime_ns, self.ctime_ns, self.inode)


def stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    """(size, mtime, ctime, inode): what a document's identity records of its file."""
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def file_document(path: str, name: str | None = None) -> Document:
    """A plain file as a document (an error if it is missing, a folder or a special file)."""
    size, mtime, ctime, inode = stamp(_check_file(path))
    return Document(name or path, opener(path), os.path.abspath(path), size, mtime,
                    ctime_ns=ctime, inode=inode)  # fmt: skip


def _read(f: BinaryIO, name: str, size: int) -> bytes:
    try:
        return f.read(size)
    except READ_ERRORS as e:
        reason = getattr(e, "strerror", None) or e
        raise CharLMError(f"cannot read {name}: {reason}") from None


def _binary(name: str) -> str:
    return f"{name} looks like a binary file (it contains NUL bytes), not text (see --byte-level)"


def _decoded(
    open_file: Opener, name: str, encoding: str, errors: str, chunk_size: int
) -> Iterator[bytes | str]:
    """The file's text piece by piece: ASCII chunks as their bytes, others decoded to str.

    The incremental decoder carries a multi-byte character cut by a chunk boundary over to the
    next chunk; a decoding error reports its byte offset in the whole file.
    """
    try:
        codecs.lookup_error(errors)
        decoder = codecs.getincrementaldecoder(encoding)(errors)
        ascii_fast = codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        raise CharLMError(f"unknown encoding or error handler: {encoding!r} / {errors!r}") from None
    offset = 0  # file offset of the start of `raw`
    with open_file() as f:
        while True:
            raw = _read(f, name, chunk_size)
            pending = decoder.getstate()[0]  # bytes of a character cut by the last boundary
            if ascii_fast and raw and not pending and raw.isascii():
                if b"\x00" in raw:
                    raise CharLMError(_binary(name))
                yield raw
            else:
                try:
                    text = decoder.decode(raw, final=not raw)
                except UnicodeDecodeError as e:  # e.object is pending + raw
                    raise CharLMError(
                        f"{name} is not valid {encoding}: bad byte 0x{e.object[e.start]:02x} at "
                        f"byte offset {offset - len(pending) + e.start} (use --encoding to name "
                        f"the right encoding, or --errors replace)"
                    ) from None
                if "\x00" in text:
                    raise CharLMError(_binary(name))
                if text:
                    yield text
            if not raw:
                return
            offset += len(raw)


def _raw(open_file: Opener, name: str, chunk_size: int) -> Iterator[bytes]:
    """The file's bytes chunk by chunk (byte-level mode: nothing is decoded)."""
    with open_file() as f:
        while raw := _read(f, name, chunk_size):
            yield raw


def _joined(
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
            yield from _raw(doc.open, doc.name, chunk_size)
        else:
            yield from _decoded(doc.open, doc.name, encoding, errors, chunk_size)


def _codepoints_of(piece: bytes | str) -> np.ndarray:
    return np.frombuffer(piece, dtype=np.uint8) if isinstance(piece, bytes) else _codepoints(piece)


def read_text(path: str | os.PathLike[str], encoding: str = "utf-8", errors: str = "strict") -> str:
    """Read a whole text file, turning every way it can be unreadable into a CharLMError."""
    path = os.fspath(path)
    _check_file(path)
    pieces = _decoded(opener(path), path, encoding, errors, CHUNK_BYTES)
    text = "".join(p.decode("ascii") if isinstance(p, bytes) else p for p in pieces)
    if not text:
        raise CharLMError(f"{path} is empty")
    return text


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds ids 0 .. vocab_size - 1."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise AssertionError("more characters than Unicode has")


def _scan(pieces: Iterator[bytes | str], name: str, byte_level: bool = False) -> tuple[Vocab, int]:
    """Pass 1: find every code point that occurs -> (vocabulary, number of characters).

    Only code points not seen before go through np.bincount (which widens them to 8 bytes
    each); after the first 64 KB that is usually none, so a chunk costs one filter
    (bytes.translate for ASCII, a table look-up else). Byte-level mode only counts.
    """
    seen = np.zeros(UNICODE, dtype=bool)
    n = 0
    for k, piece in enumerate(pieces):
        whole = piece if isinstance(piece, bytes) else _codepoints(piece)
        n += len(whole)
        if byte_level:
            continue
        # the first chunk's head first: the whole chunk then leaves little that is new
        for part in (whole[:FIRST_LOOK], whole) if k == 0 else (whole,):
            if isinstance(part, bytes):
                known = np.flatnonzero(seen[:128]).astype(np.uint8).tobytes()
                fresh = np.frombuffer(part.translate(None, known), dtype=np.uint8)
            else:
                fresh = part[~seen[part]]
            if len(fresh):
                top = 256 if fresh.dtype == np.uint8 else UNICODE
                seen[:top] |= np.bincount(fresh, minlength=top) > 0
    if n == 0:
        raise CharLMError(f"{name} is empty")
    if byte_level:
        return Vocab.of_bytes(), n
    return Vocab([chr(c) for c in np.flatnonzero(seen)]), n


def _ids(pieces: Iterator[bytes | str], vocab: Vocab, dtype: np.dtype) -> Iterator[np.ndarray]:
    """Pass 2: the ids of each piece, through a code point -> id lookup table."""
    if vocab.is_bytes:  # id = byte
        yield from (np.frombuffer(piece, dtype=np.uint8) for piece in pieces)
        return
    lut = np.zeros(UNICODE, dtype=dtype)
    lut[vocab.codepoints] = np.arange(len(vocab), dtype=dtype)
    ascii_table = lut[:256].tobytes() if dtype == np.uint8 else None
    for piece in pieces:
        if ascii_table is not None and isinstance(piece, bytes):
            yield np.frombuffer(piece.translate(ascii_table), dtype=np.uint8)  # C speed
        else:
            yield lut[_codepoints_of(piece)]


def _encode(
    pieces: Iterator[bytes | str],
    vocab: Vocab,
    n: int,
    name: str,
    write: Callable[[np.ndarray], None] | None = None,
) -> np.ndarray | None:
    """Pass 2 into memory, or handed to `write` in order; `n` from pass 1 must still hold."""
    dtype = id_dtype(len(vocab))
    ids = None if write is not None else np.empty(n, dtype=dtype)
    at = 0
    for part in _ids(pieces, vocab, dtype):
        if ids is None:
            write(part)
        elif at + len(part) <= n:
            ids[at : at + len(part)] = part
        at += len(part)
    if at != n:
        raise CharLMError(f"{name} changed while it was being read; try again")
    return ids


def recode(ids: np.ndarray, source: Vocab, target: Vocab, skip_unknown: bool) -> np.ndarray:
    """Ids of one vocabulary as ids of another (a corpus read for a trained model's vocabulary).

    Characters the target lacks are an error naming them, or dropped if asked.
    """
    if source == target:
        return ids  # a memmap stays one
    table = target._lookup("".join(source.chars))  # source id -> target id, -1 where absent
    mapped = table[ids]
    missing = mapped < 0
    if missing.any():
        if not skip_unknown:
            unknown = [source.chars[i] for i in np.unique(np.asarray(ids)[missing])]
            raise CharLMError(
                f"{len(unknown)} character(s) not in the model's vocabulary: {_show(unknown)}"
            )
        mapped = mapped[~missing]
    return mapped


def _cache_paths(folder: Path, key: str, record: dict) -> tuple[Path, Path, str]:
    """(json, bin) paths: named by what was asked for (`key`), then by the inputs as they are."""
    # bytes and characters of the same inputs are two entries, not versions of one
    asked = f"{key}\0{record['byte_level']}"
    by_key = hashlib.sha256(asked.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    version = json.dumps(record, sort_keys=True, ensure_ascii=True)
    by_version = hashlib.sha256(version.encode()).hexdigest()[:16]
    stem = folder / f"{by_key}-{by_version}"
    return stem.with_suffix(".json"), stem.with_suffix(".bin"), by_key


def _open_cached(meta_path: Path, bin_path: Path, expect: dict) -> Corpus | None:
    """The cached corpus if its record matches the inputs as they are now, else None."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if any(meta.get(k) != v for k, v in expect.items()):
            return None
        dtype, length = np.dtype(meta["dtype"]), int(meta["length"])
        if bin_path.stat().st_size != length * dtype.itemsize:
            return None
        ids = np.memmap(bin_path, dtype=dtype, mode="r", shape=(length,))
        return Corpus(ids, Vocab(meta["vocab"]), expect["source"], expect["inputs"])
    except (OSError, ValueError, KeyError, TypeError, CharLMError):
        return None


def _build_cache(
    folder: Path, key: str, record: dict, pieces: Iterator[bytes | str], vocab: Vocab, n: int
) -> Corpus:
    """Encode into the cache folder (ids file first, then its JSON record) and open it."""
    meta_path, bin_path, by_key = _cache_paths(folder, key, record)
    folder.mkdir(parents=True, exist_ok=True)
    name = record["source"]
    atomic_write(bin_path, lambda f: _encode(pieces, vocab, n, name, f.write), durable=False)
    dtype = id_dtype(len(vocab))
    meta = {**record, "dtype": dtype.str, "length": n, "vocab": vocab.chars}
    write_text(meta_path, json.dumps(meta))
    for old in folder.glob(f"{by_key}-*"):  # earlier versions of the same inputs
        if old not in (meta_path, bin_path):
            old.unlink(missing_ok=True)
    corpus = _open_cached(meta_path, bin_path, record)
    assert corpus is not None
    return corpus


def load_documents(
    docs: Sequence[Document],
    source: str,
    key: str,
    *,
    separator: str = "",
    encoding: str = "utf-8",
    errors: str = "strict",
    byte_level: bool = False,
    chunk_size: int = CHUNK_BYTES,
    in_memory_below: int = IN_MEMORY_BELOW,
    cache: str | os.PathLike[str] | None = None,
) -> Corpus:
    """Encode documents joined by `separator`, in two chunked passes, into memory or the cache.

    `source` names the inputs in messages and records; `key` names them in the cache, whose
    entry also records every document's identity, so an added, removed or changed file is a
    new version (the old one is deleted). Inputs of `in_memory_below` bytes or more (on disk,
    or once decompressed) go to the cache and come back as a read-only np.memmap.
    """
    record = {
        "format": CACHE_FORMAT,
        "source": source,
        "inputs": [d.identity for d in docs],
        "encoding": encoding,
        "errors": errors,
        "separator": separator,
        "byte_level": byte_level,
    }
    folder = Path(cache) if cache is not None else cache_dir("encoded")
    meta_path, bin_path, _ = _cache_paths(folder, key, record)
    on_disk = sum(d.size for d in docs)
    if on_disk >= in_memory_below or any(d.packed for d in docs):
        corpus = _open_cached(meta_path, bin_path, record)
        if corpus is not None:
            return corpus

    def pieces() -> Iterator[bytes | str]:
        return _joined(docs, separator, encoding, errors, chunk_size, byte_level)

    vocab, n = _scan(pieces(), source, byte_level)
    corpus = None
    if max(on_disk, n) >= in_memory_below:
        try:
            corpus = _build_cache(folder, key, record, pieces(), vocab, n)
        except (OSError, WriteFailed) as e:
            warnings.warn(
                f"cannot write the encoded cache in {folder} ({getattr(e, 'strerror', e)}); "
                f"encoding {source} in memory (set $CHARLM_CACHE to a writable folder)",
                stacklevel=2,
            )
    if corpus is None:
        corpus = Corpus(_encode(pieces(), vocab, n, source), vocab, source, record["inputs"])
    changed = [d.name for d in docs if d.changed()]
    if changed:
        meta_path.unlink(missing_ok=True)
        raise CharLMError(f"{changed[0]} changed while it was being read; try again")
    return corpus


def load_corpus(
    path: str | os.PathLike[str],
    encoding: str = "utf-8",
    errors: str = "strict",
    *,
    chunk_size: int = CHUNK_BYTES,
    in_memory_below: int = IN_MEMORY_BELOW,
    cache: str | os.PathLike[str] | None = None,
    byte_level: bool = False,
) -> Corpus:
    """Read and encode one text file, or a named corpus's file (`charlm corpora`);
    `builtin` names the offline built-in corpus.

    Files of `in_memory_below` bytes or more are encoded once into the cache folder (`cache`,
    else `cache_dir("encoded")`) and opened from there as a read-only np.memmap on later runs.
    """
    if os.fspath(path) == BUILTIN:
        raw = builtin_text().encode("utf-8")
        doc = Document(BUILTIN, lambda: io.BytesIO(raw), BUILTIN, len(raw), 0)
        vocab, n = _scan(_joined([doc], "", "utf-8", "strict", chunk_size, byte_level), BUILTIN)
        pieces = _joined([doc], "", "utf-8", "strict", chunk_size, byte_level)
        ids = _encode(pieces, vocab, n, BUILTIN)
        return Corpus(ids, vocab, "builtin (Python's pydoc help topics)")
    if not os.path.lexists(path):  # a corpus name: its file, found locally or fetched once
        from charlm.corpora import resolve  # here: corpora.py imports this module

        path = resolve(os.fspath(path))
    source = os.path.abspath(path)
    doc = file_document(source, os.fspath(path))
    return load_documents(
        [doc], source, source, encoding=encoding, errors=errors, byte_level=byte_level,
        chunk_size=chunk_size, in_memory_below=in_memory_below, cache=cache,
    )  # fmt: skip
