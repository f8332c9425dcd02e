"""The one exception type for mistakes a user can make (bad file, bad flag, bad checkpoint), and
how its messages name a setting.

The CLI turns a CharLMError into a single line on stderr and a non-zero exit code; anything
else is a bug and stays loud. A message names a setting through `flag`, so that the same
mistake reads `--hidden-size must be > 0` at the command line and `hidden_size must be > 0` to
a Python caller, who has no flags: the CLI runs its commands inside `command_line()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_CLI: ContextVar[bool] = ContextVar("charlm_command_line", default=False)
_UNSET: Any = object()


class CharLMError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


@contextmanager
def command_line() -> Iterator[None]:
    """Within it, messages name settings as the `charlm` command's flags."""
    token = _CLI.set(True)
    try:
        yield
    finally:
        _CLI.reset(token)


def on_command_line() -> bool:
    """Whether messages speak to the `charlm` command's user (else to a Python caller)."""
    return _CLI.get()


def option(name: str) -> str:
    """The command-line flag of a setting, whoever reads it: for command lines to be typed."""
    return "--" + name.replace("_", "-")


def flag(name: str, value: Any = _UNSET, python: str = "") -> str:
    """A setting as a message names it: the flag on the command line, the parameter in Python
    (`python`, where its name there is not the flag's).

        flag("hidden_size")      --hidden-size        hidden_size
        flag("seq_len", 35)      --seq-len 35         seq_len=35
        flag("overwrite", True)  --overwrite          overwrite=True
        flag("out", ...)         --out                out=...
    """
    if _CLI.get():
        bare = value is _UNSET or value is True or value is ...
        return option(name) if bare else f"{option(name)} {value}"
    name = python or name
    if value is _UNSET:
        return name
    return f"{name}=..." if value is ... else f"{name}={value!r}"
