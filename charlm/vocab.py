"""The vocabulary: the sorted code points of a corpus, mapped to ids 0..V-1 and back.

Encoding goes through a numpy lookup table indexed by code point, so no Python loop runs per
character. A byte-level vocabulary is the 256 byte values: any file can be read, and the
scores are bits per byte, the unit the enwik8 literature reports.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence

import numpy as np

from charlm.errors import CharLMError

UNICODE = 0x110000  # code points 0 .. 0x10FFFF


def _raw_bytes(error: UnicodeError) -> tuple[bytes, int]:
    """How a byte-level model reads text UTF-8 cannot hold: a lone surrogate U+DC80..U+DCFF is
    the byte it stands for (a command-line argument or a line read that was not UTF-8, kept
    by surrogateescape); any other lone surrogate is encoded as is (surrogatepass)."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    char = error.object[error.start]
    if 0xDC80 <= ord(char) <= 0xDCFF:
        return bytes([ord(char) - 0xDC00]), error.start + 1
    return char.encode("utf-8", "surrogatepass"), error.start + 1


codecs.register_error("charlm.bytes", _raw_bytes)


def codepoints(text: str) -> np.ndarray:
    """The code points of `text` as a uint32 array (one per character, no Python loop)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def _show(chars: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(repr(c) for c in chars[:limit])
    return shown + (f" ... ({len(chars)} in all)" if len(chars) > limit else "")


def _not_in_vocabulary(unknown: Sequence[str]) -> CharLMError:
    return CharLMError(
        f"{len(unknown)} character(s) not in the model's vocabulary: {_show(unknown)}"
    )


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
            return np.frombuffer(text.encode("utf-8", "charlm.bytes"), np.uint8).astype(np.int64)
        cps = codepoints(text)
        ids = np.full(len(cps), -1, dtype=np.int64)
        inside = cps < len(self._lut)
        ids[inside] = self._lut[cps[inside]]
        return ids

    def unknown(self, text: str) -> list[str]:
        """Distinct characters of `text` that are not in the vocabulary, sorted."""
        if self.is_bytes:
            return []
        cps = codepoints(text)
        return [chr(c) for c in np.unique(cps[self._lookup(text) < 0])]

    def encode(self, text: str, skip_unknown: bool = False) -> np.ndarray:
        """Ids of `text`; unknown characters are an error naming them, or dropped if asked."""
        ids = self._lookup(text)
        missing = ids < 0
        if missing.any():
            if not skip_unknown:
                raise _not_in_vocabulary(self.unknown(text))
            ids = ids[~missing]
        return ids

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        if self.is_bytes:  # bytes cut inside a character, or not UTF-8, show as U+FFFD
            return np.asarray(ids, dtype=np.uint8).tobytes().decode("utf-8", "replace")
        cps = self.codepoints[np.asarray(ids, dtype=np.int64)].astype("<u4")
        return cps.tobytes().decode("utf-32-le", "surrogatepass")


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds ids 0 .. vocab_size - 1."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise AssertionError("more characters than Unicode has")


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
            raise _not_in_vocabulary([source.chars[i] for i in np.unique(np.asarray(ids)[missing])])
        mapped = mapped[~missing]
    return mapped
