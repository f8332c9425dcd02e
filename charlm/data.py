"""Corpus and vocabulary: read UTF-8 text, map characters to integer ids and back.

The vocabulary is the sorted set of Unicode code points of the corpus. Encoding goes through a
numpy lookup table indexed by code point, so no Python loop runs per character.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from charlm.errors import CharLMError

BUILTIN = "builtin"


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


def read_text(path: str | os.PathLike[str], encoding: str = "utf-8", errors: str = "strict") -> str:
    """Read a whole text file, turning every way it can be unreadable into a CharLMError."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CharLMError(f"no such file: {path}")
    if os.path.isdir(path):
        raise CharLMError(f"{path} is a directory, not a text file")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise CharLMError(f"cannot read {path}: {e.strerror}") from None
    try:
        text = raw.decode(encoding, errors)
    except UnicodeDecodeError as e:
        raise CharLMError(
            f"{path} is not valid {encoding}: bad byte 0x{raw[e.start]:02x} at byte offset "
            f"{e.start} (use --encoding to name the right encoding, or --errors replace)"
        ) from None
    except LookupError:
        raise CharLMError(f"unknown encoding or error handler: {encoding!r} / {errors!r}") from None
    if not text:
        raise CharLMError(f"{path} is empty")
    if "\x00" in text:
        raise CharLMError(f"{path} looks like a binary file (it contains NUL bytes), not text")
    return text


def load_corpus(
    path: str | os.PathLike[str],
    encoding: str = "utf-8",
    errors: str = "strict",
) -> Corpus:
    """Read and encode a corpus; `builtin` names the offline built-in corpus."""
    if os.fspath(path) == BUILTIN:
        text, source = builtin_text(), "builtin (Python's pydoc help topics)"
    else:
        text, source = read_text(path, encoding, errors), os.path.abspath(path)
    vocab = Vocab.from_text(text)
    return Corpus(vocab.encode(text), vocab, source)
