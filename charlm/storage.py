"""Where charlm keeps files of its own, the one way it replaces a file, and the one way it
looks at a path a user names.

`look(path, want)` is the opener's check, made before anything is opened: a path holding a NUL
byte, a path that cannot be looked at (missing, a symlink loop, permission denied), a pipe,
socket or device (opening one for reading can block for ever), a folder where a file is meant
or a file where a folder is meant, and an unreadable file are each one line naming the path.
`open_read` opens a file after that look without ever blocking (a file swapped for a FIFO in
between is caught by looking again at what was opened), and `read_bytes` reads one whole,
within a size declared by its kind. `check_target` is the same look at a path to be written.

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
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from charlm.errors import CharLMError, brief, flag

CACHE_KINDS = ("corpora", "encoded")
FILE, FOLDER, ANY = "file", "folder", "file or folder"  # what a named path is meant to be


class WriteFailed(CharLMError):
    """A file charlm writes could not be written: one line, and the old file is intact."""


def cache_dir(kind: str) -> Path:
    """The cache folder for `kind` (not created here: a read-only lookup creates nothing)."""
    if kind not in CACHE_KINDS:
        raise ValueError(f"unknown cache kind {kind!r}")
    root = os.environ.get("CHARLM_CACHE")
    if root:
        return Path(root).expanduser() / kind
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "charlm" / kind


def shown(path: str | os.PathLike[str]) -> str:
    """A path as a message shows it: what a terminal cannot show (NUL, control characters,
    bytes that were not text) escaped, so that the message stays one readable line."""
    try:
        text = os.fsdecode(path)
    except TypeError:  # no path at all: as_path refuses it, naming it
        return brief(path)
    return "".join(c if c.isprintable() or c == " " else ascii(c)[1:-1] for c in text)


def as_path(path: Any, role: str = "") -> str:
    """`path` as a string; what is no path (a number, None) or holds a NUL byte (no system
    call takes one) is one line naming `role`."""
    try:
        name = os.fspath(path)
    except TypeError:
        raise CharLMError(f"{role or 'a path'} must be a path, got {brief(path)}") from None
    if not isinstance(name, str):
        name = os.fsdecode(name)
    if "\x00" in name:
        raise CharLMError(f"{_seen(role, name)}: a path cannot hold a NUL byte")
    return name


def _seen(role: str, name: str) -> str:
    """A path as a message names it: after its role, where a role that is a setting (`--out`)
    reads as the caller wrote it: `--out runs/x` on the command line, `out='runs/x'` in Python."""
    if role.startswith("--"):
        return flag(role[2:].replace("-", "_"), shown(name))
    return f"{role} {shown(name)}" if role else shown(name)


def _unseen(role: str, name: str, e: OSError, missing: str) -> CharLMError:
    """The one line for a path that cannot be looked at or opened."""
    if e.errno == errno.ENOENT and missing:
        return CharLMError(missing)
    reasons = {errno.ELOOP: "a symlink loop", errno.EACCES: "permission denied"}
    why = reasons.get(e.errno or 0) or e.strerror or str(e)
    return CharLMError(f"cannot read {_seen(role, name)}: {why}")


def look(
    path: str | os.PathLike[str],
    want: str = ANY,
    role: str = "",
    special: str = "",
    missing: str = "",
) -> os.stat_result:
    """The one look at a path the user named, before anything opens it: it must be what is
    wanted (FILE, FOLDER, or ANY of the two) and readable, else one line naming it. `role`
    names the path to the user ("--checkpoint"); `special` says what to do about a pipe or a
    device; `missing` is the message for a path that does not exist."""
    name = as_path(path, role)
    seen = _seen(role, name)
    try:
        st = os.stat(name)
    except OSError as e:
        raise _unseen(role, name, e, missing) from None
    except ValueError as e:  # a path the system cannot take
        raise CharLMError(f"cannot read {seen}: {e}") from None
    folder = stat.S_ISDIR(st.st_mode)
    if not folder and not stat.S_ISREG(st.st_mode):
        why = f": {special}" if special else ""
        raise CharLMError(f"{seen} is not a regular file (a pipe, socket or device?){why}")
    if want == FILE and folder:
        raise CharLMError(f"{seen} is a folder, not a regular file")
    if want == FOLDER and not folder:
        raise CharLMError(f"{seen} is a file, not a folder")
    if not os.access(name, os.R_OK | (os.X_OK if folder else 0)):
        raise CharLMError(f"cannot read {seen}: permission denied")
    return st


def open_read(path: str | os.PathLike[str], role: str = "", missing: str = "") -> BinaryIO:
    """A regular file opened for reading, after `look`: opened without blocking and looked at
    again once open, so that a FIFO swapped in between cannot block the process for ever."""
    st = look(path, FILE, role, missing=missing)
    name = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(name, flags)
    except OSError as e:
        raise _unseen(role, name, e, missing) from None
    now = os.fstat(fd)
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(now.st_mode):
        os.close(fd)
        raise CharLMError(f"{_seen(role, name)} changed while it was being opened; try again")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_bytes(path: str | os.PathLike[str], role: str, most: int, missing: str = "") -> bytes:
    """A whole small file (a settings file, a manifest, a record) of at most `most` bytes: a
    larger one is not of its kind, and is not read into memory."""
    with open_read(path, role, missing) as f:
        try:
            data = f.read(most + 1)
        except OSError as e:
            raise _unseen(role, os.fspath(path), e, "") from None
    if len(data) > most:
        raise CharLMError(f"{_seen(role, os.fspath(path))} is larger than {most:,} bytes")
    return data


def read_text(path: str | os.PathLike[str], role: str, most: int, missing: str = "") -> str:
    """A whole small UTF-8 text file (see `read_bytes`)."""
    data = read_bytes(path, role, most, missing)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        why = f"not UTF-8 ({e.reason} at byte {e.start})"
        raise CharLMError(f"cannot read {_seen(role, os.fspath(path))}: {why}") from None


def check_target(path: str | os.PathLike[str], want: str = FILE, role: str = "") -> str:
    """The look at a path to be written (`want`: a FILE, or the FOLDER a run writes into),
    before anything is created: a NUL byte, a symlink loop, or something of another kind
    there (a device renamed over would become a file) is one line. The path, as a string."""
    name = as_path(path, role)
    where = f"cannot write {'to ' if want == FOLDER else ''}{_seen(role, name)}"
    try:
        st = os.stat(name)
    except FileNotFoundError:
        return name  # to be created
    except (OSError, ValueError) as e:
        loop = getattr(e, "errno", None) == errno.ELOOP
        why = "a symlink loop" if loop else getattr(e, "strerror", None) or e
        raise WriteFailed(f"{where}: {why}") from None
    if want == FOLDER and not stat.S_ISDIR(st.st_mode):
        raise WriteFailed(f"{where}: it is not a folder")
    if want == FILE and not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a pipe, socket or device"
        raise WriteFailed(f"{where}: it is not a regular file ({kind})")
    return name


def _umask() -> int:
    """The process's umask, read on every write: it may change while a run goes on."""
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def write_failed(path: str | os.PathLike[str], e: OSError) -> WriteFailed:
    """The one-line error for a file that could not be written (a full disk says so)."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return WriteFailed(f"cannot write {shown(path)}: the disk is full ({e.strerror})")
    return WriteFailed(f"cannot write {shown(path)}: {e.strerror or e}")


class _Recorder:
    """The file `fill` writes to: an OSError raised by its write is kept, so that a writer
    that turns it into an error of its own (torch.save: `RuntimeError ... unexpected pos`)
    still fails as the one line that names the path and the reason."""

    def __init__(self, f: BinaryIO) -> None:
        self._f, self.error = f, None

    def write(self, data: Any) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def atomic_write(
    path: str | os.PathLike[str], fill: Callable[[BinaryIO], object], durable: bool = True
) -> None:
    """Replace `path` with what `fill(f)` writes to f; `durable`: fsync file and folder too."""
    path = Path(os.path.realpath(check_target(path)))  # through a symlink to the file it names
    check_target(path)  # what the symlink names: a device renamed over would become a file
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_failed(path, e) from None
    recorder = None
    try:
        with os.fdopen(fd, "wb") as f:
            recorder = _Recorder(f)
            fill(recorder)  # type: ignore[arg-type]
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        error = e if isinstance(e, OSError) else recorder and recorder.error
        if isinstance(e, Exception) and error is not None:
            raise write_failed(path, error) from None
        raise
    if durable:
        try:
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)  # make the rename itself durable
            finally:
                os.close(folder)
        except OSError as e:
            raise write_failed(path, e) from None


def write_text(path: str | os.PathLike[str], text: str, durable: bool = False) -> None:
    """Replace a text file (UTF-8) atomically; bytes a corpus read with --errors
    surrogateescape kept (as lone surrogates) are written back as they were."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8", "surrogateescape")), durable)
