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
from dataclasses import fields
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


# what each declared type accepts, and how a message names it (bool is an int in Python: only
# a real bool is a flag, and a flag is never a number)
_KINDS = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    "float": (lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
    "bool": (lambda v: isinstance(v, bool), "True or False"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "None": (lambda v: v is None, "None"),
    "tuple[str, ...]": (
        lambda v: isinstance(v, tuple | list) and all(isinstance(s, str) for s in v),
        "a list of strings",
    ),
}


def check_types(settings: object, exempt: tuple[str, ...] = ()) -> None:
    """Each field of a settings dataclass of the type it declares: "0.8" for a temperature or
    "no" for a flag is the caller's mistake, named in one line, not a TypeError deep below or
    a truthy string silently read as True. Fields of other types (tensors...) and `exempt`
    ones are the class's own to check."""
    for f in fields(settings):  # type: ignore[arg-type]
        kinds = [k.strip() for k in str(f.type).split("|")]
        if f.name in exempt or not all(k in _KINDS for k in kinds):
            continue
        value = getattr(settings, f.name)
        if not any(_KINDS[k][0](value) for k in kinds):
            said = " or ".join(_KINDS[k][1] for k in kinds)
            raise CharLMError(f"{flag(f.name)} must be {said}, got {brief(value)}")


def expect(name: str, value: object, kind: str) -> None:
    """A public function's parameter `name` of the declared `kind` ("str", "int | None", ...),
    else one line naming it."""
    kinds = [k.strip() for k in kind.split("|")]
    if not any(_KINDS[k][0](value) for k in kinds):
        said = " or ".join(_KINDS[k][1] for k in kinds)
        raise CharLMError(f"{name} must be {said}, got {brief(value)}")


def brief(value: object, limit: int = 80) -> str:
    """A value as a message shows it: its repr cut to `limit` characters (an integer of
    thousands of digits by its length: Python refuses to print one past 4,300)."""
    if isinstance(value, int) and value.bit_length() > 200:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # a tensor: its repr is its values
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
