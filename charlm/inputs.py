r"""What a run reads, resolved in one place: `load_inputs`, `load_corpus`, `charlm train` and
`charlm eval perplexity` all read through `resolve`, so they read the same text, split alike.

    charlm train notes.txt src/ 'books/*.txt.gz' --include '*.py' --include '*.txt'

Each argument is, by one rule of precedence: a path that exists (a file, a folder, a compressed
file, a zip; walk.py says how each is read), else a glob pattern (`*`, `?`, `[...]`; `**` spans
folders), else a name: `builtin` (Python's help topics, always offline) or a named corpus
(NAME, or NAME:PART of the split its manifest declares; catalog.py finds or fetches its file).
So a local file called `enwik8` or `builtin` is read as is. No arguments read `builtin`.

A corpus read whole, with its own rules, must be the only input: `builtin`, and a named corpus
with a declared split (train and validation are its parts; NAME:PART reads one part) or counted
in bytes (read byte-level). Any other named corpus is one file among the others.

The documents are read one after another as one text with --separator between two of them, so
the model sees where one file ends and the next begins; the state carries across that boundary
as it carries across lines. Validation is the last --val-fraction of that joined text, which,
the walk being sorted, is the end of the last files; a named corpus's declared split wins.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from charlm import catalog
from charlm.builtin import BUILTIN, BUILTIN_SOURCE, builtin_text
from charlm.catalog import NamedCorpus
from charlm.config import READING, TrainConfig
from charlm.corpus import IN_MEMORY_BELOW, Corpus, load_documents
from charlm.documents import CHUNK_BYTES, Document, decoder, text_document
from charlm.errors import CharLMError, brief, check_types, expect
from charlm.storage import as_path
from charlm.walk import Selection, Walk, file_document

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
Named = tuple[NamedCorpus, str | None]  # a named corpus, and the part of its split asked for


def unescape(text: str) -> str:
    r"""A separator as typed: \n, \t, \r and \\ stand for newline, tab, return and backslash."""
    return re.sub(r"\\([ntr\\])", lambda m: _ESCAPES[m[1]], text)


def as_list(corpus: str | Sequence[str]) -> list[str]:
    """TrainConfig.corpus holds one input as a string, several as a list; each a path, a glob
    or a name (a NUL byte or no string at all is one line: no system call takes either)."""
    if isinstance(corpus, str | os.PathLike):
        corpus = [corpus]
    elif not isinstance(corpus, list | tuple):
        raise CharLMError(f"a corpus must be a path or a list of paths, got {brief(corpus)}")
    return [as_path(arg, "corpus") for arg in corpus]


@dataclass
class Resolved:
    """What the arguments name: the documents in order, and how to encode and split them."""

    documents: list[Document]
    source: str  # names the inputs in messages and records
    key: str  # names them in the encoded cache
    encoding: str
    errors: str
    byte_level: bool  # asked for, or forced by a corpus counted in bytes
    named: NamedCorpus | None = None  # a named corpus read whole: its declared split applies
    part: str | None = None  # NAME:PART: the part of that split to read
    skipped: Counter[str] = field(default_factory=Counter)  # found files left out, by reason
    note: str = ""  # one line on what was read and skipped, when there is something to say
    identity: list[list[Any]] | None = None  # what --resume checks, for text with no file

    @property
    def split(self) -> tuple[int, int, int] | None:
        """The declared (train, valid, test) lengths, in units, of a named corpus read whole."""
        return self.named.split if self.named is not None else None


def _kind(arg: str) -> str | Named:
    """What an argument is, by the one rule of precedence (see above): "path", "glob",
    BUILTIN, or a named corpus and the part asked for."""
    if os.path.lexists(arg):
        return "path"
    if any(c in arg for c in "*?["):
        return "glob"
    if arg == BUILTIN:
        return BUILTIN
    named = catalog.lookup(arg)
    if named is None:
        raise catalog.no_such(arg)
    return named


def _whole(kind: str | Named) -> bool:
    """Whether an argument is read whole, on its own (see the docstring)."""
    if isinstance(kind, str):
        return kind == BUILTIN
    spec, part = kind
    return spec.split is not None or spec.unit == "byte" or part is not None


def resolve(
    args: str | Sequence[str],
    selection: Selection = Selection(),
    *,
    encoding: str = "utf-8",
    errors: str = "strict",
    byte_level: bool = False,
) -> Resolved:
    """The documents the arguments name and how to read them, by the one rule (see above)."""
    args = as_list(args) or [BUILTIN]
    decoder(encoding, errors)  # an unknown encoding is an error, whatever the input
    kinds = [_kind(arg) for arg in args]
    for arg, kind in zip(args, kinds, strict=True):
        if _whole(kind):
            if len(args) > 1:
                what = "the built-in corpus" if kind == BUILTIN else "a corpus read whole"
                raise CharLMError(f"{arg} ({what}) must be the only input")
            if isinstance(kind, str):
                return _builtin(byte_level)
            return _named_whole(kind, encoding, errors, byte_level)
    return _walked(args, kinds, selection, encoding, errors, byte_level)


def _builtin(byte_level: bool) -> Resolved:
    """The built-in corpus: UTF-8 text held in memory, whatever --encoding says."""
    text = builtin_text().encode("utf-8")
    digest = hashlib.sha256(text).hexdigest()[:16]  # its text changes with Python, and charlm
    doc = text_document(BUILTIN, text)
    return Resolved([doc], BUILTIN_SOURCE, f"{BUILTIN} {digest}", "utf-8", "strict", byte_level,
                    identity=[[BUILTIN, len(text), digest]])  # fmt: skip


def _named_whole(named: Named, encoding: str, errors: str, byte_level: bool) -> Resolved:
    """A named corpus whose declared split or unit rules how it is read: its file, alone."""
    spec, part = named
    doc = file_document(catalog.locate(spec))
    byte_level = byte_level or spec.unit == "byte"
    return Resolved([doc], doc.path, doc.path, encoding, errors, byte_level, spec, part)


def _walked(
    args: list[str],
    kinds: list[str | Named],
    selection: Selection,
    encoding: str,
    errors: str,
    byte_level: bool,
) -> Resolved:
    """Paths, globs' matches and named corpora's files, walked into documents in order."""
    walk = Walk(selection, encoding, errors)
    paths = []
    for arg, kind in zip(args, kinds, strict=True):
        if kind == "glob":
            walk.pattern(arg)
            paths.append(arg)
            continue
        path = arg if kind == "path" else catalog.locate(kind[0])  # a plain named corpus's file
        walk.named(path)
        paths.append(path)
    found = walk.found
    docs = found.documents
    if not docs:
        alone = len(args) == 1 and os.path.isfile(paths[0]) and found.skipped == {"empty": 1}
        why = f": {args[0]} is empty" if alone else f" in {' '.join(args)} ({found.summary()})"
        raise CharLMError(f"no text to read{why}")
    if len(args) == 1 and len(docs) == 1 and os.path.isfile(paths[0]) and not docs[0].packed:
        return Resolved(docs, docs[0].path, docs[0].path, encoding, errors, byte_level)  # a file
    source = f"{len(docs):,} documents from {' '.join(args)}"
    key = json.dumps([[os.path.abspath(p) for p in paths], *map(list, (selection.include,
                      selection.exclude)), selection.hidden])  # fmt: skip
    on_disk = sum({d.path: d.size for d in docs}.values())  # an archive counts once
    note = f"read {len(docs):,} document(s) ({_size(on_disk)} on disk); {found.summary()}"
    return Resolved(docs, source, key, encoding, errors, byte_level, skipped=found.skipped,
                    note=note)  # fmt: skip


def _size(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} KB"


def _split(corpus: Corpus, what: Resolved) -> Corpus:
    """A named corpus's declared split: one part of it (NAME:PART), or train and validation."""
    split, spec = what.split, what.named
    if split is None or spec is None:
        return corpus
    if len(corpus.ids) != sum(split):
        unit = "byte" if what.byte_level else "character"
        raise CharLMError(
            f"{what.source} has {len(corpus.ids):,} {unit}s, but the split of {spec.name} adds "
            f"up to {sum(split):,} (see {spec.manifest})"
        )
    if what.part is not None:
        start, stop = spec.part(what.part)
        return replace(corpus, ids=corpus.ids[start:stop], source=f"{corpus.source} ({what.part})")
    train, valid, _ = split
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
    for name, value, kind in (
        ("separator", separator, "str"),
        ("encoding", encoding, "str"),
        ("errors", errors, "str"),
        ("byte_level", byte_level, "bool"),
    ):
        expect(name, value, kind)  # fmt: skip
    for name, least in (("chunk_size", 1), ("in_memory_below", 0)):
        if name in load:
            expect(name, load[name], "int")
            if load[name] < least:
                raise CharLMError(f"{name} must be >= {least}, got {brief(load[name])}")
    what = resolve(args, selection, encoding=encoding, errors=errors, byte_level=byte_level)
    corpus = load_documents(
        what.documents, what.source, what.key, separator=separator, encoding=what.encoding,
        errors=what.errors, byte_level=what.byte_level, **load,
    )  # fmt: skip
    inputs = corpus.inputs if what.identity is None else what.identity
    return _split(replace(corpus, note=what.note, inputs=inputs), what)


def load_corpus(
    path: str | os.PathLike[str],
    encoding: str = "utf-8",
    errors: str = "strict",
    *,
    chunk_size: int = CHUNK_BYTES,
    in_memory_below: int = IN_MEMORY_BELOW,
    cache: str | os.PathLike[str] | None = None,
    byte_level: bool = False,
) -> Corpus:
    """Read and encode one input as `charlm train` reads it: a file, a folder, a glob, a
    compressed file or zip, a named corpus (NAME, NAME:PART; `charlm corpora`) or `builtin`.

    Inputs of `in_memory_below` bytes or more are encoded once into the cache folder (`cache`,
    else `cache_dir("encoded")`) and opened from there as a read-only np.memmap on later runs.
    """
    return load_inputs(
        [path], encoding=encoding, errors=errors, byte_level=byte_level,
        chunk_size=chunk_size, in_memory_below=in_memory_below, cache=cache,
    )  # fmt: skip


def changes(before: list[list[Any]], now: list[list[Any]]) -> str:
    """What differs between two lists of document identities, in a few words ('' if nothing)."""
    old = {d[0]: d[1:] for d in before}
    new = {d[0]: d[1:] for d in now}
    if BUILTIN in new and old.get(BUILTIN) != new[BUILTIN]:  # older runs recorded none
        return (
            "the built-in corpus is not the text the run read (Python's help topics differ "
            "from one Python to another, and charlm now leaves out their table borders and "
            "rule lines)"
        )

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


_TRAINING = {f.name: f.default for f in fields(TrainConfig)}


@dataclass(frozen=True)
class Reading:
    """How the scored inputs (and --dynamic-rms's text) are read: as `charlm train` reads its
    corpus, with TrainConfig's settings of the same names and defaults."""

    encoding: str = _TRAINING["encoding"]
    errors: str = _TRAINING["errors"]
    include: tuple[str, ...] = _TRAINING["include"]
    exclude: tuple[str, ...] = _TRAINING["exclude"]
    hidden: bool = _TRAINING["hidden"]
    separator: str = _TRAINING["separator"]  # as typed: \n, \t stand for newline, tab

    def __post_init__(self) -> None:
        check_types(self)
        decoder(self.encoding, self.errors)  # a text encoding, a known handler

    @classmethod
    def of(cls, cfg: TrainConfig) -> Reading:
        """How the run `cfg` describes reads its corpus."""
        return cls(**{name: getattr(cfg, name) for name in READING})


def read(
    args: str | Sequence[str],
    reading: Reading,
    *,
    byte_level: bool = False,
    away: Sequence[str] = (),
) -> Corpus:
    """What a run trains on and an evaluation scores: `args` read as `reading` says, never
    from the folders `away` (a run's own --out: its files change as it goes on)."""
    selection = Selection(
        tuple(reading.include), tuple(reading.exclude), reading.hidden, tuple(away)
    )
    return load_inputs(
        args, selection, separator=unescape(reading.separator), encoding=reading.encoding,
        errors=reading.errors, byte_level=byte_level,
    )  # fmt: skip
