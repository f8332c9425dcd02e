r"""What a run reads: files, folders, globs, compressed files and named corpora, as one text.

    charlm train notes.txt src/ 'books/*.txt.gz' --include '*.py' --include '*.txt'

Each argument is, in this order of precedence: a path that exists (file or folder), a glob
pattern (`*`, `?`, `[...]`; `**` spans folders), or a named corpus (NAME, or NAME:PART of the
split its manifest declares). Then:

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

The documents are read one after another as one text with SEPARATOR between two of them, so
the model sees where one file ends and the next begins; the state carries across that boundary
as it carries across lines. Validation is the last --val-fraction of that joined text, which,
the walk being sorted, is the end of the last files; a named corpus's declared split wins.
"""

from __future__ import annotations

import bz2
import codecs
import errno
import fnmatch
import glob
import gzip
import json
import lzma
import os
import re
import stat
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO

from charlm import corpora
from charlm.data import (
    BUILTIN,
    READ_ERRORS,
    Corpus,
    Document,
    file_document,
    load_corpus,
    load_documents,
    not_regular,
    opener,
)
from charlm.errors import CharLMError

SEPARATOR = r"\n"  # as typed on the command line: one newline between two documents
SNIFF_BYTES = 8192  # the head of a found file looked at to tell text from binary
COMPRESSED: dict[str, Callable[..., BinaryIO]] = {
    ".gz": gzip.open,
    ".bz2": bz2.open,
    ".xz": lzma.open,
}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def unescape(text: str) -> str:
    r"""A separator as typed: \n, \t, \r and \\ stand for newline, tab, return and backslash."""
    return re.sub(r"\\([ntr\\])", lambda m: _ESCAPES[m[1]], text)


def as_list(corpus: str | Sequence[str]) -> list[str]:
    """TrainConfig.corpus holds one input as a string, several as a list."""
    return [corpus] if isinstance(corpus, str) else list(corpus)


@dataclass(frozen=True)
class Selection:
    """Which found files are read: --include, --exclude, --hidden."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    hidden: bool = False
    away: tuple[str, ...] = ()  # absolute paths of folders never read: the run's own --out

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


def _has_glob(arg: str) -> bool:
    return any(c in arg for c in "*?[")


@dataclass
class Found:
    """The documents to read, in order, and what was left out, by reason."""

    documents: list[Document] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        left_out = ", ".join(f"{n:,} {why}" for why, n in sorted(self.skipped.items()))
        return f"skipped: {left_out}" if left_out else "nothing skipped"


class _Walk:
    """Collects documents from paths, folders, globs and zips (see the module docstring)."""

    def __init__(self, selection: Selection, encoding: str, errors: str) -> None:
        self.sel, self.encoding, self.errors = selection, encoding, errors
        self.found = Found()
        self.seen: set[tuple[int, int]] = set()  # (device, inode) of each folder and file read
        self.zips = _Zips()

    def skip(self, why: str) -> None:
        self.found.skipped[why] += 1

    def arg(self, arg: str) -> None:
        if os.path.lexists(arg):
            self.path(arg, explicit=True)
            return
        matches = sorted(glob.glob(arg, recursive=True))
        if not matches:
            raise CharLMError(f"no file matches {arg}")
        for match in matches:
            self.path(match, explicit=False, rel=match.replace(os.sep, "/"))

    def path(self, path: str, explicit: bool, rel: str = "") -> None:
        try:
            st = os.stat(path)
        except OSError as e:
            if explicit:
                why = "a symlink loop" if e.errno == errno.ELOOP else e.strerror
                raise CharLMError(f"cannot read {path}: {why}") from None
            self.skip("symlink loop" if e.errno == errno.ELOOP else "broken link or unreadable")
            return
        if stat.S_ISDIR(st.st_mode):
            self.walk(path, st)
        elif not stat.S_ISREG(st.st_mode):
            if explicit:
                raise CharLMError(not_regular(path))
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
            if os.path.abspath(path) in self.sel.away:  # its files change as the run goes on
                self.skip("run folder (--out)")
                continue
            if rel and not self.sel.hidden and os.path.isfile(os.path.join(path, "pyvenv.cfg")):
                self.skip("virtual environment")
                continue
            try:
                names = sorted(os.listdir(path))
            except OSError:
                self.skip("unreadable folder")
                continue
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
            stack.extend(reversed(entries))

    def file(self, path: str, st: os.stat_result, rel: str, explicit: bool) -> None:
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
        doc = file_document(path)
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
            text = codecs.getincrementaldecoder(self.encoding)(self.errors).decode(head)
        except UnicodeDecodeError:
            return "binary (NUL bytes)" if b"\x00" in head else f"not {self.encoding} (binary?)"
        return "binary (NUL bytes)" if "\x00" in text else None


def find(args: Sequence[str], selection: Selection, encoding: str, errors: str) -> Found:
    """The documents the arguments name, in order, and what was skipped (see the docstring)."""
    try:
        codecs.lookup(encoding)
        codecs.lookup_error(errors)
    except LookupError:
        raise CharLMError(f"unknown encoding or error handler: {encoding!r} / {errors!r}") from None
    walk = _Walk(selection, encoding, errors)
    for arg in args:
        walk.arg(arg)
    return walk.found


def _size(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} KB"


def _named(
    arg: str,
    named: tuple[corpora.NamedCorpus, str | None],
    encoding: str,
    errors: str,
    byte_level: bool,
    **load: Any,
) -> Corpus:
    """A named corpus: its file, read byte-level where its unit is the byte, split as declared."""
    spec, part = named
    path = corpora.locate(spec)
    byte_level = byte_level or spec.unit == "byte"
    corpus = load_documents(
        [file_document(path)], os.path.abspath(path), os.path.abspath(path),
        encoding=encoding, errors=errors, byte_level=byte_level, **load,
    )  # fmt: skip
    if spec.split is None:
        return corpus
    unit = "byte" if byte_level else "character"
    if len(corpus.ids) != sum(spec.split):
        raise CharLMError(
            f"{path} has {len(corpus.ids):,} {unit}s, but the split of {spec.name} adds up to "
            f"{sum(spec.split):,} (see {spec.manifest})"
        )
    if part is not None:
        start, stop = spec.part(part)
        return replace(corpus, ids=corpus.ids[start:stop], source=f"{corpus.source} ({part})")
    train, valid, _ = spec.split
    return replace(corpus, declared=(train, train + valid))


def load_inputs(
    args: str | Sequence[str],
    selection: Selection = Selection(),
    *,
    separator: str = "\n",
    encoding: str = "utf-8",
    errors: str = "strict",
    byte_level: bool = False,
    **load: Any,
) -> Corpus:
    """Encode what the arguments name as one corpus (keyword `load` goes to load_documents).

    Corpus.inputs lists each document's identity (path, size, mtime, ctime, inode), which the
    encoded cache and --resume check; Corpus.note says what was read and skipped.
    """
    args = as_list(args) or [BUILTIN]
    if BUILTIN in args and not os.path.exists(BUILTIN):
        if len(args) > 1:
            raise CharLMError(f"{BUILTIN} (the built-in corpus) must be the only input")
        return load_corpus(BUILTIN, byte_level=byte_level)
    paths = []
    for arg in args:
        if os.path.lexists(arg) or _has_glob(arg):
            paths.append(arg)
            continue
        named = corpora.lookup(arg)
        if named is None:
            raise corpora.no_such(arg)
        if named[0].split is not None or named[0].unit == "byte" or named[1] is not None:
            if len(args) > 1:
                raise CharLMError(f"{arg} (a corpus with a declared split) must be the only input")
            return _named(arg, named, encoding, errors, byte_level, **load)
        paths.append(corpora.locate(named[0]))
    found = find(paths, selection, encoding, errors)
    docs = found.documents
    if not docs:
        raise CharLMError(f"no text to read in {' '.join(args)} ({found.summary()})")
    single = len(args) == 1 and len(docs) == 1 and os.path.isfile(paths[0]) and not docs[0].packed
    source = docs[0].path if single else f"{len(docs):,} documents from {' '.join(args)}"
    key = json.dumps([[os.path.abspath(p) for p in paths], *map(list, (selection.include,
                      selection.exclude)), selection.hidden])  # fmt: skip
    corpus = load_documents(
        docs, source, docs[0].path if single else key, separator=separator, encoding=encoding,
        errors=errors, byte_level=byte_level, **load,
    )  # fmt: skip
    if single and not found.skipped:
        return corpus
    on_disk = sum({d.path: d.size for d in docs}.values())  # an archive counts once
    note = f"read {len(docs):,} document(s) ({_size(on_disk)} on disk); {found.summary()}"
    return replace(corpus, note=note)


def changes(before: list[list[Any]], now: list[list[Any]]) -> str:
    """What differs between two lists of document identities, in a few words ('' if nothing)."""
    old = {d[0]: d[1:] for d in before}
    new = {d[0]: d[1:] for d in now}

    def differ(a: list[Any], b: list[Any]) -> bool:  # runs before ctime and inode: what both have
        return a[: len(b)] != b[: len(a)]

    parts = []
    for what, names in (
        ("added", [n for n in new if n not in old]),
        ("removed", [n for n in old if n not in new]),
        ("changed", [n for n in new if n in old and differ(new[n], old[n])]),
    ):
        if names:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            parts.append(f"{len(names)} {what} ({shown})")
    if not parts and [d[0] for d in before] != [d[0] for d in now]:
        parts.append("the same files in another order")
    return "; ".join(parts)
