"""Named corpora: lookup order, verified and atomic caching, offline messages. Never the network:
`charlm.catalog.download` is replaced by fakes that write what a server would have sent."""

from __future__ import annotations

import hashlib
import io
import json
import urllib.error
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from charlm import catalog
from charlm.cli import main
from charlm.errors import CharLMError
from charlm.inputs import load_corpus
from charlm.train import train
from tests.conftest import TEXT, TINY_SHAKESPEARE, resolve, tiny

needs_shakespeare = pytest.mark.skipif(
    not TINY_SHAKESPEARE.exists(),
    reason=f"checks the real tiny Shakespeare, not found at {TINY_SHAKESPEARE}: set "
    f"CHARLM_DATA to a folder holding tinyshakespeare.txt (CI: CHARLM_DATA=../shared/corpora)",
)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty corpus cache ($CHARLM_CACHE/corpora), no $CHARLM_DATA, and a download that
    fails the test if it is called."""
    monkeypatch.setenv("CHARLM_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "corpora"
    monkeypatch.delenv("CHARLM_DATA", raising=False)
    monkeypatch.chdir(tmp_path)

    def no_network(url: str, dest: Path, total: int | None = None) -> None:
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(catalog, "download", no_network)
    return folder


def serve(monkeypatch: pytest.MonkeyPatch, payload: bytes) -> list[str]:
    """Make `download` write `payload`; returns the list of URLs it was asked for."""
    calls: list[str] = []

    def fake(url: str, dest: Path, total: int | None = None) -> None:
        calls.append(url)
        Path(dest).write_bytes(payload)

    monkeypatch.setattr(catalog, "download", fake)
    return calls


def zipped(member: str, text: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(member, text)
    return buf.getvalue()


def register(monkeypatch: pytest.MonkeyPatch, **fields) -> catalog.NamedCorpus:
    """Add a small corpus as a user manifest, so zip handling is tested without 100 MB files."""
    folder = Path.cwd() / "manifests"  # the cache fixture works in tmp_path
    manifest = {
        "url": "https://example.invalid/small.zip", "license": "test", "description": "test",
        "unpack": "zip" if "member" in fields else "none",
    } | fields  # fmt: skip
    folder.mkdir(exist_ok=True)
    (folder / f"{fields['name']}.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("CHARLM_CORPORA", str(folder))
    return catalog.entries()[fields["name"]]


def test_an_existing_path_wins_over_a_name(cache: Path) -> None:
    Path("tinyshakespeare").write_text("my own file")
    assert resolve("tinyshakespeare") == "tinyshakespeare"
    assert resolve("builtin") == "builtin"


def test_unknown_name_is_one_line_naming_the_corpora(cache: Path) -> None:
    with pytest.raises(CharLMError, match="no such file: tinyshakspeare") as e:
        resolve("tinyshakspeare")
    assert "\n" not in str(e.value)
    for name in ("builtin", "tinyshakespeare", "enwik8", "text8"):
        assert name in str(e.value)


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> tuple[catalog.NamedCorpus, bytes]:
    """A registered corpus of generated text with its real size and sha256: the lookup and
    caching logic is tested on it, without the network or a file the checkout lacks."""
    text = TEXT.encode("utf-8")
    entry = register(
        monkeypatch,
        name="small",
        file="small.txt",
        url="https://example.invalid/small.txt",
        size=len(text),
        sha256=hashlib.sha256(text).hexdigest(),
    )
    return entry, text


def test_charlm_data_is_looked_in_first(cache: Path, small, tmp_path: Path, monkeypatch) -> None:
    entry, text = small
    cache.mkdir(parents=True)
    (cache / entry.file).write_text("a stale copy that must not be used")
    data = tmp_path / "data"
    data.mkdir()
    (data / entry.file).write_bytes(text)
    monkeypatch.setenv("CHARLM_DATA", str(data))
    assert Path(resolve("small")) == data / entry.file


def test_download_is_verified_cached_and_not_repeated(
    cache: Path, small, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry, text = small
    calls = serve(monkeypatch, text)
    path = Path(resolve("small"))
    assert path == cache / entry.file
    assert path.read_bytes() == text
    assert calls == [entry.url]
    assert Path(resolve("small")) == path
    assert len(calls) == 1, "a cached corpus was downloaded again"
    assert sorted(p.name for p in cache.iterdir()) == [entry.file]


@needs_shakespeare
def test_the_registry_knows_the_real_tiny_shakespeare(cache: Path, monkeypatch) -> None:
    """Size and sha256 in the registry are those of the real file, which CHARLM_DATA serves."""
    entry = catalog.entries()["tinyshakespeare"]
    data = TINY_SHAKESPEARE.read_bytes()
    assert len(data) == entry.size
    assert hashlib.sha256(data).hexdigest() == entry.sha256
    cache.mkdir(parents=True)
    (cache / "tinyshakespeare.txt").write_text("a stale copy that must not be used")
    monkeypatch.setenv("CHARLM_DATA", str(TINY_SHAKESPEARE.parent))
    assert Path(resolve("tinyshakespeare")) == TINY_SHAKESPEARE


def test_checksum_mismatch_caches_nothing(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    size = catalog.entries()["tinyshakespeare"].size
    serve(monkeypatch, b"x" * size)  # right size, wrong bytes: only the hash can tell
    with pytest.raises(CharLMError, match="sha256") as e:
        resolve("tinyshakespeare")
    assert "nothing was cached" in str(e.value)
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize(
    "failure",
    [urllib.error.URLError("[Errno -3] Temporary failure in name resolution"), TimeoutError()],
)
def test_offline_error_says_where_to_put_the_file(
    cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, failure: Exception
) -> None:
    monkeypatch.setenv("CHARLM_DATA", str(tmp_path / "data"))

    def offline(url: str, dest: Path, total: int | None = None) -> None:
        Path(dest).write_bytes(b"half a fi")  # a partial download must not stay behind
        raise failure

    monkeypatch.setattr(catalog, "download", offline)
    with pytest.raises(CharLMError) as e:
        resolve("tinyshakespeare")
    message = str(e.value)
    assert "\n" not in message
    assert "cannot download tinyshakespeare" in message
    assert catalog.entries()["tinyshakespeare"].url in message
    assert str(tmp_path / "data") in message and str(cache) in message
    assert list(cache.iterdir()) == []


def test_zipped_corpus_is_extracted(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = b"anarchism originated as a term of abuse " * 50
    payload = zipped("small", text)
    register(
        monkeypatch, name="small", file="small", size=len(text), member="small",
        sha256=hashlib.sha256(payload).hexdigest(),
    )  # fmt: skip
    serve(monkeypatch, payload)
    path = Path(resolve("small"))
    assert path.read_bytes() == text
    assert sorted(p.name for p in cache.iterdir()) == ["small"], "the zip must not stay behind"


def test_size_is_checked_when_no_checksum_is_known(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = zipped("small", b"some text")
    register(
        monkeypatch, name="small", file="small", size=9, member="small",
        download_size=len(payload) + 1,
    )  # fmt: skip
    serve(monkeypatch, payload)
    with pytest.raises(CharLMError, match=f"has {len(payload)} bytes, expected"):
        resolve("small")
    assert list(cache.iterdir()) == []


def test_a_zip_without_the_member_is_refused(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = zipped("other", b"some text")
    register(monkeypatch, name="small", file="small", size=9, member="small")
    serve(monkeypatch, payload)
    with pytest.raises(CharLMError, match="not a zip holding 'small'"):
        resolve("small")
    serve(monkeypatch, b"<html>a captive portal</html>")
    with pytest.raises(CharLMError, match="not a zip"):
        resolve("small")
    assert list(cache.iterdir()) == []


def test_a_local_file_of_the_wrong_size_is_refused(cache: Path) -> None:
    cache.mkdir(parents=True)
    (cache / "tinyshakespeare.txt").write_text("truncated")
    with pytest.raises(CharLMError, match="has 9 bytes, but tinyshakespeare has 1115394"):
        resolve("tinyshakespeare")


def test_real_download_function_reads_a_url(tmp_path: Path) -> None:
    """The real `download` (progress bar, chunks), fed from a file:// URL: no network."""
    source = tmp_path / "source.txt"
    source.write_bytes(b"0123456789" * 20_000)
    dest = tmp_path / "dest"
    catalog.download(source.as_uri(), dest, total=None)
    assert dest.read_bytes() == source.read_bytes()


def test_train_resolves_a_name(cache: Path, small, tiny_config, tmp_path, monkeypatch) -> None:
    entry, text = small
    data = tmp_path / "data"
    data.mkdir()
    (data / entry.file).write_bytes(text)
    monkeypatch.setenv("CHARLM_DATA", str(data))
    cfg = tiny(tiny_config, corpus="small", max_steps=2, val_fraction=0.01)
    result = train(cfg, progress_bar=False)
    config = json.loads((result.out / "config.json").read_text())
    assert config["corpus"] == "small"
    assert Path(config["corpus_source"]).resolve() == (data / entry.file).resolve()


def test_load_corpus_reads_a_name_as_train_does(cache: Path, small, tmp_path, monkeypatch) -> None:
    entry, text = small
    data = tmp_path / "data"
    data.mkdir()
    (data / entry.file).write_bytes(text)
    monkeypatch.setenv("CHARLM_DATA", str(data))
    corpus = load_corpus("small")
    assert corpus.vocab.decode(corpus.ids) == text.decode("utf-8")
    with pytest.raises(CharLMError, match="nor a named corpus"):
        load_corpus("no-such-corpus")


def test_corpora_command_lists_them_and_where_they_are(
    cache: Path, small, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry, text = small
    data = tmp_path / "data"
    data.mkdir()
    (data / entry.file).write_bytes(text)
    monkeypatch.setenv("CHARLM_DATA", str(data))
    result = CliRunner().invoke(main, ["corpora"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    by_name = {line.split()[0]: line for line in lines if line and not line.startswith(" ")}
    assert f"local: {data / entry.file}" in by_name["small"]
    assert f"{len(text) / 1e3:.1f} KB" in by_name["small"]
    assert "1.1 MB" in by_name["tinyshakespeare"]
    for name in ("tinyshakespeare", "enwik8", "text8"):
        assert "not local" in by_name[name]
    assert "local" in by_name["builtin"]
    for c in catalog.entries().values():
        assert f"source:  {c.url}" in result.output
        assert f"license: {c.license}" in result.output
    folders = ", ".join(str(d) for d in catalog.manifest_dirs())
    assert lines[-1] == f"manifests: {folders} (add yours: $CHARLM_CORPORA)"
    assert str(Path.cwd() / "manifests") in folders  # the user's, beside the shipped ones


def test_train_cli_unknown_corpus_is_one_line(cache: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["train", "nosuchcorpus", "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: no such file: nosuchcorpus (nor a named corpus: builtin, enwik8, text8, "
        "tinyshakespeare; see `charlm corpora`)"
    ]


def test_offline_without_charlm_data_names_the_cache(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(url: str, dest: Path, total: int | None = None) -> None:
        raise urllib.error.URLError("Network is unreachable")

    monkeypatch.setattr(catalog, "download", offline)
    with pytest.raises(CharLMError, match="Network is unreachable") as e:
        resolve("text8")
    assert "unzip it and put text8 in " + str(cache) in str(e.value)
    assert "$CHARLM_DATA" in str(e.value)
