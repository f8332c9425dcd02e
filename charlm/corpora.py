"""Named corpora: `charlm train tinyshakespeare` finds, or fetches once, a well-known text.

A name resolves to a file in this order:

    1. $CHARLM_DATA/<file>                      (a folder you fill yourself; no network)
    2. the cache: $CHARLM_CACHE/<file>, default ~/.cache/charlm/corpora/<file>
    3. download from the public source -> verify -> write to the cache atomically

A path that exists always wins over a name, so a local file called `enwik8` is read as is.
Downloads are checked against a published SHA-256 where one is known, else against the
published size; a download that fails or does not match never lands in the cache.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from charlm.data import BUILTIN
from charlm.errors import CharLMError


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


CORPORA: dict[str, NamedCorpus] = {
    c.name: c
    for c in (
        NamedCorpus(
            name="tinyshakespeare",
            file="tinyshakespeare.txt",
            url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
            size=1_115_394,
            sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            license="public domain (Shakespeare); collected in karpathy/char-rnn (MIT)",
            description="40,000 lines of Shakespeare's plays, the char-rnn classic",
        ),
        NamedCorpus(
            name="enwik8",
            file="enwik8",
            url="http://mattmahoney.net/dc/enwik8.zip",
            size=100_000_000,
            # sha256 of enwik8.zip as recorded in huggingface/datasets' enwik8 dataset_infos.json
            sha256="547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc",
            download_size=36_445_475,
            member="enwik8",
            license="Wikipedia text (CC BY-SA / GFDL)",
            description="first 10^8 bytes of an English Wikipedia XML dump (Hutter Prize)",
        ),
        NamedCorpus(
            name="text8",
            file="text8",
            url="http://mattmahoney.net/dc/text8.zip",
            size=100_000_000,
            # no published SHA-256 found: the zip's published size (31,344,016 bytes) and the
            # text's size are checked instead
            download_size=31_344_016,
            member="text8",
            license="Wikipedia text (CC BY-SA / GFDL)",
            description="Wikipedia (from enwik9) cleaned to lowercase a-z and spaces, 10^8 chars",
        ),
    )
}
BUILTIN_DESCRIPTION = "Python's pydoc help topics, shipped with Python: always offline"
BUILTIN_LICENSE = "PSF License (Python documentation)"


def data_dir() -> Path | None:
    """$CHARLM_DATA: a folder of corpora the user provides (tests and CI use it, never the net)."""
    value = os.environ.get("CHARLM_DATA")
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """Where downloads are kept: $CHARLM_CACHE, else ~/.cache/charlm/corpora."""
    value = os.environ.get("CHARLM_CACHE")
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "charlm" / "corpora"


def local_path(corpus: NamedCorpus) -> Path | None:
    """The corpus's file in $CHARLM_DATA or the cache, if it is there (no network)."""
    folders = [d for d in (data_dir(), cache_dir()) if d is not None]
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
    data = data_dir()
    where = (
        f"{data} or {cache_dir()}" if data else f"{cache_dir()} (or a folder named by $CHARLM_DATA)"
    )
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


def _extract(corpus: NamedCorpus, archive: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as z, z.open(corpus.member) as src, open(dest, "wb") as f:
            while chunk := src.read(1 << 20):
                f.write(chunk)
    except (zipfile.BadZipFile, KeyError) as e:
        raise CharLMError(
            f"the download of {corpus.name} is not a zip holding {corpus.member!r} ({e}); "
            f"nothing was cached"
        ) from None


def fetch(corpus: NamedCorpus) -> Path:
    """Download, verify and cache a corpus; the cache only ever holds complete, checked files."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CharLMError(
            f"cannot create the corpus cache {folder}: {e.strerror} (set CHARLM_CACHE to "
            f"another folder, or CHARLM_DATA to a folder holding {corpus.file})"
        ) from None
    target = folder / corpus.file
    part = Path(tempfile.mkstemp(dir=folder, prefix=f".{corpus.file}.", suffix=".part")[1])
    text = part.with_suffix(".text") if corpus.member else part
    try:
        try:
            download(corpus.url, part, corpus.download_size or corpus.size)
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise CharLMError(
                f"cannot download {corpus.name} ({reason}); to train offline, "
                f"{_where_to_put(corpus)}"
            ) from None
        _verify_download(corpus, part)
        if corpus.member:
            _extract(corpus, part, text)
        if text.stat().st_size != corpus.size:
            raise CharLMError(
                f"{corpus.name} has {text.stat().st_size} bytes after download, expected "
                f"{corpus.size}; nothing was cached"
            )
        os.replace(text, target)  # atomic: readers see no file or the whole, checked file
    finally:
        for leftover in {part, text}:
            leftover.unlink(missing_ok=True)
    return target


def _check_local(corpus: NamedCorpus, path: Path) -> None:
    size = path.stat().st_size
    if size != corpus.size:
        raise CharLMError(
            f"{path} has {size} bytes, but {corpus.name} has {corpus.size} (a partial or "
            f"different file?); remove it to download again, or pass its path to use it as is"
        )


def resolve(name_or_path: str) -> str:
    """The file to read for a corpus argument: an existing path, else a named corpus's file."""
    if name_or_path == BUILTIN or os.path.exists(name_or_path):
        return name_or_path
    corpus = CORPORA.get(name_or_path)
    if corpus is None:
        names = ", ".join([BUILTIN, *CORPORA])
        raise CharLMError(
            f"no such file: {name_or_path} (nor a named corpus: {names}; see `charlm corpora`)"
        )
    path = local_path(corpus)
    if path is None:
        return str(fetch(corpus))
    _check_local(corpus, path)
    return str(path)
