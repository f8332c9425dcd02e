"""Standard streams that a closed pipe, a full disk, a closed descriptor or the terminal's
encoding cannot turn into a traceback.

`charlm generate | head` closes the pipe early: the command then ends quietly (exit 141, as
SIGPIPE would). `> /dev/full`, or a standard output closed before the command started (`>&-`),
ends with one line naming the cause, exit 1, for every command and for --help and --version
alike. Training only reports progress on its streams, so once it trains a lost stream is
dropped and the run goes on, checkpoints and all. A closed standard input reads as empty.

Text follows the terminal's encoding without ever raising: what it cannot show is escaped as
Python writes it (`\xe9`, `\u2019`), except the bytes a corpus read with --errors
surrogateescape kept (lone surrogates U+DC80..U+DCFF), which are written back as the bytes
they were, where the encoding is ASCII-compatible. A line read that is not valid in the
terminal's encoding keeps its undecodable bytes the same way (surrogateescape).
"""

from __future__ import annotations

import codecs
import contextlib
import io
import os
import sys
from typing import Any, TextIO

from charlm.errors import CharLMError

PIPE_CLOSED_EXIT = 128 + 13  # what a shell reports for a process ended by SIGPIPE


class OutputClosed(Exception):
    """The reader of standard output went away: stop quietly."""


class OutputFailed(CharLMError):
    """Standard output cannot be written (a full disk, an I/O error): one line, exit 1."""


def _escape(error: UnicodeError) -> tuple[str | bytes, int]:
    """An encoding error handler for text the stream's encoding cannot hold: the byte a lone
    surrogate U+DC80..U+DCFF stands for (surrogateescape read it so), else Python's escape
    of the character (backslashreplace); one character at a time."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    char = error.object[error.start]
    if 0xDC80 <= ord(char) <= 0xDCFF:
        return bytes([ord(char) - 0xDC00]), error.start + 1
    return ascii(char)[1:-1], error.start + 1


codecs.register_error("charlm.escape", _escape)


def _ascii_compatible(encoding: str | None) -> bool:
    try:
        return codecs.lookup(encoding or "ascii").encode("a")[0] == b"a"
    except (LookupError, TypeError):
        return False


def _never_raises(stream: TextIO) -> None:
    """Let the stream escape what its encoding cannot hold instead of raising (see above)."""
    handler = "charlm.escape" if _ascii_compatible(stream.encoding) else "backslashreplace"
    with contextlib.suppress(AttributeError, ValueError, OSError):
        stream.reconfigure(errors=handler)  # type: ignore[attr-defined]


class _Closed(io.TextIOBase):
    """Standard output closed before the command started: writing to it is an error."""

    encoding = "utf-8"

    def write(self, text: str) -> int:
        raise OSError(0, "standard output is closed")

    def fileno(self) -> int:
        raise OSError(0, "standard output is closed")


class Guarded:
    """A text stream whose write errors stop the command cleanly (or, `forgiving`, are dropped)."""

    def __init__(self, stream: TextIO, forgiving: bool) -> None:
        self._stream, self._forgiving, self.lost = stream, forgiving, False

    def write(self, text: str) -> int:
        if not self.lost:
            try:
                return self._stream.write(text)
            except OSError as e:
                self._fail(e)
        return len(text)

    def flush(self) -> None:
        if not self.lost:
            try:
                self._stream.flush()
            except OSError as e:
                self._fail(e)

    def forgive(self) -> None:
        """From now on a write error is dropped (a training run only reports progress)."""
        self._forgiving = True

    def _fail(self, error: OSError) -> None:
        if self._forgiving:
            self.silence()
        elif isinstance(error, BrokenPipeError):
            raise OutputClosed from None
        else:
            raise OutputFailed(f"cannot write the output: {error.strerror}") from None

    def silence(self) -> None:
        """Send what is still buffered to /dev/null: the interpreter's last flush stays quiet."""
        self.lost = True
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def silence_stdout() -> None:
    """After an output error: nothing more reaches standard output."""
    if isinstance(sys.stdout, Guarded):
        sys.stdout.silence()


def guard_streams(forgiving: bool = False) -> None:
    """Guard sys.stdout (strict unless `forgiving`: see `forgive_output`), sys.stderr (always
    forgiving) and sys.stdin (closed: empty); none of them raises for the encoding."""
    for name, lenient in (("stdout", forgiving), ("stderr", True)):
        stream = getattr(sys, name)
        if isinstance(stream, Guarded):
            continue
        if stream is None and lenient:  # the descriptor was closed before we started
            stream = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (lives as long as sys)
        elif stream is None:
            stream = _Closed()
        _never_raises(stream)
        setattr(sys, name, Guarded(stream, lenient))
    if sys.stdin is None:
        sys.stdin = io.StringIO("")
    else:
        with contextlib.suppress(AttributeError, ValueError, OSError):
            sys.stdin.reconfigure(errors="surrogateescape")  # type: ignore[attr-defined]


def forgive_output() -> None:
    """Training starts: a lost standard output no longer ends the command (see above)."""
    if isinstance(sys.stdout, Guarded):
        sys.stdout.forgive()
