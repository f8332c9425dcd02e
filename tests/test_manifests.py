"""Named corpora as manifests: checked one field at a time, users' folder, declared splits, the
byte-level mode, and the wheel carrying them. Never the network: stand-ins live in tmp_path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from charlm import catalog
from charlm.checkpoint import load_model
from charlm.cli import main
from charlm.errors import CharLMError
from charlm.evaluate import score
from charlm.inputs import load_inputs
from charlm.train import train
from charlm.vocab import Vocab
from tests.conftest import ROOT, epoch_rows, resolve, tiny

GOOD = {
    "name": "mini8",
    "description": "a stand-in for enwik8",
    "url": "https://example.invalid/mini8.zip",
    "file": "mini8",
    "size": 3000,
    "license": "test",
    "unpack": "zip",
    "member": "mini8",
    "unit": "byte",
    "split": {"train": 2400, "valid": 300, "test": 300},
}
# UTF-8 with 1-, 2- and 3-byte characters: bytes and characters differ in number
STAND_IN = ("<page><title>Café 日本</title> text of a page. " * 80).encode()[: GOOD["size"]]


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$CHARLM_CORPORA (empty), $CHARLM_DATA holding the stand-in, a cache; no network."""
    folder = tmp_path / "manifests"
    folder.mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mini8").write_bytes(STAND_IN)
    monkeypatch.setenv("CHARLM_CORPORA", str(folder))
    monkeypatch.setenv("CHARLM_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("CHARLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)

    def no_network(url: str, dest: Path, total: int | None = None) -> None:
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(catalog, "download", no_network)
    return folder


def add(folder: Path, manifest: dict, file: str = "mini8.json") -> Path:
    path = folder / file
    path.write_text(json.dumps(manifest))
    return path


def test_the_shipped_manifests() -> None:
    shipped = {p.stem for p in (ROOT / "corpora").glob("*.json")}
    assert shipped == {"tinyshakespeare", "enwik8", "text8"}
    found = catalog.entries()
    assert set(found) >= shipped
    assert found["enwik8"].unit == "byte" and found["text8"].unit == "char"
    for name in ("enwik8", "text8"):
        assert found[name].split == (90_000_000, 5_000_000, 5_000_000)
        assert found[name].part("test") == (95_000_000, 100_000_000)
    assert found["tinyshakespeare"].split is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"size": "3000"}, "size"),
        ({"size": True}, "size"),
        ({"size": 0}, "size"),
        ({"name": "has:colon"}, "name"),
        ({"name": "builtin"}, "name"),
        ({"file": "../escape"}, "file"),
        ({"sha256": "ABC"}, "sha256"),
        ({"unpack": "tar"}, "unpack"),
        ({"unpack": "none"}, "member"),
        ({"unit": "word"}, "unit"),
        ({"split": [1, 2, 3]}, "split"),
        ({"split": {"train": 2400, "valid": 300}}, "split"),
        ({"split": {"train": 2400, "valid": -1, "test": 300}}, "split.valid"),
        ({"split": {"train": 2400, "valid": 300, "test": 301}}, "split"),  # 3001 bytes != size
        ({"licence": "typo"}, "licence"),
        ({"description": ""}, "description"),
        ({"download_size": 1.5}, "download_size"),
    ],
)
def test_a_malformed_manifest_is_one_line_naming_file_and_field(
    user: Path, change: dict, field: str
) -> None:
    path = add(user, GOOD | change)
    result = CliRunner().invoke(main, ["corpora"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [result.output.strip()]
    assert result.output.startswith(f"error: corpus manifest {path}: field {field!r} ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "is not valid JSON"),
        ("[]", "must hold one JSON object"),
        ("\xff", "cannot read corpus manifest"),
    ],
)
def test_a_manifest_that_is_not_an_object(user: Path, text: str, message: str) -> None:
    (user / "bad.json").write_text(text, encoding="latin-1")
    with pytest.raises(CharLMError, match=message) as e:
        catalog.entries()
    assert str(user / "bad.json") in str(e.value)


def test_missing_field_and_duplicate_names(user: Path) -> None:
    path = add(user, {k: v for k, v in GOOD.items() if k != "license"})
    with pytest.raises(CharLMError, match=f"manifest {path}: field 'license' is missing"):
        catalog.entries()
    add(user, GOOD)
    add(user, GOOD, "again.json")
    with pytest.raises(CharLMError, match=r"again\.json and .*mini8\.json both name 'mini8'"):
        catalog.entries()


def test_a_users_manifest_replaces_a_shipped_one_and_a_path_wins(user: Path) -> None:
    add(user, GOOD | {"name": "enwik8", "file": "mini8"}, "enwik8.json")
    assert catalog.entries()["enwik8"].size == GOOD["size"]
    assert resolve("enwik8") == str(user.parent / "data" / "mini8")
    Path("enwik8").write_text("a file of my own")  # an existing path always wins over a name
    assert load_inputs(["enwik8"]).vocab.decode(load_inputs(["enwik8"]).ids) == "a file of my own"


def test_byte_level_vocabulary() -> None:
    vocab = Vocab.of_bytes()
    assert vocab.is_bytes and len(vocab) == 256 and not Vocab(sorted(set("abc"))).is_bytes
    text = "naïve 日本\n"
    np.testing.assert_array_equal(vocab.encode(text), np.frombuffer(text.encode(), np.uint8))
    assert vocab.decode(vocab.encode(text)) == text
    assert vocab.decode(vocab.encode(text)[:-3]) == "naïve 日\ufffd"  # a cut character


def test_byte_level_reads_any_file(tmp_path: Path) -> None:
    raw = bytes(range(256)) * 3 + "é".encode("latin-1")
    (tmp_path / "any.bin").write_bytes(raw)
    with pytest.raises(CharLMError, match="not valid utf-8: bad byte 0x80 at byte offset 128"):
        load_inputs([str(tmp_path / "any.bin")])
    corpus = load_inputs([str(tmp_path / "any.bin")], byte_level=True)
    assert corpus.vocab.is_bytes
    np.testing.assert_array_equal(corpus.ids, np.frombuffer(raw, np.uint8))


def test_the_declared_split_and_its_parts(user: Path) -> None:
    add(user, GOOD)
    corpus = load_inputs(["mini8"])
    assert corpus.vocab.is_bytes  # the manifest's unit is the byte
    train_ids, val_ids = corpus.split(0.5)  # the declared split wins over --val-fraction
    raw = np.frombuffer(STAND_IN, np.uint8)
    np.testing.assert_array_equal(train_ids, raw[:2400])
    np.testing.assert_array_equal(val_ids, raw[2400:2700])
    np.testing.assert_array_equal(load_inputs(["mini8:test"]).ids, raw[2700:])
    np.testing.assert_array_equal(load_inputs(["mini8:valid"]).ids, raw[2400:2700])
    with pytest.raises(CharLMError, match="the part must be one of train, valid, test"):
        load_inputs(["mini8:tests"])
    with pytest.raises(CharLMError, match="must be the only input"):
        load_inputs(["mini8", "mini8"])
    (user.parent / "data" / "mini8").write_bytes(STAND_IN[:-1])
    with pytest.raises(CharLMError, match="has 2999 bytes, but mini8 has 3000"):
        load_inputs(["mini8"])


def test_a_character_split_counts_characters(user: Path) -> None:
    text = STAND_IN.decode("utf-8", "ignore")
    (user.parent / "data" / "chars").write_text(text, encoding="utf-8")
    n = len(text)
    split = {"train": n - 200, "valid": 100, "test": 100}
    chars = {"name": "chars", "file": "chars", "unit": "char", "size": len(text.encode())}
    add(user, GOOD | chars | {"split": split}, "chars.json")
    corpus = load_inputs(["chars:test"])
    assert not corpus.vocab.is_bytes and corpus.vocab.decode(corpus.ids) == text[-100:]


def test_train_on_the_split_and_score_the_test_part(user: Path, tiny_config, tmp_path) -> None:
    add(user, GOOD)
    cfg = tiny(tiny_config, corpus="mini8", max_steps=3, out=str(tmp_path / "run"))
    result = train(cfg, progress_bar=False)
    rows = epoch_rows(result.out)
    model, vocab, _ = load_model(result.out, "cpu")
    assert vocab.is_bytes
    # validation scored the declared valid part: the same number as scoring it directly
    valid = np.frombuffer(STAND_IN[2400:2700], np.uint8)
    from charlm.evaluate import nll_sum

    nll, count = nll_sum(model, valid, cfg.seq_len, cfg.batch_size)
    assert rows[-1]["val_loss"] == pytest.approx(nll / count, rel=1e-6)
    out = CliRunner().invoke(
        main, ["eval", "perplexity", "mini8:test", "--checkpoint", str(result.out)]
    )
    assert out.exit_code == 0, out.output
    expected = score(model, np.frombuffer(STAND_IN[2700:], np.uint8), seq_len=256)
    assert f"bits per byte  {expected.bits_per_char:.4f}" in out.output
    assert "bytes scored   299" in out.output
    # a character-level model cannot be put beside byte figures
    char_cfg = tiny(tiny_config, max_steps=1, out=str(tmp_path / "chars"))
    train(char_cfg, progress_bar=False)
    out = CliRunner().invoke(main, ["eval", "perplexity", "mini8:test", "--checkpoint",
                                    char_cfg.out])  # fmt: skip
    assert out.exit_code == 1 and "train one with --byte-level" in out.output


def test_the_wheel_carries_the_manifests(tmp_path: Path) -> None:
    """Build the wheel offline, install it without dependencies into a fresh venv that sees
    this one's packages, and list the corpora from another folder."""
    src = tmp_path / "src"  # a copy: the build leaves nothing in the checkout
    for folder in ("charlm", "corpora"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheels, src],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = wheels.glob("charlm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for corpus in ("tinyshakespeare", "enwik8", "text8"):
        assert f"charlm/manifests/{corpus}.json" in names
    assert "charlm/inputs.py" in names and not any(n.startswith("tests/") for n in names)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # the dependencies (torch, numpy, click, tqdm) come from this venv; charlm from the wheel
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [*pip, "--python", python, "install", "-q", "--no-deps", "--no-index", wheel],
        check=True, capture_output=True,
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "mine.json").write_text(json.dumps(GOOD | {"name": "mine"}))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CHARLM_DATA")}
    env["CHARLM_CORPORA"] = str(elsewhere)
    listed = subprocess.run(
        [python, "-c", "import charlm, charlm.cli; print(charlm.__file__); charlm.cli.main()",
         "corpora"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].startswith(site)  # the installed copy, not this checkout
    assert {"enwik8", "text8", "tinyshakespeare", "mine", "builtin"} <= {
        line.split()[0] for line in lines[1:] if line and not line.startswith((" ", "looked"))
        and not line.startswith("manifests")
    }  # fmt: skip
    assert f"manifests: {site}/charlm/manifests, {elsewhere}" in listed.stdout
