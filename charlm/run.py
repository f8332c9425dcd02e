"""A run folder: every file a training run keeps, and the rules for each.

    runs/charlm/
        checkpoint.pt   the latest state; --resume continues from it (see checkpoint.py)
        best.pt         the state at the best validation score so far
        config.json     every effective setting, the corpus, a --time-budget run's plan
        metrics.jsonl   one JSON row per line: training (every --log-every steps), evaluation
                        (every --eval-every steps) and epoch rows (meter.py), read by `read_rows`
        samples.txt     a sample after every --sample-every epochs and --sample-steps steps
        .lock           held by the one process that trains in the folder

A fresh run refuses a folder that holds a run unless told to overwrite it, then removes every
file of the earlier run (RUN_FILES), so that no later command picks up the old run's best.pt,
metrics or samples as this one's; a resumed run drops the metrics rows newer than its checkpoint
(written just before a crash, they would be repeated). Files are replaced atomically
(storage.py) or appended a whole line at a time; a write that fails is one line of error.
The lock is an flock, so the kernel releases it however the process ends; the temporary files
of a process killed while writing are removed by the next run that takes the lock.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from charlm.errors import CharLMError, flag
from charlm.storage import FOLDER, check_target, shown, write_failed, write_text

try:
    import fcntl
except ImportError:  # Windows: no flock; a second writer is not detected there
    fcntl = None

LATEST, BEST = "checkpoint.pt", "best.pt"
CONFIG, METRICS, SAMPLES, LOCK = "config.json", "metrics.jsonl", "samples.txt", ".lock"
PROBE = ".checkpoint-probe.tmp"  # a checkpoint written to time it (a budget's measuring)
# what a run leaves that a later command picks up (generate and eval: best.pt, else
# checkpoint.pt; info: config.json; plot: metrics.jsonl): a fresh run removes each
RUN_FILES = (LATEST, BEST, CONFIG, METRICS, SAMPLES, PROBE)


class RunFolder:
    """The files of one run. `writes=False` (a torchrun rank other than 0) writes nothing."""

    def __init__(self, path: str | os.PathLike[str], writes: bool = True) -> None:
        self.path = Path(path)
        self.writes = writes
        self._lock: int | None = None

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def latest(self) -> Path:
        return self.path / LATEST

    @property
    def best(self) -> Path:
        return self.path / BEST

    def check_new(self, overwrite: bool) -> None:
        """A fresh run: refuse a folder holding a run, unless `overwrite` (hours are not lost
        to a repeated command)."""
        if not overwrite and self.latest.exists():
            raise CharLMError(
                f"{self.path} already holds a run: continue it with {flag('resume', True)}, "
                f"start over with {flag('overwrite', True)}, or choose another {flag('out', ...)}"
            )

    def open(self, fresh: bool, step: int) -> None:
        """Create the folder, take its lock, prove it writable, and set the metrics straight:
        empty for a fresh run, the rows up to `step` for a resumed one."""
        if not self.writes:
            return
        check_target(self.path, FOLDER, "--out")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._take_lock()  # creating the lock file proves the folder writable, now
        except OSError as e:
            raise CharLMError(
                f"cannot write to {flag('out', shown(self.path))}: {e.strerror}"
            ) from None
        for stale in self.path.glob(".*.tmp"):  # left by a killed process: the lock is ours
            stale.unlink(missing_ok=True)
        if fresh:  # nothing of an earlier run may be picked up as this one's
            for name in RUN_FILES:
                self._remove(name)
            write_text(self.file(METRICS), "")
            return
        kept = [
            line for line, row, bad in _parsed(self.file(METRICS)) if _kept(line, row, bad, step)
        ]
        write_text(self.file(METRICS), "".join(line + "\n" for line in kept))

    def _remove(self, name: str) -> None:
        """Remove one of the run's files (an older run's), a failure as one line."""
        try:
            self.file(name).unlink(missing_ok=True)
        except OSError as e:
            raise CharLMError(f"cannot remove {shown(self.file(name))}: {e.strerror}") from None

    @contextlib.contextmanager
    def session(self, fresh: bool, step: int) -> Iterator[None]:
        """`open` for the length of a run, then release the lock."""
        self.open(fresh, step)
        try:
            yield
        finally:
            self.close()

    def close(self) -> None:
        """Release the lock (the kernel does it too, if the process dies first)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def _take_lock(self) -> None:
        if self._lock is not None:
            return
        fd = os.open(self.file(LOCK), os.O_RDWR | os.O_CREAT, 0o666)
        if fcntl is None:
            self._lock = fd
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise CharLMError(
                f"{self.path} is in use by another charlm process (pid {holder}): wait for it "
                f"to finish, or choose another {flag('out', ...)}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock = fd

    def save_checkpoint(self, write: Callable[[Path], None], best: bool = False) -> None:
        """checkpoint.pt, and best.pt too when this is the best state so far; `write(path)`
        writes one (checkpoint.save: this module reads runs without torch)."""
        if not self.writes:
            return
        write(self.latest)
        if best:
            write(self.best)

    def probe(self, write: Callable[[Path], None]) -> None:
        """Write a checkpoint that is not kept, to time it here (a kill leaves it behind:
        `open` removes it)."""
        if self.writes:
            write(self.file(PROBE))
            self.file(PROBE).unlink()

    def write_config(self, config: dict[str, Any]) -> None:
        if self.writes:
            write_text(self.file(CONFIG), json.dumps(config, indent=2) + "\n")

    def append_row(self, row: dict[str, Any]) -> None:
        self._append(METRICS, json.dumps(row) + "\n")

    def append_sample(self, heading: str, text: str) -> None:
        """A sample under its heading (`epoch 3`, `step 500 (epoch 2.04)`)."""
        self._append(SAMPLES, f"=== {heading}\n{text.strip()}\n\n")

    def _append(self, name: str, text: str) -> None:
        """One write of a whole entry: a reader never sees half a line."""
        if not self.writes:
            return
        path = self.file(name)
        try:
            with open(path, "a", encoding="utf-8", errors="surrogateescape") as f:
                f.write(text)
        except OSError as e:
            raise write_failed(path, e) from None

    def rows(self, strict: bool = True) -> list[dict[str, Any]]:
        """The metrics rows; `strict`: a line that is not a row is an error (else skipped)."""
        return read_rows(self.file(METRICS), strict)


# What each kind of metrics row holds (meter.py writes them): every field's kind of value and
# whether the row must have it. A row without a `kind` is an epoch row (charlm before the
# other kinds); a row of a kind this charlm does not know is left out.
#   "count"     an int in [0, 2**63)
#   "position"  a finite number >= 0 (where a row is drawn: its step, epoch, seconds)
#   "value"     a number >= 0, or null; one that is not finite, or beyond 1e30, reads as None
#   "flag"      true or false
_WHERE = {"step": ("count", True), "epoch": ("count", True), "elapsed_s": ("position", True)}
_LOSS = {"val_loss": ("value", False), "val_ppl": ("value", False), "val_bpc": ("value", False)}
SCHEMA: dict[str, dict[str, tuple[str, bool]]] = {
    "epoch": {
        **_WHERE, "epochs": ("position", False), "lr": ("value", False),
        "train_loss": ("value", True), "train_ppl": ("value", False), **_LOSS,
        "grad_norm": ("value", False), "chars_per_sec": ("value", False),
        "partial": ("flag", False),
    },
    "train": {
        **_WHERE, "epochs": ("position", True), "lr": ("value", True),
        "train_loss": ("value", True), "train_ppl": ("value", False),
        "train_bpc": ("value", False), "grad_norm": ("value", False),
        "chars_per_sec": ("value", False),
    },
    "eval": {
        **_WHERE, "epochs": ("position", True), "lr": ("value", True),
        **_LOSS, "val_loss": ("value", True), "chars": ("count", False),
    },
}  # fmt: skip
KINDS = tuple(SCHEMA)
VALUE_MAX = 1e30  # beyond it a value is drawn as a gap, as an infinite one


def read_rows(
    path: Path, strict: bool = True, kinds: tuple[str, ...] = KINDS
) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl of the `kinds` asked for, each checked against its kind's
    SCHEMA and holding every field of it (None where absent or not a finite number).

    `strict`: a line that is not a row is an error naming it, else it is skipped. A torn last
    line (no newline at its end: the run was writing it, or died writing it) is skipped."""
    if not path.is_file():
        if strict:
            raise CharLMError(f"no {METRICS} in {path.parent} (is it a charlm run folder?)")
        return []
    rows = []
    for n, (_, row, problem) in enumerate(_parsed(path), start=1):
        if problem and strict:
            raise CharLMError(f"{path}, line {n}: not a charlm metrics row ({problem})")
        if row and row["kind"] in kinds:
            rows.append(row)
    return rows


def _parsed(path: Path) -> list[tuple[str, dict[str, Any] | None, str | None]]:
    """(line, row, what is wrong with it) for every line of a metrics.jsonl: no row for a
    blank line or a kind this charlm does not know; a torn last line is left out."""
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise CharLMError(f"cannot read {path}: {e.strerror}") from None
    lines = text.split("\n")
    parsed = [(line, *check_row(line)) if line.strip() else (line, None, None) for line in lines]
    *whole, last = parsed  # the text after the last newline: a whole row, or torn, or nothing
    return whole + ([last] if last[1] is not None else [])


def _kept(line: str, row: dict[str, Any] | None, problem: str | None, step: int) -> bool:
    """Whether a resumed run keeps a line: a row up to its checkpoint's step (a row of a kind
    this charlm does not know, by the step it names); not a line that is not a row."""
    if row is not None:
        return row["step"] <= step
    if problem is not None or not line.strip():
        return False
    named = json.loads(line).get("step")  # a later charlm's row: valid JSON, a kind unknown here
    return isinstance(named, int) and not isinstance(named, bool) and 0 <= named <= step


def check_row(line: str) -> tuple[dict[str, Any] | None, str | None]:
    """One line of metrics.jsonl as a checked row (None for a kind this charlm does not
    know), or what is wrong with it."""
    try:
        raw = json.loads(line)
    except (ValueError, RecursionError):
        return None, "not JSON"
    if not isinstance(raw, dict):
        return None, "not a JSON object"
    kind = raw.get("kind", "epoch")
    if not isinstance(kind, str):
        return None, f"kind {kind!r}"
    if kind not in SCHEMA:
        return None, None  # written by a later charlm: not ours to read
    row: dict[str, Any] = {"kind": kind}
    for name, (what, required) in SCHEMA[kind].items():
        if name not in raw:
            if required:
                return None, f"no {name}"
            row[name] = None
            continue
        value, ok = _checked(raw[name], what)
        if not ok:
            return None, f"{name} {str(raw[name])[:40]!r}"
        row[name] = value
    if row["epochs"] is None:  # an epoch row of an older charlm: drawn at its epoch
        row["epochs"] = float(row["epoch"])
    return row, None


def _checked(value: Any, what: str) -> tuple[Any, bool]:
    """`value` as a field of this kind holds it, and whether it is one."""
    if what == "flag":
        return value, isinstance(value, bool)
    if isinstance(value, bool) or not (value is None or isinstance(value, int | float)):
        return None, False
    if what == "count":
        return value, isinstance(value, int) and 0 <= value < 2**63
    if value is None:
        return None, what == "value"
    try:
        number = float(value)
    except OverflowError:  # an int of 400 digits
        number = math.inf
    if what == "position":
        return number, math.isfinite(number) and 0 <= number <= VALUE_MAX
    if math.isnan(number) or abs(number) > VALUE_MAX:
        return None, True  # a diverged run's NaN or infinity: a gap where it is drawn
    return number, number >= 0
