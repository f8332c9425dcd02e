"""The encoded corpus: documents read in two chunked passes into ids, kept in memory or in an
encoded cache on disk, so memory does not grow with the input.

    pass 1: pieces -> code points -> np.bincount   => vocabulary, length
    pass 2: pieces -> code points -> lookup table  => ids (uint8/16/32)

Inputs of IN_MEMORY_BELOW bytes or more keep their ids in an encoded cache
(storage.cache_dir("encoded")), keyed by what was asked for and by each document's size, mtime,
ctime and inode, opened as a read-only np.memmap on the next run; smaller inputs keep their ids
in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from charlm.documents import CHUNK_BYTES, Document, pieces
from charlm.errors import CharLMError
from charlm.schema import Bool, Either, Int, Record, Seq, Str, Tup, check, parse_json
from charlm.storage import WriteFailed, atomic_write, cache_dir, read_text, write_text
from charlm.vocab import UNICODE, Vocab, codepoints, id_dtype

FIRST_LOOK = 1 << 16  # characters of the first chunk scanned on their own
IN_MEMORY_BELOW = 32 << 20  # smaller inputs are encoded in memory, larger ones cached on disk
CACHE_FORMAT = 2
CACHE_RECORD_BYTES = 64 << 20  # a vocabulary of every code point, as JSON, is ~13 MB
# what an entry of the cache records of each document: Document.identity (three items before
# ctime and inode were recorded)
IDENTITY = Either(
    Tup(Str(), Int(0), Int(), Int(), Int(0), tuple_=False), Tup(Str(), Int(0), Int(), tuple_=False)
)
ID_DTYPES = tuple(np.dtype(t).str for t in (np.uint8, np.uint16, np.uint32))
CACHE_RECORD = Record(
    {
        "format": Int(), "source": Str(), "inputs": Seq(IDENTITY), "encoding": Str(),
        "errors": Str(), "separator": Str(), "byte_level": Bool(),
        "dtype": Str(ID_DTYPES), "length": Int(1, 1 << 48),
        "vocab": Seq(Str(most=1, nul=True), least=1, most=UNICODE),
    }
)  # fmt: skip


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

    def line(self) -> str:
        """What a run reads, said at its start: the corpus, its size on disk, its characters
        (bytes, byte-level) and how many of them are distinct."""
        on_disk = sum(entry[1] for entry in self.inputs)  # identities: (name, size, ...)
        size = f", {on_disk / 1e6:,.1f} MB" if on_disk >= 1e5 else f", {on_disk / 1e3:.1f} KB"
        count = f"{len(self.ids):,} " + (
            "bytes, byte-level"
            if self.vocab.is_bytes
            else f"characters, {len(self.vocab)} distinct"
        )
        return f"corpus: {self.source}{size if on_disk else ''}, {count}"

    def split(self, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
        """(train, val): the declared parts if any, else the last `val_fraction` is validation."""
        if self.declared is not None:
            train_end, val_end = self.declared
            return self.ids[:train_end], self.ids[train_end:val_end]
        n_val = int(len(self.ids) * val_fraction)
        cut = len(self.ids) - n_val
        return self.ids[:cut], self.ids[cut:]


def _scan(parts: Iterator[bytes | str], name: str, byte_level: bool = False) -> tuple[Vocab, int]:
    """Pass 1: find every code point that occurs -> (vocabulary, number of characters).

    Only code points not seen before go through np.bincount (which widens them to 8 bytes
    each); after the first 64 KB that is usually none, so a chunk costs one filter
    (bytes.translate for ASCII, a table look-up else). Byte-level mode only counts.
    """
    seen = np.zeros(UNICODE, dtype=bool)
    n = 0
    for k, piece in enumerate(parts):
        whole = piece if isinstance(piece, bytes) else codepoints(piece)
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


def _ids(parts: Iterator[bytes | str], vocab: Vocab, dtype: np.dtype) -> Iterator[np.ndarray]:
    """Pass 2: the ids of each piece, through a code point -> id lookup table."""
    if vocab.is_bytes:  # id = byte
        yield from (np.frombuffer(piece, dtype=np.uint8) for piece in parts)
        return
    lut = np.zeros(UNICODE, dtype=dtype)
    lut[vocab.codepoints] = np.arange(len(vocab), dtype=dtype)
    ascii_table = lut[:256].tobytes() if dtype == np.uint8 else None
    for piece in parts:
        if ascii_table is not None and isinstance(piece, bytes):
            yield np.frombuffer(piece.translate(ascii_table), dtype=np.uint8)  # C speed
        elif isinstance(piece, bytes):
            yield lut[np.frombuffer(piece, dtype=np.uint8)]
        else:
            yield lut[codepoints(piece)]


def _encode(
    parts: Iterator[bytes | str],
    vocab: Vocab,
    n: int,
    name: str,
    write: Callable[[np.ndarray], None] | None = None,
) -> np.ndarray | None:
    """Pass 2 into memory, or handed to `write` in order; `n` from pass 1 must still hold."""
    dtype = id_dtype(len(vocab))
    ids = None if write is not None else np.empty(n, dtype=dtype)
    at = 0
    for part in _ids(parts, vocab, dtype):
        if ids is None:
            write(part)
        elif at + len(part) <= n:
            ids[at : at + len(part)] = part
        at += len(part)
    if at != n:
        raise CharLMError(f"{name} changed while it was being read; try again")
    return ids


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
    """The cached corpus if its record is one (CACHE_RECORD), matches the inputs as they are
    now, and its ids fit its vocabulary; else None (it is encoded again)."""
    try:
        text = read_text(meta_path, "encoded cache record", CACHE_RECORD_BYTES)
        meta = check(CACHE_RECORD, parse_json(text, str(meta_path)), str(meta_path))
    except CharLMError:
        return None
    if any(meta.get(k) != v for k, v in expect.items()):
        return None
    try:
        vocab = Vocab(meta["vocab"])
        dtype, length = np.dtype(meta["dtype"]), meta["length"]
        if dtype != id_dtype(len(vocab)) or bin_path.stat().st_size != length * dtype.itemsize:
            return None
        ids = np.memmap(bin_path, dtype=dtype, mode="r", shape=(length,))
    except (OSError, ValueError, CharLMError):
        return None
    if len(vocab) <= np.iinfo(dtype).max and _largest(ids) >= len(vocab):
        return None  # an id past the vocabulary: a damaged file
    return Corpus(ids, vocab, expect["source"], expect["inputs"])


def _largest(ids: np.ndarray) -> int:
    """The largest id, read a chunk at a time (a memmap is never loaded whole)."""
    step = CHUNK_BYTES // ids.itemsize
    return max(int(ids[k : k + step].max()) for k in range(0, len(ids), step))


def _build_cache(
    folder: Path, key: str, record: dict, parts: Iterator[bytes | str], vocab: Vocab, n: int
) -> Corpus:
    """Encode into the cache folder (ids file first, then its JSON record) and open it."""
    meta_path, bin_path, by_key = _cache_paths(folder, key, record)
    folder.mkdir(parents=True, exist_ok=True)
    name = record["source"]
    atomic_write(bin_path, lambda f: _encode(parts, vocab, n, name, f.write), durable=False)
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
        "inputs": [d.identity for d in docs if d.path],  # text held in memory has no file
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

    def text() -> Iterator[bytes | str]:
        return pieces(docs, separator, encoding, errors, chunk_size, byte_level)

    vocab, n = _scan(text(), source, byte_level)
    corpus = None
    if max(on_disk, n) >= in_memory_below:
        try:
            corpus = _build_cache(folder, key, record, text(), vocab, n)
        except (OSError, WriteFailed) as e:
            warnings.warn(
                f"cannot write the encoded cache in {folder} ({getattr(e, 'strerror', e)}); "
                f"encoding {source} in memory (set $CHARLM_CACHE to a writable folder)",
                stacklevel=2,
            )
    if corpus is None:
        corpus = Corpus(_encode(text(), vocab, n, source), vocab, source, record["inputs"])
    changed = [d.name for d in docs if d.changed()]
    if changed:
        meta_path.unlink(missing_ok=True)
        raise CharLMError(f"{changed[0]} changed while it was being read; try again")
    return corpus
