"""Standard output and error that a closed pipe or a full disk cannot turn into a traceback.

`charlm generate | head` closes the pipe early: the command then ends quietly (exit 141, as
SIGPIPE would). `> /dev/full` ends with one line naming the cause. Training only reports
progress on its streams, so for it a lost stream is dropped and the run goes on, checkpoints
and all.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, TextIO

from charlm.errors import CharLMError

PIPE_CLOSED_EXIT = 128 + 13  # what a shell reports for a process ended by SIGPIPE


class OutputClosed(Exception):
    """The reader of standard output went away: stop quietly."""


class OutputFailed(CharLMError):
    """Standard output cannot be written (a full disk, an I/O error): one line, exit 1."""


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


def guard_streams(forgiving: bool) -> None:
    """Guard sys.stdout (strict unless `forgiving`) and sys.stderr (always forgiving)."""
    for name, lenient in (("stdout", forgiving), ("stderr", True)):
        stream = getattr(sys, name)
        if isinstance(stream, Guarded):
            continue
        if stream is None:  # the descriptor was closed before we started
            stream = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (lives as long as sys)
        setattr(sys, name, Guarded(stream, lenient))
