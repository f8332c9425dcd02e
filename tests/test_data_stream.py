"""Chunked corpus encoding, the encoded cache on disk, and sampling from a memmap."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from charlm import corpus as encoded
from charlm.errors import CharLMError
from charlm.inputs import load_corpus
from charlm.samplers import ConsecutiveSampler, RandomSampler
from charlm.vocab import Vocab, id_dtype

# 1-, 2-, 3- and 4-byte UTF-8 characters, so that chunk boundaries cut through each kind
MIXED = "ab é ü 日本語 𝄞 😀 ç\r\nend. " * 23


def whole_text_ids(text: str) -> tuple[np.ndarray, Vocab]:
    vocab = Vocab(sorted(set(text)))
    return vocab.encode(text), vocab


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 7, 64, 1 << 20])
def test_chunked_equals_whole_text(tmp_path: Path, chunk_size: int) -> None:
    path = tmp_path / "mixed.txt"
    path.write_bytes(MIXED.encode("utf-8"))
    corpus = load_corpus(path, chunk_size=chunk_size)
    ids, vocab = whole_text_ids(MIXED)
    assert corpus.vocab == vocab
    np.testing.assert_array_equal(corpus.ids, ids)
    assert vocab.decode(corpus.ids) == MIXED


@pytest.mark.parametrize("late", ["Q", "語"])
def test_a_character_first_seen_after_the_head_of_the_first_chunk(tmp_path: Path, late) -> None:
    """The scan looks at the first 64 KB alone first; what occurs only later still counts."""
    text = "ab\n" * 30_000 + late + "ab\n"
    path = tmp_path / "late.txt"
    path.write_bytes(text.encode("utf-8"))
    corpus = load_corpus(path)
    assert corpus.vocab.chars == sorted(set(text))
    assert corpus.vocab.decode(corpus.ids) == text


def test_ascii_chunks_next_to_multibyte_ones(tmp_path: Path) -> None:
    """Pure-ASCII chunks take the fast path; a character cut just before one still decodes."""
    text = "x" * 9 + "é" + "y" * 20 + "日" + "z" * 30
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode("utf-8"))
    for chunk_size in (4, 10, 11, 16):
        corpus = load_corpus(path, chunk_size=chunk_size)
        assert corpus.vocab.decode(corpus.ids) == text


@pytest.mark.parametrize(
    ("size", "dtype"), [(1, np.uint8), (256, np.uint8), (257, np.uint16), (70000, np.uint32)]
)
def test_dtype_is_the_smallest_that_fits(tmp_path: Path, size: int, dtype: type) -> None:
    assert id_dtype(size) == np.dtype(dtype)
    if size > 1000:
        return
    chars = [chr(c) for c in range(0x100, 0x100 + size)]
    path = tmp_path / "v.txt"
    path.write_text("".join(chars) * 2, encoding="utf-8")
    corpus = load_corpus(path, chunk_size=7)
    assert corpus.ids.dtype == np.dtype(dtype)
    assert len(corpus.vocab) == size
    assert corpus.vocab.decode(corpus.ids) == "".join(chars) * 2


def test_invalid_utf8_offset_in_a_later_chunk(tmp_path: Path) -> None:
    good = MIXED.encode("utf-8")
    path = tmp_path / "bad.txt"
    path.write_bytes(good + b"\xff" + good)
    for chunk_size in (3, 100, 1 << 20):
        with pytest.raises(CharLMError, match=f"bad byte 0xff at byte offset {len(good)} "):
            load_corpus(path, chunk_size=chunk_size)


def test_truncated_character_at_a_chunk_boundary_and_at_the_end(tmp_path: Path) -> None:
    e = "é".encode()  # 2 bytes
    path = tmp_path / "cut.txt"
    path.write_bytes(b"abc" + e[:1] + b"defg")  # lead byte, then ASCII
    with pytest.raises(CharLMError, match="bad byte 0xc3 at byte offset 3 "):
        load_corpus(path, chunk_size=4)
    path.write_bytes(b"abcdef" + e[:1])  # the file ends inside a character
    with pytest.raises(CharLMError, match="bad byte 0xc3 at byte offset 6 "):
        load_corpus(path, chunk_size=4)


def test_replace_nul_and_empty(tmp_path: Path) -> None:
    path = tmp_path / "r.txt"
    path.write_bytes(b"ab\xffcd" * 5)
    corpus = load_corpus(path, errors="replace", chunk_size=3)
    assert corpus.vocab.decode(corpus.ids) == "ab\ufffdcd" * 5
    path.write_bytes(b"text " * 50 + b"\x00\x01\x02")
    with pytest.raises(CharLMError, match="binary file"):
        load_corpus(path, chunk_size=8)
    path.write_bytes(b"")
    with pytest.raises(CharLMError, match="is empty"):
        load_corpus(path)
    with pytest.raises(CharLMError, match="unknown encoding"):
        load_corpus(tmp_path / "r.txt", encoding="no-such-codec")


def test_other_encodings_stream_too(tmp_path: Path) -> None:
    path = tmp_path / "u16.txt"
    path.write_bytes(MIXED.encode("utf-16"))
    corpus = load_corpus(path, encoding="utf-16", chunk_size=5)
    assert corpus.vocab.decode(corpus.ids) == MIXED


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The encoded-corpus cache: $CHARLM_CACHE/encoded."""
    monkeypatch.setenv("CHARLM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "encoded"


def test_cache_is_written_and_reused(tmp_path: Path, cache: Path, monkeypatch) -> None:
    path = tmp_path / "big.txt"
    path.write_text(MIXED * 4, encoding="utf-8")
    first = load_corpus(path, in_memory_below=0, chunk_size=64)
    assert isinstance(first.ids, np.memmap)
    (record,) = cache.glob("*.json")
    assert str(path.resolve()) in record.read_text(encoding="utf-8")  # never beside the corpus
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.txt", "cache"]
    (ids_file,) = cache.glob("*.bin")
    assert ids_file.stat().st_size == len(MIXED * 4) * first.ids.itemsize
    written = ids_file.stat().st_mtime_ns

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded again")

    monkeypatch.setattr(encoded, "_scan", no_encoding)
    second = load_corpus(path, in_memory_below=0)
    assert isinstance(second.ids, np.memmap)
    assert second.vocab == first.vocab
    np.testing.assert_array_equal(second.ids, whole_text_ids(MIXED * 4)[0])
    assert ids_file.stat().st_mtime_ns == written
    assert second.source == str(path.resolve())


def test_cache_is_invalidated_when_the_file_changes(tmp_path: Path, cache: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_text("hello world\n" * 10, encoding="utf-8")
    first = load_corpus(path, in_memory_below=0)
    os.utime(path, ns=(1, 1))  # an mtime change alone makes it another version
    path.write_text("other text, with more characters!\n" * 10, encoding="utf-8")
    second = load_corpus(path, in_memory_below=0)
    assert second.vocab != first.vocab
    assert second.vocab.decode(second.ids) == "other text, with more characters!\n" * 10
    assert len(list(cache.glob("*.bin"))) == 1  # the stale version is removed
    # a damaged cache is rebuilt, not trusted
    (ids_file,) = cache.glob("*.bin")
    ids_file.write_bytes(b"\x00")
    third = load_corpus(path, in_memory_below=0)
    assert third.vocab.decode(third.ids) == "other text, with more characters!\n" * 10


def test_small_files_stay_in_memory(tmp_path: Path, cache: Path) -> None:
    path = tmp_path / "small.txt"
    path.write_text("small\n" * 5, encoding="utf-8")
    corpus = load_corpus(path)
    assert not isinstance(corpus.ids, np.memmap) and corpus.ids.dtype == np.uint8
    assert not cache.exists()


def test_unwritable_cache_falls_back_to_memory(tmp_path: Path, monkeypatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("CHARLM_CACHE", str(blocker / "cache"))  # below a file: cannot exist
    path = tmp_path / "t.txt"
    path.write_text("abc\n" * 10, encoding="utf-8")
    with pytest.warns(UserWarning, match="encoded cache"):
        corpus = load_corpus(path, in_memory_below=0)
    assert corpus.vocab.decode(corpus.ids) == "abc\n" * 10


@pytest.mark.parametrize("sampler", [RandomSampler, ConsecutiveSampler])
def test_samplers_read_a_memmap(tmp_path: Path, cache: Path, sampler: type) -> None:
    text = MIXED * 8
    path = tmp_path / "big.txt"
    path.write_text(text, encoding="utf-8")
    corpus = load_corpus(path, in_memory_below=0)
    train, val = corpus.split(0.1)
    assert isinstance(train, np.memmap) and isinstance(val, np.memmap)  # views, not copies
    assert len(train) + len(val) == len(text)
    expected = whole_text_ids(text)[0]
    s = sampler(train, seq_len=16, batch_size=4, seed=0)
    starts = s.starts(0)
    for k, (X, Y) in enumerate(s.batches(0)):
        assert X.dtype.is_signed and X.shape == (16, 4)
        for b in range(4):
            window = expected[starts[k, b] : starts[k, b] + 17]
            np.testing.assert_array_equal(X[:, b].numpy(), window[:-1])
            np.testing.assert_array_equal(Y[:, b].numpy(), window[1:])


def test_the_cache_sees_an_edit_whose_size_and_mtime_were_put_back(tmp_path: Path, cache) -> None:
    """Setting a file's mtime back changes its ctime (and a replaced file has a new inode)."""
    path = tmp_path / "t.txt"
    path.write_text("abcd\n" * 50, encoding="utf-8")
    before = path.stat()
    first = load_corpus(path, in_memory_below=0)
    assert first.vocab.decode(first.ids) == "abcd\n" * 50
    path.write_text("dcba\n" * 50, encoding="utf-8")  # same size, in place
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    again = load_corpus(path, in_memory_below=0)
    assert again.vocab.decode(again.ids) == "dcba\n" * 50
