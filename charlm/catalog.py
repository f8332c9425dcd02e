"""The corpora a run can name: `charlm train enwik8` finds, or fetches once, a well-known text;
`builtin` is the offline one that ships with Python.

Each named corpus is one JSON manifest, read at run time: first the project's corpora/ folder
(shipped inside the wheel as charlm/manifests/), then the folder named by $CHARLM_CORPORA, where
users drop their own (a name there replaces a shipped one). A manifest holds:

    name, description, url, file, size, license      (size: bytes of the text file)
    unpack        "none": the download is the text; "zip": the text is its `member`
    sha256        of the download, checked when known; else download_size (bytes) is checked
    unit          "char", or "byte" where the literature counts bytes (charlm then reads bytes)
    split         {"train": N, "valid": N, "test": N}: consecutive parts from the start, in units
    notes         free text

A name's file is found in this order:

    1. $CHARLM_DATA/<file>                      (a folder you fill yourself; no network)
    2. the cache: storage.cache_dir("corpora")/<file>, default ~/.cache/charlm/corpora/<file>
    3. download from the public source -> verify -> write to the cache atomically

`NAME:PART` (enwik8:test) names one part of a declared split. A download that fails or does not
match never lands in the cache. Which argument is a name and which a path is inputs.py's rule.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tqdm.auto import tqdm

from charlm.builtin import BUILTIN
from charlm.errors import CharLMError, brief
from charlm.schema import Int, Invalid, Record, Str, Test, parse_json
from charlm.storage import atomic_write, cache_dir, read_text, shown

MANIFESTS_ENV = "CHARLM_CORPORA"
PARTS = ("train", "valid", "test")
UNITS = ("char", "byte")


@dataclass(frozen=True)
class NamedCorpus:
    """A public corpus: where it comes from and how to tell the download is the right one."""

    name: str
    file: str  # the text's file name in $CHARLM_DATA and in the cache
    url: str
    size: int  # bytes of the text file
    license: str
    description: str
    sha256: str | None = None  # of the downloaded file (the zip, for zipped corpora)
    download_size: int | None = None  # bytes of the downloaded file, checked when no sha256
    member: str | None = None  # the text's name inside the zip, for zipped corpora
    unit: str = "char"  # what the literature counts: "char", or "byte" (read byte-level)
    split: tuple[int, int, int] | None = None  # (train, valid, test) lengths in units
    notes: str = ""
    manifest: str = ""  # the file it was read from

    def part(self, name: str) -> tuple[int, int]:
        """(start, stop) of a part of the declared split, in units."""
        assert self.split is not None
        k = PARTS.index(name)
        start = sum(self.split[:k])
        return start, start + self.split[k]


def _shipped_dir() -> Path:
    """The manifests that come with charlm: in the wheel, or in the checkout's corpora/."""
    here = Path(__file__).resolve().parent
    installed = here / "manifests"
    return installed if installed.is_dir() else here.parent / "corpora"


def manifest_dirs() -> list[Path]:
    """Where manifests are read from, in order (a later one's name replaces an earlier one)."""
    user = os.environ.get(MANIFESTS_ENV)
    return [_shipped_dir(), *([Path(user).expanduser()] if user else [])]


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
MANIFEST_BYTES = 1 << 20  # a manifest is a few hundred bytes


def _filled(text: str) -> str | None:
    return None if text.strip() else f"must be a non-empty string, got {text!r}"


def _all_parts(split: dict[str, int]) -> str | None:
    if sorted(split) == sorted(PARTS):
        return None
    return f"must be an object with keys train, valid, test; got {brief(split)}"


_TEXT = Test(Str(), _filled)
# every field of a manifest, its type and range; what one field says about another is checked
# after (parse_manifest)
MANIFEST = Record(
    {
        "name": _TEXT,
        "description": _TEXT,
        "url": _TEXT,
        "file": _TEXT,
        "size": Int(1),
        "license": _TEXT,
        "unpack": Str(("none", "zip")),
    },
    {
        "sha256": Test(Str(), lambda h: None if re.fullmatch(r"[0-9a-f]{64}", h) else
                       f"must be 64 lowercase hex digits, got {h!r}"),
        "download_size": Int(1),
        "member": _TEXT,
        "unit": Str(UNITS),
        "split": Test(Record({}, {"train": Int(2), "valid": Int(0), "test": Int(0)}), _all_parts),
        "notes": Str(),
    },
)  # fmt: skip


def parse_manifest(path: Path) -> NamedCorpus:
    """Read and check one manifest; any flaw is one line naming the file and the field."""
    source = f"corpus manifest {shown(path)}"
    data = parse_json(read_text(path, "corpus manifest", MANIFEST_BYTES), source)
    if not isinstance(data, dict):
        raise CharLMError(f"{source} must hold one JSON object")
    try:
        data = MANIFEST.check(data, "")
    except Invalid as e:
        raise CharLMError(f"{source}: field {e.where!r} {e.why}") from None
    bad = functools.partial(_bad, path)
    name, file, unit, member = (
        data["name"],
        data["file"],
        data.get("unit", "char"),
        data.get("member"),
    )
    if not _NAME.fullmatch(name) or name == BUILTIN:
        raise bad("name", f"must be letters, digits and . _ + - (not {BUILTIN!r}), got {name!r}")
    if Path(file).name != file or file in (".", ".."):
        raise bad("file", f"must be a plain file name, got {file!r}")
    if (data["unpack"] == "zip") != (member is not None):
        raise bad("member", "is needed with unpack 'zip', and only then")
    split = data.get("split")
    lengths = None if split is None else tuple(split[p] for p in PARTS)
    if unit == "byte" and lengths is not None and sum(lengths) != data["size"]:
        raise bad("split", f"adds up to {sum(lengths)} bytes, but size is {data['size']}")
    return NamedCorpus(
        name=name, file=file, url=data["url"], size=data["size"], license=data["license"],
        description=data["description"], sha256=data.get("sha256"),
        download_size=data.get("download_size"), member=member, unit=unit, split=lengths,
        notes=data.get("notes", ""), manifest=str(path),
    )  # fmt: skip


def _bad(path: Path, field: str, why: str) -> CharLMError:
    return CharLMError(f"corpus manifest {shown(path)}: field {field!r} {why}")


def entries() -> dict[str, NamedCorpus]:
    """Every named corpus, by name, from the manifests (read afresh: the folder may change)."""
    found: dict[str, NamedCorpus] = {}
    for folder in manifest_dirs():
        if not folder.is_dir():
            if folder != _shipped_dir():
                raise CharLMError(f"${MANIFESTS_ENV} is {folder}, which is not a folder")
            continue
        here: dict[str, NamedCorpus] = {}
        for path in sorted(folder.glob("*.json")):
            corpus = parse_manifest(path)
            if corpus.name in here:
                raise CharLMError(
                    f"corpus manifests {here[corpus.name].manifest} and {path} both name "
                    f"{corpus.name!r}"
                )
            here[corpus.name] = corpus
        found.update(here)
    return found


def lookup(arg: str) -> tuple[NamedCorpus, str | None] | None:
    """(corpus, part or None) for NAME or NAME:PART, None if `arg` names no corpus."""
    name, _, part = arg.partition(":")
    corpus = entries().get(name)
    if corpus is None:
        return None
    if not part:
        return corpus, None
    if part not in PARTS:
        raise CharLMError(f"{arg}: the part must be one of {', '.join(PARTS)}, got {part!r}")
    if corpus.split is None:
        raise CharLMError(f"{arg}: {name} declares no split (see {corpus.manifest})")
    return corpus, part


def data_dir() -> Path | None:
    """$CHARLM_DATA: a folder of corpora the user provides (tests and CI use it, never the net)."""
    value = os.environ.get("CHARLM_DATA")
    return Path(value).expanduser() if value else None


def local_path(corpus: NamedCorpus) -> Path | None:
    """The corpus's file in $CHARLM_DATA or the cache, if it is there (no network)."""
    folders = [d for d in (data_dir(), cache_dir("corpora")) if d is not None]
    for folder in folders:
        path = folder / corpus.file
        if path.is_file():
            return path
    return None


def download(url: str, dest: Path, total: int | None = None) -> None:
    """Fetch `url` into `dest` with a progress bar on stderr (tests replace this function)."""
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as f:
        length = response.headers.get("Content-Length")
        bar = tqdm(
            total=int(length) if length else total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"downloading {url.rsplit('/', 1)[-1]}",
            leave=False,
        )
        with bar:
            while chunk := response.read(1 << 16):
                f.write(chunk)
                bar.update(len(chunk))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _where_to_put(corpus: NamedCorpus) -> str:
    data, cache = data_dir(), cache_dir("corpora")
    where = f"{data} or {cache}" if data else f"{cache} (or a folder named by $CHARLM_DATA)"
    unzip = ", unzip it" if corpus.member else ""
    return f"download {corpus.url}{unzip} and put {corpus.file} in {where}"


def _verify_download(corpus: NamedCorpus, path: Path) -> None:
    if corpus.sha256 is not None:
        got = _sha256(path)
        if got != corpus.sha256:
            raise CharLMError(
                f"the download of {corpus.name} from {corpus.url} has sha256 {got}, expected "
                f"{corpus.sha256}; nothing was cached (try again, or {_where_to_put(corpus)})"
            )
    elif corpus.download_size is not None and path.stat().st_size != corpus.download_size:
        raise CharLMError(
            f"the download of {corpus.name} from {corpus.url} has {path.stat().st_size} bytes, "
            f"expected {corpus.download_size}; nothing was cached"
        )


def _text_of(corpus: NamedCorpus, download: Path, f: BinaryIO) -> None:
    """Write the corpus's text into f: the download itself, or its zip member."""
    try:
        with contextlib.ExitStack() as stack:
            if corpus.member:
                archive = stack.enter_context(zipfile.ZipFile(download))
                src = stack.enter_context(archive.open(corpus.member))
            else:
                src = stack.enter_context(open(download, "rb"))
            shutil.copyfileobj(src, f, 1 << 20)
    except (zipfile.BadZipFile, KeyError) as e:
        raise CharLMError(
            f"the download of {corpus.name} is not a zip holding {corpus.member!r} ({e}); "
            f"nothing was cached"
        ) from None
    if f.tell() != corpus.size:
        raise CharLMError(
            f"{corpus.name} has {f.tell()} bytes after download, expected {corpus.size}; "
            f"nothing was cached"
        )


def fetch(corpus: NamedCorpus) -> Path:
    """Download, verify and cache a corpus; the cache only ever holds complete, checked files."""
    folder = cache_dir("corpora")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CharLMError(
            f"cannot create the corpus cache {folder}: {e.strerror} (set CHARLM_CACHE to "
            f"another folder, or CHARLM_DATA to a folder holding {corpus.file})"
        ) from None
    target = folder / corpus.file
    # the download lives in a temporary folder, removed whatever happens; the checked text is
    # then written into the cache atomically
    with tempfile.TemporaryDirectory(dir=folder, prefix=f".{corpus.file}.") as tmp:
        part = Path(tmp) / "download"
        try:
            download(corpus.url, part, corpus.download_size or corpus.size)
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise CharLMError(
                f"cannot download {corpus.name} ({reason}); to train offline, "
                f"{_where_to_put(corpus)}"
            ) from None
        _verify_download(corpus, part)
        atomic_write(target, lambda f: _text_of(corpus, part, f))
    return target


def _check_local(corpus: NamedCorpus, path: Path) -> None:
    size = path.stat().st_size
    if size != corpus.size:
        raise CharLMError(
            f"{path} has {size} bytes, but {corpus.name} has {corpus.size} (a partial or "
            f"different file?); remove it to download again, or pass its path to use it as is"
        )


def locate(corpus: NamedCorpus) -> str:
    """The corpus's file: local if it is there (and of the right size), else downloaded."""
    path = local_path(corpus)
    if path is None:
        return str(fetch(corpus))
    _check_local(corpus, path)
    return str(path)


def no_such(arg: str) -> CharLMError:
    """The error for an argument that is neither a path nor a name, listing the names."""
    names = ", ".join([BUILTIN, *entries()])
    return CharLMError(f"no such file: {arg} (nor a named corpus: {names}; see `charlm corpora`)")
