"""Walking into documents what a path or a glob names: folders, compressed files, zip archives.

- A folder is walked recursively in sorted order (same folder, same order, same run). Hidden
  files and folders (.git, .venv, ...) and virtual environments (folders holding pyvenv.cfg)
  are left out unless `hidden`. Symlinks are followed, but each folder and file is read once,
  so a symlink loop ends; FIFOs, sockets and devices are skipped (never opened).
- `.gz`, `.bz2` and `.xz` files are decompressed as streams; a `.zip` is read like a folder of
  its members, each a stream. Nothing is unpacked to disk or held whole in memory.
- --include / --exclude are fnmatch patterns applied to what a walk, a glob or a zip finds: a
  pattern holding `/` is matched against the path below the folder given (`tests/*`), one
  without against the file name (`*.py`); compressed files are matched without their suffix
  (`*.txt` takes `a.txt.gz`); an excluded folder or zip is not entered. A file named on the command
  line is always read.
- A file found by a walk, glob or zip is skipped and counted if its first 8 KB hold a NUL byte
  or are not valid in the encoding (binary), if it is empty, or if it cannot be read. A file
  named on the command line must be readable text: anything else is an error.
- The run's own folder (--out) is never read, however it is reached: a folder or file whose
  resolved path lies inside it, or a folder of its device and inode (a bind mount), is skipped
  and counted when found, and refused when named.
"""

from __future__ import annotations

import bz2
import errno
import fnmatch
import glob
import gzip
import lzma
import os
import stat
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import BinaryIO

from charlm.documents import READ_ERRORS, Document, Opener, decoder, stamp
from charlm.errors import CharLMError, flag
from charlm.storage import ANY, FILE, look, open_read

SNIFF_BYTES = 8192  # the head of a found file looked at to tell text from binary
COMPRESSED: dict[str, Callable[..., BinaryIO]] = {
    ".gz": gzip.open,
    ".bz2": bz2.open,
    ".xz": lzma.open,
}


# what to do about a pipe or a device named as a corpus
TWICE = (
    "charlm reads a corpus twice, so save it to a file first (e.g. `cat > corpus.txt`) and "
    "pass that"
)


def opener(path: str, open_fn: Callable[..., BinaryIO] | None = None) -> Opener:
    """Opens `path` for reading (through `open_fn`: gzip.open, ...), a failure as one line."""

    def open_file() -> BinaryIO:
        if open_fn is None:
            return open_read(path)
        try:
            return open_fn(path, "rb")
        except OSError as e:
            raise CharLMError(f"cannot read {path}: {e.strerror or e}") from None

    return open_file


def file_document(path: str, st: os.stat_result | None = None) -> Document:
    """A regular file as a document, `st` its stat if the caller has looked at it already."""
    st = look(path, FILE, special=TWICE) if st is None else st
    size, mtime, ctime, inode = stamp(st)
    return Document(path, opener(path), os.path.abspath(path), size, mtime,
                    ctime_ns=ctime, inode=inode)  # fmt: skip


@dataclass(frozen=True)
class Selection:
    """Which found files are read: --include, --exclude, --hidden."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    hidden: bool = False
    # folders never read, however they are reached (by their resolved paths, and their device
    # and inode): the run's own --out, whose files change as the run goes on
    away: tuple[str, ...] = ()

    def _hit(self, patterns: tuple[str, ...], rel: str) -> bool:
        name = rel.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatchcase(rel if "/" in p else name, p) for p in patterns)

    def takes(self, rel: str, suffix: str = "") -> bool:
        """Whether a found file (its path below the folder given) is read; a compressed file
        matches with its suffix or without it (`*.txt` and `*.gz` both take `a.txt.gz`)."""
        forms = (rel, rel[: len(rel) - len(suffix)]) if suffix else (rel,)
        if any(self._hit(self.exclude, form) for form in forms):
            return False
        return not self.include or any(self._hit(self.include, form) for form in forms)

    def enters(self, rel: str) -> bool:
        """Whether a found folder is walked."""
        return not self._hit(self.exclude, rel)


class _Zips:
    """One archive open at a time, shared by its members' documents: a zip of thousands of
    members is not parsed again for each one."""

    def __init__(self) -> None:
        self.path: str | None = None
        self.zip: zipfile.ZipFile | None = None

    def opener(self, path: str, member: str, name: str) -> Callable[[], BinaryIO]:
        def open_member() -> BinaryIO:
            try:
                if self.path != path or self.zip is None:
                    if self.zip is not None:
                        self.zip.close()
                    self.zip, self.path = zipfile.ZipFile(path), path
                return self.zip.open(member)
            except (KeyError, *READ_ERRORS) as e:
                raise CharLMError(f"cannot read {name}: {e}") from None

        return open_member


@dataclass
class Found:
    """The documents to read, in order, and what was left out, by reason."""

    documents: list[Document] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        left_out = ", ".join(f"{n:,} {why}" for why, n in sorted(self.skipped.items()))
        return f"skipped: {left_out}" if left_out else "nothing skipped"


class Walk:
    """Collects documents from paths, globs' matches, folders and zips (see the docstring)."""

    def __init__(self, selection: Selection, encoding: str, errors: str) -> None:
        self.sel, self.encoding, self.errors = selection, encoding, errors
        self.found = Found()
        self.seen: set[tuple[int, int]] = set()  # (device, inode) of each folder and file read
        self.zips = _Zips()
        self.away_real = [os.path.realpath(a) for a in selection.away]
        self.away_ids: set[tuple[int, int]] = set()
        for folder in self.away_real:
            try:
                st = os.stat(folder)
            except OSError:  # not made yet: nothing of it can be read
                continue
            self.away_ids.add((st.st_dev, st.st_ino))

    def skip(self, why: str) -> None:
        self.found.skipped[why] += 1

    def away(self, path: str, st: os.stat_result | None = None) -> bool:
        """Whether `path` is, or lies inside, a folder never read (see Selection.away)."""
        if not self.sel.away:
            return False
        if st is not None and (st.st_dev, st.st_ino) in self.away_ids:
            return True
        real = os.path.realpath(path)
        return any(real == a or real.startswith(a.rstrip(os.sep) + os.sep) for a in self.away_real)

    def named(self, path: str) -> None:
        """A path the user named: what it is must be readable text, or it is an error."""
        st = look(path, ANY, special=TWICE)
        if self.away(path, st):
            raise CharLMError(
                f"{path} is the run's own {flag('out')}, or inside it: a run never reads its own "
                f"folder (its files change as it goes on); choose another {flag('out')}"
            )
        self.path(path, st, explicit=True)

    def pattern(self, pattern: str) -> None:
        """The matches of a glob, in sorted order, read like the files a walk finds."""
        matches = sorted(glob.glob(pattern, recursive=True))
        if not matches:
            raise CharLMError(f"no file matches {pattern}")
        for match in matches:
            try:
                st = os.stat(match)
            except OSError as e:
                self.skip("symlink loop" if e.errno == errno.ELOOP else "broken link or unreadable")
                continue
            self.path(match, st, explicit=False, rel=match.replace(os.sep, "/"))

    def path(self, path: str, st: os.stat_result, explicit: bool, rel: str = "") -> None:
        if stat.S_ISDIR(st.st_mode):
            self.walk(path, st)
        elif not stat.S_ISREG(st.st_mode):
            self.skip("special file (pipe, socket, device)")
        else:
            self.file(path, st, rel or os.path.basename(path), explicit)

    def walk(self, top: str, st: os.stat_result) -> None:
        """Depth first, each folder's entries in sorted order; no recursion, so no depth limit."""
        stack: list[tuple[str, str, os.stat_result | None]] = [(top, "", st)]
        while stack:
            path, rel, st = stack.pop()
            if st is None:  # an entry of a folder: stat it (following symlinks)
                try:
                    st = os.stat(path)
                except OSError as e:
                    loop = e.errno == errno.ELOOP
                    self.skip("symlink loop" if loop else "broken link or unreadable")
                    continue
            if not stat.S_ISDIR(st.st_mode):
                if stat.S_ISREG(st.st_mode):
                    self.file(path, st, rel, explicit=False)
                else:
                    self.skip("special file (pipe, socket, device)")
                continue
            if (st.st_dev, st.st_ino) in self.seen:
                self.skip("folder seen before (symlink loop)")
                continue
            self.seen.add((st.st_dev, st.st_ino))
            if self.away(path, st):  # its files change as the run goes on
                self.skip("run folder (--out)")
                continue
            if rel and not self.sel.hidden and os.path.isfile(os.path.join(path, "pyvenv.cfg")):
                self.skip("virtual environment")
                continue
            stack.extend(reversed(self.entries(path, rel)))

    def entries(self, path: str, rel: str) -> list[tuple[str, str, None]]:
        """A folder's entries to visit, in sorted order: hidden and excluded ones counted."""
        try:
            names = sorted(os.listdir(path))
        except OSError:
            self.skip("unreadable folder")
            return []
        entries = []
        for name in names:
            sub = f"{rel}/{name}" if rel else name
            child = os.path.join(path, name)
            if name.startswith(".") and not self.sel.hidden:
                self.skip("hidden")
            elif os.path.isdir(child) and not self.sel.enters(sub):
                self.skip("excluded folder")
            else:
                entries.append((child, sub, None))
        return entries

    def file(self, path: str, st: os.stat_result, rel: str, explicit: bool) -> None:
        if not explicit and self.away(path):  # a glob's match, or a symlink, into --out
            self.skip("run folder (--out)")
            return
        if (st.st_dev, st.st_ino) in self.seen:
            self.skip("file seen before")
            return
        self.seen.add((st.st_dev, st.st_ino))
        lower = path.lower()
        if lower.endswith(".zip"):  # like a folder: --exclude can leave it out
            if explicit or self.sel.enters(rel):
                self.archive(path, st, rel, explicit)
            else:
                self.skip("left out by --include/--exclude")
            return
        suffix = next((s for s in COMPRESSED if lower.endswith(s)), "")
        if not explicit and not self.sel.takes(rel, suffix):
            self.skip("left out by --include/--exclude")
            return
        doc = file_document(path, st)
        if suffix:
            doc = replace(doc, open=opener(path, COMPRESSED[suffix]), packed=True)
        self.add(doc, explicit)

    def archive(self, path: str, st: os.stat_result, rel: str, explicit: bool) -> None:
        try:
            with zipfile.ZipFile(path) as z:
                infos = sorted(
                    (i for i in z.infolist() if not i.is_dir()), key=lambda i: i.filename
                )
        except (zipfile.BadZipFile, OSError) as e:
            if explicit:
                raise CharLMError(f"cannot read {path} as a zip archive: {e}") from None
            self.skip("unreadable or corrupt")
            return
        for info in infos:
            member = info.filename
            parts = member.split("/")
            if not self.sel.hidden and any(p.startswith(".") or p == "__MACOSX" for p in parts):
                self.skip("hidden")
            elif not self.sel.takes(f"{rel}/{member}"):
                self.skip("left out by --include/--exclude")
            elif info.flag_bits & 0x1:
                self.skip("encrypted zip member")
            else:
                name = f"{path}/{member}"
                doc = Document(
                    name, self.zips.opener(path, member, name), os.path.abspath(path),
                    st.st_size, st.st_mtime_ns, member=member, packed=True,
                    ctime_ns=st.st_ctime_ns, inode=st.st_ino,
                )  # fmt: skip
                self.add(doc, explicit=False)

    def add(self, doc: Document, explicit: bool) -> None:
        why = None if explicit else self.sniff(doc)
        if why is None and explicit and not doc.packed and doc.size == 0:
            why = "empty"
        if why:
            self.skip(why)
        else:
            self.found.documents.append(doc)

    def sniff(self, doc: Document) -> str | None:
        """Why a found file is not read (binary, empty, unreadable), or None to read it."""
        try:
            with doc.open() as f:
                head = f.read(SNIFF_BYTES)
        except (CharLMError, *READ_ERRORS):
            return "unreadable or corrupt"
        if not head:
            return "empty"
        try:
            text = decoder(self.encoding, self.errors).decode(head)
        except UnicodeError:  # a decoding error, or utf-16 without its byte-order mark
            return "binary (NUL bytes)" if b"\x00" in head else f"not {self.encoding} (binary?)"
        return "binary (NUL bytes)" if "\x00" in text else None
