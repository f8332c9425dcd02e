"""Declared schemas: what charlm accepts from a file it reads back, checked before anything is
built from it (a checkpoint's payload, config.json, a settings file, a manifest, the encoded
cache's record).

A schema is a tree of small specs, each a type with its range, length or shape:

    PLAN = Record({"steps": Int(1, 2**62), "set_by": Str(), "replay": Str()},
                  optional={"measured": COSTS})

`check(spec, value, source)` returns the value as the program takes it (a list where a tuple is
meant becomes a tuple, an integer where a float is meant a float), or raises one CharLMError
naming the file, the place in the value (`optimizer.state.3.exp_avg`) and what is wrong. The
depth of what is accepted is the depth of the schema: nothing nests deeper than declared.
`parse_json` reads JSON text within a size, refusing what no schema takes (NaN, Infinity,
duplicate keys) and what Python's parser chokes on (nesting past its recursion limit, numbers
of thousands of digits), each as one line.

Hand-written rather than a validation library: the budget of dependencies is torch, numpy,
click and tqdm, and the payloads hold tensors, whose dtype and shape no JSON-schema library
checks (docs/guarantees.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from charlm.errors import CharLMError, brief


class Invalid(Exception):
    """A value that does not fit its spec: where in the value, and why."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"{where} {why}" if where else why)
        self.where, self.why = where, why


def _at(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


class Spec:
    """One declared type; `check` returns the accepted value or raises Invalid."""

    said = "a value"

    def check(self, value: Any, where: str) -> Any:
        raise NotImplementedError

    def refuse(self, value: Any, where: str) -> Invalid:
        return Invalid(where, f"must be {self.said}, got {brief(value)}")


def _number(n: int) -> str:
    """A bound as a message says it: 2**62 rather than its 19 digits."""
    if n > 2**20 and n & (n - 1) == 0:
        return f"2**{n.bit_length() - 1}"
    return f"{n:,}" if abs(n) >= 10_000 else str(n)


class Int(Spec):
    """A whole number (never a bool) in [lo, hi]."""

    def __init__(self, lo: int | None = None, hi: int | None = None) -> None:
        self.lo, self.hi = lo, hi
        if lo is not None and hi is not None:
            self.said = f"a whole number in [{_number(lo)}, {_number(hi)}]"
        elif lo is not None:
            self.said = f"a whole number >= {_number(lo)}"
        elif hi is not None:
            self.said = f"a whole number <= {_number(hi)}"
        else:
            self.said = "a whole number"

    def check(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.refuse(value, where)
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise self.refuse(value, where)
        return value


class Float(Spec):
    """A number (an int is taken as a float) in [lo, hi]; finite unless `inf` allows +inf."""

    def __init__(self, lo: float = -math.inf, hi: float = math.inf, inf: bool = False) -> None:
        self.lo, self.hi, self.inf = lo, hi, inf
        if lo > -math.inf and hi < math.inf:
            self.said = f"a finite number in [{lo:g}, {hi:g}]"
        elif lo > -math.inf:
            self.said = f"a finite number >= {lo:g}"
        elif hi < math.inf:
            self.said = f"a finite number <= {hi:g}"
        else:
            self.said = "a finite number"
        self.said += " (or infinity)" if inf else ""

    def check(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.refuse(value, where)
        try:
            number = float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise self.refuse(value, where) from None
        if number == math.inf and self.inf:
            return number
        if not (math.isfinite(number) and self.lo <= number <= self.hi):
            raise self.refuse(value, where)
        return number


class Bool(Spec):
    said = "true or false"

    def check(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.refuse(value, where)
        return value


class Str(Spec):
    """A string, one of `choices` if given, at most `most` characters, without NUL bytes
    (no path or name holds one) unless `nul`."""

    def __init__(
        self, choices: Sequence[str] | None = None, most: int = 1 << 20, nul: bool = False
    ) -> None:
        self.choices, self.most, self.nul = choices, most, nul
        self.said = f"one of {', '.join(map(repr, choices))}" if choices else "a string"

    def check(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or (self.choices and value not in self.choices):
            raise self.refuse(value, where)
        if len(value) > self.most:
            raise Invalid(where, f"is longer than {self.most:,} characters")
        if "\x00" in value and not self.nul:
            raise Invalid(where, "holds a NUL byte")
        return value


class Null(Spec):
    said = "null"

    def check(self, value: Any, where: str) -> None:
        if value is not None:
            raise self.refuse(value, where)


class Equal(Spec):
    """Exactly `value` (a flag only the program sets, say)."""

    def __init__(self, value: Any) -> None:
        self.value, self.said = value, brief(value)

    def check(self, value: Any, where: str) -> Any:
        if type(value) is not type(self.value) or value != self.value:
            raise self.refuse(value, where)
        return value


class Opt(Spec):
    """None, or what `spec` accepts."""

    def __init__(self, spec: Spec) -> None:
        self.spec, self.said = spec, f"{spec.said}, or null"

    def check(self, value: Any, where: str) -> Any:
        return None if value is None else self.spec.check(value, where)


class Either(Spec):
    """What the first of `specs` that accepts it makes of it."""

    def __init__(self, *specs: Spec) -> None:
        self.specs, self.said = specs, " or ".join(s.said for s in specs)

    def check(self, value: Any, where: str) -> Any:
        for spec in self.specs:
            try:
                return spec.check(value, where)
            except Invalid:
                continue
        raise self.refuse(value, where)


class Seq(Spec):
    """A list (or tuple) of `least` to `most` items each `item`; a tuple when `tuple_`."""

    def __init__(self, item: Spec, least: int = 0, most: int = 1 << 24, tuple_: bool = False):
        self.item, self.least, self.most, self.tuple_ = item, least, most, tuple_
        self.said = f"a list of {item.said}"

    def check(self, value: Any, where: str) -> list[Any] | tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            raise self.refuse(value, where)
        if not self.least <= len(value) <= self.most:
            raise Invalid(where, f"must hold {self.least} to {self.most} items, has {len(value)}")
        items = [self.item.check(v, _at(where, k)) for k, v in enumerate(value)]
        return tuple(items) if self.tuple_ else items


class Tup(Spec):
    """A fixed-length list (or tuple) whose items are `items`, in order."""

    def __init__(self, *items: Spec, tuple_: bool = True) -> None:
        self.items, self.tuple_ = items, tuple_
        self.said = f"a list of {len(items)}: " + ", ".join(s.said for s in items)

    def check(self, value: Any, where: str) -> list[Any] | tuple[Any, ...]:
        if not isinstance(value, list | tuple) or len(value) != len(self.items):
            raise self.refuse(value, where)
        pairs = enumerate(zip(self.items, value, strict=True))
        items = [spec.check(v, _at(where, k)) for k, (spec, v) in pairs]
        return tuple(items) if self.tuple_ else items


class Record(Spec):
    """A dict: every `required` key, any `optional` one, no other (unless `extra`: then other
    keys pass unchecked). Keys are names, or any value a dict holds (a parameter's index)."""

    said = "an object"

    def __init__(
        self,
        required: Mapping[str, Spec],
        optional: Mapping[str, Spec] | None = None,
        extra: bool = False,
    ) -> None:
        self.required, self.optional, self.extra = dict(required), dict(optional or {}), extra

    def check(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.refuse(value, where)
        known = {**self.required, **self.optional}
        for key in value:
            if key not in known and not self.extra:
                raise Invalid(_at(where, key), "is not a known field")
        for key in self.required:
            if key not in value:
                raise Invalid(_at(where, key), "is missing")
        return {k: known[k].check(v, _at(where, k)) if k in known else v for k, v in value.items()}


class Map(Spec):
    """A dict of at most `most` entries, its keys `key` and its values `value`."""

    said = "an object"

    def __init__(self, key: Spec, value: Spec, most: int = 1 << 16) -> None:
        self.key, self.value, self.most = key, value, most

    def check(self, value: Any, where: str) -> dict[Any, Any]:
        if not isinstance(value, dict):
            raise self.refuse(value, where)
        if len(value) > self.most:
            raise Invalid(where, f"must hold at most {self.most:,} entries, has {len(value):,}")
        return {
            self.key.check(k, _at(where, k)): self.value.check(v, _at(where, k))
            for k, v in value.items()
        }


class Test(Spec):
    """What `spec` accepts and `test` finds nothing wrong with (`test` says what is wrong)."""

    def __init__(self, spec: Spec, test: Callable[[Any], str | None]) -> None:
        self.spec, self.test, self.said = spec, test, spec.said

    def check(self, value: Any, where: str) -> Any:
        value = self.spec.check(value, where)
        wrong = self.test(value)
        if wrong:
            raise Invalid(where, wrong)
        return value


class Tensor(Spec):
    """A dense tensor of one of `dtypes` (names: "float32", "uint8"), of `shape` if given,
    finite if `finite`. torch is imported here only: a file's tensors mean torch is loaded."""

    def __init__(
        self, dtypes: Sequence[str], shape: Sequence[int] | None = None, finite: bool = False
    ) -> None:
        self.dtypes, self.shape, self.finite = tuple(dtypes), shape, finite
        self.said = f"a {'/'.join(self.dtypes)} tensor" + (
            f" of shape {tuple(shape)}" if shape is not None else ""
        )

    def check(self, value: Any, where: str) -> Any:
        import torch

        if not isinstance(value, torch.Tensor) or value.layout != torch.strided:
            raise Invalid(where, f"must be {self.said}, got {type(value).__name__}")
        dtype = str(value.dtype).removeprefix("torch.")
        if dtype not in self.dtypes:
            raise Invalid(where, f"must be {self.said}, got a {dtype} tensor")
        if self.shape is not None and tuple(value.shape) != tuple(self.shape):
            raise Invalid(where, f"has shape {tuple(value.shape)}, expected {tuple(self.shape)}")
        if self.finite and value.is_floating_point() and not torch.isfinite(value).all():
            raise Invalid(where, "holds NaN or infinite values")
        return value


def check(spec: Spec, value: Any, source: str) -> Any:
    """`value` as `spec` accepts it, or one CharLMError naming `source` and the place."""
    try:
        return spec.check(value, "")
    except Invalid as e:
        raise CharLMError(f"{source}: {e}") from None


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f"the key {key!r} is given twice")
        seen.add(key)
    return dict(pairs)


def parse_json(
    text: str,
    source: str,
    kind: str = "valid JSON",
    pairs: Callable[[list[tuple[str, Any]]], dict[str, Any]] = _no_duplicates,
) -> Any:
    """JSON text as Python values; text that is not `kind` is one line naming `source`.
    `pairs` builds each object from its key-value pairs (and refuses duplicate keys)."""
    try:
        return json.loads(text, parse_constant=_no_constant, object_pairs_hook=pairs)
    except json.JSONDecodeError as e:
        raise CharLMError(f"{source} is not valid JSON: {e.msg} at line {e.lineno}") from None
    except (RecursionError, ValueError) as e:  # nested too deep, a number of 5,000 digits
        raise CharLMError(f"{source} is not {kind}: {str(e)[:100]}") from None
