"""Corpus reading and the vocabulary."""

import numpy as np
import pytest

from charlm.builtin import builtin_text
from charlm.corpus import Corpus
from charlm.errors import CharLMError
from charlm.inputs import load_corpus
from charlm.vocab import Vocab


def read_text(path, errors="strict"):
    """The whole text, as load_corpus (and so `charlm train`) reads it."""
    corpus = load_corpus(path, errors=errors)
    return corpus.vocab.decode(corpus.ids)


def test_vocab_is_sorted_set_of_code_points(tmp_path):
    (tmp_path / "t.txt").write_text("banana 🍌 香蕉", encoding="utf-8")
    v = load_corpus(tmp_path / "t.txt").vocab
    assert v.chars == sorted(set("banana 🍌 香蕉"))
    assert len(v) == len(set("banana 🍌 香蕉"))
    with pytest.raises(CharLMError, match="sorted, distinct"):
        Vocab(list("ba"))


def test_encode_decode_round_trip_and_ids():
    text = "Hello, 世界!\r\n😀 e\u0301"
    v = Vocab(sorted(set(text)))
    ids = v.encode(text)
    assert ids.dtype.kind == "i" and len(ids) == len(text)
    assert [v.chars[i] for i in ids] == list(text)
    assert v.decode(ids) == text


def test_chinese_with_thousands_of_characters():
    rng = np.random.default_rng(0)
    text = "".join(chr(c) for c in rng.integers(0x4E00, 0x4E00 + 3000, 50_000))
    v = Vocab(sorted(set(text)))
    assert len(v) > 2500
    assert v.decode(v.encode(text)) == text


def test_unknown_characters_are_named():
    v = Vocab(sorted(set("abc")))
    with pytest.raises(CharLMError, match=r"'x'.*'z'"):
        v.encode("axbz")
    assert v.unknown("axbzz") == ["x", "z"]


def test_skip_unknown_drops_them():
    v = Vocab(sorted(set("abc")))
    assert v.decode(v.encode("a😀bxc", skip_unknown=True)) == "abc"


def test_split_keeps_the_last_fraction_for_validation():
    v = Vocab(sorted(set("abcdefghij")))
    c = Corpus(v.encode("abcdefghij"), v, "test")
    train, val = c.split(0.2)
    assert v.decode(train) == "abcdefgh" and v.decode(val) == "ij"
    train, val = c.split(0.0)
    assert len(train) == 10 and len(val) == 0


def test_builtin_corpus_is_offline_english_prose():
    text = builtin_text()
    assert len(text) > 300_000
    corpus = load_corpus("builtin")
    assert len(corpus.ids) == len(text) and "e" in corpus.vocab.chars


def test_invalid_utf8_reports_byte_offset(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"hello world\n" * 10 + b"\xff\xfe oops")
    with pytest.raises(CharLMError, match="byte offset 120"):
        read_text(path)
    assert "\ufffd" in read_text(path, errors="replace")


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"\x00\x01\x02binary\x00", "binary")],
)
def test_empty_and_binary_files(tmp_path, content, message):
    path = tmp_path / "f.bin"
    path.write_bytes(content)
    with pytest.raises(CharLMError, match=message):
        read_text(path)


def test_missing_file_and_empty_directory(tmp_path):
    with pytest.raises(CharLMError, match="no such file"):
        read_text(tmp_path / "nope.txt")
    with pytest.raises(CharLMError, match=r"no text to read in .* \(nothing skipped\)"):
        read_text(tmp_path)  # a folder is read like `charlm train` reads it: here, nothing
