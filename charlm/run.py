"""A run folder: every file a training run keeps, and the rules for each.

    runs/charlm/
        checkpoint.pt   the latest state; --resume continues from it (see checkpoint.py)
        best.pt         the state at the best validation score so far
        config.json     every effective setting, the corpus, a --time-budget run's plan
        metrics.jsonl   one JSON row per epoch (and one for a run stopped mid-epoch)
        samples.txt     a sample after every --sample-every epochs
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
        kept = [row for row in self.rows(strict=False) if row.get("step", 0) <= step]
        write_text(self.file(METRICS), "".join(json.dumps(r) + "\n" for r in kept))

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

    def append_sample(self, epoch: int, text: str) -> None:
        self._append(SAMPLES, f"=== epoch {epoch}\n{text.strip()}\n\n")

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


def read_rows(path: Path, strict: bool = True) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl; `strict`: a line that is not a row is an error, else it is
    skipped (a torn last line after a crash: the checkpoint decides what stays)."""
    if not path.is_file():
        if strict:
            raise CharLMError(f"no {METRICS} in {path.parent} (is it a charlm run folder?)")
        return []
    rows = []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            float(row["epoch"]), float(row["train_loss"]), float(row["elapsed_s"])
        except (ValueError, KeyError, TypeError):
            if strict:
                raise CharLMError(f"{path}, line {n}: not a charlm metrics row") from None
            continue
        rows.append(row)
    return rows
