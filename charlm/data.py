"""Corpus and vocabulary: read UTF-8 text, map characters to integer ids and back.

The vocabulary is the sorted set of Unicode code points of the corpus. Encoding goes through a
numpy lookup table indexed by code point, so no Python loop runs per character.

A corpus file is read in chunks, twice, so memory does not grow with the file:

    pass 1: bytes -> incremental decoder -> code points -> np.bincount   => vocabulary, length
    pass 2: bytes -> incremental decoder -> code points -> lookup table  => ids (uint8/16/32)

A chunk of pure ASCII skips the decoder (its bytes are its code points). Files of
IN_MEMORY_BELOW bytes or more keep their ids in an encoded cache ($CHARLM_CACHE, default
~/.cache/charlm/encoded/), keyed by absolute path, size and mtime, opened as a read-only np.memmap
on the next run; smaller files keep their ids in memory.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from charlm.errors import CharLMError

BUILTIN = "builtin"
CHUNK_BYTES = 16 << 20  # bytes read per chunk
FIRST_LOOK = 1 << 16  # characters of the first chunk scanned on their own
IN_MEMORY_BELOW = 32 << 20  # smaller files are encoded in memory, larger ones cached on disk
CACHE_FORMAT = 1
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

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.chars == other.chars

    def _lookup(self, text: str) -> np.ndarray:
        cps = _codepoints(text)
        ids = np.full(len(cps), -1, dtype=np.int64)
        inside = cps < len(self._lut)
        ids[inside] = self._lut[cps[inside]]
        return ids

    def unknown(self, text: str) -> list[str]:
        """Distinct characters of `text` that are not in the vocabulary, sorted."""
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
        cps = self.codepoints[np.asarray(ids, dtype=np.int64)].astype("<u4")
        return cps.tobytes().decode("utf-32-le", "surrogatepass")


@dataclass
class Corpus:
    """An encoded text: ids (int64, or a smaller unsigned dtype) and the vocabulary."""

    ids: np.ndarray
    vocab: Vocab
    source: str

    def split(self, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
        """(train, val): the last `val_fraction` of the text is validation."""
        n_val = int(len(self.ids) * val_fraction)
        cut = len(self.ids) - n_val
        return self.ids[:cut], self.ids[cut:]


def builtin_text() -> str:
    """Python's own help topics (`pydoc_data.topics`): ~0.5 MB of English prose, always offline."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def _check_file(path: str) -> os.stat_result:
    if not os.path.exists(path):
        raise CharLMError(f"no such file: {path}")
    if os.path.isdir(path):
        raise CharLMError(f"{path} is a directory, not a text file")
    return os.stat(path)


Opener = Callable[[], BinaryIO]


def _opener(path: str) -> Opener:
    def open_file() -> BinaryIO:
        try:
            return open(path, "rb")
        except OSError as e:
            raise CharLMError(f"cannot read {path}: {e.strerror}") from None

    return open_file


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
            try:
                raw = f.read(chunk_size)
            except OSError as e:
                raise CharLMError(f"cannot read {name}: {e.strerror}") from None
            pending = decoder.getstate()[0]  # bytes of a character cut by the last boundary
            if ascii_fast and raw and not pending and raw.isascii():
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
                if text:
                    yield text
            if not raw:
                return
            offset += len(raw)


def _codepoints_of(piece: bytes | str) -> np.ndarray:
    return np.frombuffer(piece, dtype=np.uint8) if isinstance(piece, bytes) else _codepoints(piece)


def read_text(path: str | os.PathLike[str], encoding: str = "utf-8", errors: str = "strict") -> str:
    """Read a whole text file, turning every way it can be unreadable into a CharLMError."""
    path = os.fspath(path)
    _check_file(path)
    pieces = _decoded(_opener(path), path, encoding, errors, CHUNK_BYTES)
    text = "".join(p.decode("ascii") if isinstance(p, bytes) else p for p in pieces)
    if not text:
        raise CharLMError(f"{path} is empty")
    if "\x00" in text:
        raise CharLMError(f"{path} looks like a binary file (it contains NUL bytes), not text")
    return text


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds ids 0 .. vocab_size - 1."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise AssertionError("more characters than Unicode has")


def _scan(pieces: Iterator[bytes | str], name: str) -> tuple[Vocab, int]:
    """Pass 1: find every code point that occurs -> (vocabulary, number of characters).

    Only code points not seen before go through np.bincount (which widens them to 8 bytes
    each); after the first 64 KB that is usually none, so a chunk costs one filter
    (bytes.translate for ASCII, a table look-up else).
    """
    seen = np.zeros(UNICODE, dtype=bool)
    n = 0
    for k, piece in enumerate(pieces):
        whole = piece if isinstance(piece, bytes) else _codepoints(piece)
        n += len(whole)
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
    if seen[0]:
        raise CharLMError(f"{name} looks like a binary file (it contains NUL bytes), not text")
    return Vocab([chr(c) for c in np.flatnonzero(seen)]), n


def _ids(pieces: Iterator[bytes | str], vocab: Vocab, dtype: np.dtype) -> Iterator[np.ndarray]:
    """Pass 2: the ids of each piece, through a code point -> id lookup table."""
    lut = np.zeros(UNICODE, dtype=dtype)
    lut[vocab.codepoints] = np.arange(len(vocab), dtype=dtype)
    ascii_table = lut[:256].tobytes() if dtype == np.uint8 else None
    for piece in pieces:
        if ascii_table is not None and isinstance(piece, bytes):
            yield np.frombuffer(piece.translate(ascii_table), dtype=np.uint8)  # C speed
        else:
            yield lut[_codepoints_of(piece)]


def encode_stream(
    open_file: Opener,
    name: str,
    encoding: str = "utf-8",
    errors: str = "strict",
    chunk_size: int = CHUNK_BYTES,
    write: Callable[[np.ndarray], None] | None = None,
) -> tuple[np.ndarray | None, Vocab]:
    """Encode a byte stream in two chunked passes: ids in memory, or handed to `write` in order.

    Memory stays at a few chunks whatever the length of the text.
    """
    vocab, n = _scan(_decoded(open_file, name, encoding, errors, chunk_size), name)
    dtype = id_dtype(len(vocab))
    ids = None if write is not None else np.empty(n, dtype=dtype)
    at = 0
    for part in _ids(_decoded(open_file, name, encoding, errors, chunk_size), vocab, dtype):
        if ids is None:
            write(part)
        else:
            ids[at : at + len(part)] = part
        at += len(part)
    if at != n:
        raise CharLMError(f"{name} changed while it was being read; try again")
    return ids, vocab


def cache_dir() -> Path:
    """$CHARLM_CACHE, else ~/.cache/charlm/encoded."""
    env = os.environ.get("CHARLM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "charlm" / "encoded"


def _cache_paths(folder: Path, source: str, st: os.stat_result, encoding: str, errors: str):
    """(json, bin) paths: named by the file's path, then by its size, mtime and decoding."""
    by_path = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    version = f"{st.st_size}\0{st.st_mtime_ns}\0{encoding}\0{errors}\0{CACHE_FORMAT}"
    by_version = hashlib.sha256(version.encode()).hexdigest()[:16]
    stem = folder / f"{by_path}-{by_version}"
    return stem.with_suffix(".json"), stem.with_suffix(".bin"), by_path


def _meta(source: str, st: os.stat_result, encoding: str, errors: str) -> dict:
    return {
        "format": CACHE_FORMAT,
        "source": source,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "encoding": encoding,
        "errors": errors,
    }


def _open_cached(meta_path: Path, bin_path: Path, expect: dict) -> Corpus | None:
    """The cached corpus if its record matches the file as it is now, else None."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if any(meta.get(k) != v for k, v in expect.items()):
            return None
        dtype, length = np.dtype(meta["dtype"]), int(meta["length"])
        if bin_path.stat().st_size != length * dtype.itemsize:
            return None
        ids = np.memmap(bin_path, dtype=dtype, mode="r", shape=(length,))
        return Corpus(ids, Vocab(meta["vocab"]), expect["source"])
    except (OSError, ValueError, KeyError, TypeError, CharLMError):
        return None


def _atomic_write(folder: Path, final: Path, fill: Callable[[BinaryIO], None]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _build_cache(
    folder: Path,
    name: str,
    source: str,
    st: os.stat_result,
    encoding: str,
    errors: str,
    chunk_size: int,
) -> Corpus:
    """Encode into the cache folder (ids file first, then its JSON record) and open it."""
    meta_path, bin_path, by_path = _cache_paths(folder, source, st, encoding, errors)
    folder.mkdir(parents=True, exist_ok=True)
    found: dict = {}

    def fill(f: BinaryIO) -> None:
        _, found["vocab"] = encode_stream(
            _opener(source), name, encoding, errors, chunk_size, write=lambda a: a.tofile(f)
        )

    _atomic_write(folder, bin_path, fill)
    vocab: Vocab = found["vocab"]
    dtype = id_dtype(len(vocab))
    meta = {
        **_meta(source, st, encoding, errors),
        "dtype": dtype.str,
        "length": bin_path.stat().st_size // dtype.itemsize,
        "vocab": vocab.chars,
    }
    _atomic_write(folder, meta_path, lambda f: f.write(json.dumps(meta).encode("utf-8")))
    for old in folder.glob(f"{by_path}-*"):  # earlier versions of the same file
        if old not in (meta_path, bin_path):
            old.unlink(missing_ok=True)
    corpus = _open_cached(meta_path, bin_path, _meta(source, st, encoding, errors))
    assert corpus is not None
    return corpus


def load_corpus(
    path: str | os.PathLike[str],
    encoding: str = "utf-8",
    errors: str = "strict",
    *,
    chunk_size: int = CHUNK_BYTES,
    in_memory_below: int = IN_MEMORY_BELOW,
    cache: str | os.PathLike[str] | None = None,
) -> Corpus:
    """Read and encode a corpus; `builtin` names the offline built-in corpus.

    Files of `in_memory_below` bytes or more are encoded once into the cache folder (`cache`,
    else `cache_dir()`) and opened from there as a read-only np.memmap on later runs.
    """
    if os.fspath(path) == BUILTIN:
        raw = builtin_text().encode("utf-8")
        ids, vocab = encode_stream(lambda: io.BytesIO(raw), BUILTIN, "utf-8", "strict", chunk_size)
        return Corpus(ids, vocab, "builtin (Python's pydoc help topics)")
    source = os.path.abspath(path)
    st = _check_file(source)
    if st.st_size < in_memory_below:
        ids, vocab = encode_stream(_opener(source), os.fspath(path), encoding, errors, chunk_size)
        return Corpus(ids, vocab, source)
    folder = Path(cache) if cache is not None else cache_dir()
    meta_path, bin_path, _ = _cache_paths(folder, source, st, encoding, errors)
    corpus = _open_cached(meta_path, bin_path, _meta(source, st, encoding, errors))
    if corpus is not None:
        return corpus
    try:
        corpus = _build_cache(folder, os.fspath(path), source, st, encoding, errors, chunk_size)
    except OSError as e:
        warnings.warn(
            f"cannot write the encoded cache in {folder} ({e.strerror}); encoding {path} in "
            f"memory (set $CHARLM_CACHE to a writable folder)",
            stacklevel=2,
        )
        ids, vocab = encode_stream(_opener(source), os.fspath(path), encoding, errors, chunk_size)
        corpus = Corpus(ids, vocab, source)
    now = os.stat(source)
    if (now.st_size, now.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
        meta_path.unlink(missing_ok=True)
        raise CharLMError(f"{path} changed while it was being read; try again")
    return corpus
