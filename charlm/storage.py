"""Where charlm keeps files of its own, and the one way it replaces a file.

`atomic_write` writes a temporary file beside the target, flushes it to disk, then renames it
over the target: a crash, a kill or a full disk at any moment leaves the old file or the new
one, never a torn one, and no temporary file behind. The new file gets the permissions the
user's umask gives any new file (a temporary file is created private).

`cache_dir(kind)` is one folder per kind of cached data ("corpora": downloads, "encoded":
encoded corpora) under $CHARLM_CACHE, else $XDG_CACHE_HOME/charlm, else ~/.cache/charlm.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from charlm.errors import CharLMError

CACHE_KINDS = ("corpora", "encoded")


def cache_dir(kind: str) -> Path:
    """The cache folder for `kind` (not created here: a read-only lookup creates nothing)."""
    if kind not in CACHE_KINDS:
        raise ValueError(f"unknown cache kind {kind!r}")
    root = os.environ.get("CHARLM_CACHE")
    if root:
        return Path(root).expanduser() / kind
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "charlm" / kind


def _umask() -> int:
    """The process's umask, read on every write: it may change while a run goes on."""
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


class WriteFailed(CharLMError):
    """A file charlm writes could not be written: one line, and the old file is intact."""


def write_failed(path: str | os.PathLike[str], e: OSError) -> WriteFailed:
    """The one-line error for a file that could not be written (a full disk says so)."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return WriteFailed(f"cannot write {path}: the disk is full ({e.strerror})")
    return WriteFailed(f"cannot write {path}: {e.strerror or e}")


def atomic_write(
    path: str | os.PathLike[str], fill: Callable[[BinaryIO], object], durable: bool = True
) -> None:
    """Replace `path` with what `fill(f)` writes to f; `durable`: fsync file and folder too."""
    path = Path(os.path.realpath(path))  # through a symlink to the file it names
    if path.exists() and not path.is_file():  # renamed over, a device would become a file
        raise WriteFailed(f"cannot write {path}: it is not a regular file")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_failed(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise write_failed(path, e) from None
        raise
    if durable:
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)  # make the rename itself durable
        finally:
            os.close(folder)


def write_text(path: str | os.PathLike[str], text: str, durable: bool = False) -> None:
    """Replace a text file (UTF-8) atomically; bytes a corpus read with --errors
    surrogateescape kept (as lone surrogates) are written back as they were."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8", "surrogateescape")), durable)
