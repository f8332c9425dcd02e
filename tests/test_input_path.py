"""One input path: every kind of input reads the same text, split alike, whichever way a run
reads it: `load_corpus`, `load_inputs`, what `charlm train` reads (`train.read_corpus`, from a
TrainConfig built as the command builds it) and what `charlm eval perplexity` reads
(`report.read_scored_text`, and the command itself). The expected texts and splits are built
here by hand, from the bytes written, not by charlm."""

from __future__ import annotations

import gzip
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from charlm import catalog
from charlm.checkpoint import load_model
from charlm.cli import main
from charlm.config import TrainConfig
from charlm.evaluate import score
from charlm.inputs import Reading, Selection, load_corpus, load_inputs
from charlm.report import read_scored_text
from charlm.train import read_corpus, train
from charlm.vocab import Vocab

VAL_FRACTION = 0.25
FILE = "the first file, é\n"
DOCS = {"docs/a.md": "ay\n", "docs/b.txt": "bee\n", "docs/c/d.txt": "dee\n"}  # walk order
GZ = "gzipped text\n"
ZIPPED = {"z/1.txt": "zip one\n", "z/2.txt": "zip two\n"}
PLAIN = "a plain named corpus, no split\n" * 3
TOY = "Café 日本, a toy text. " * 10  # a declared split counted in characters
TOY8 = ("naïve 日本 bytes. " * 10).encode()  # ... and one counted in bytes: more bytes than chars


def builtin() -> str:
    """Python's help topics, as the built-in corpus is defined (builtin.py): joined, cleaned."""
    from pydoc_data.topics import topics

    from charlm.builtin import clean

    return clean("\n\n".join(topics[key] for key in sorted(topics)))


def manifest(name: str, size: int, unit: str, split: tuple[int, int, int] | None) -> dict:
    entry = {
        "name": name, "description": "test", "url": f"https://example.invalid/{name}",
        "file": f"{name}.txt", "size": size, "license": "test", "unpack": "none", "unit": unit,
    }  # fmt: skip
    if split is not None:
        entry["split"] = dict(zip(("train", "valid", "test"), split, strict=True))
    return entry


TOY_SPLIT = (len(TOY) - 40, 20, 20)
TOY8_SPLIT = (len(TOY8) - 40, 20, 20)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every kind of input in tmp_path (the working folder), corpora in $CHARLM_DATA, their
    manifests in $CHARLM_CORPORA, a cache of its own and no network."""
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_text(FILE, encoding="utf-8")
    for name, text in DOCS.items():
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_text(text, encoding="utf-8")
    Path("g.txt.gz").write_bytes(gzip.compress(GZ.encode()))
    with zipfile.ZipFile("z.zip", "w", zipfile.ZIP_DEFLATED) as z:
        for member, text in ZIPPED.items():
            z.writestr(member, text)
    data, manifests = tmp_path / "data", tmp_path / "manifests"
    data.mkdir()
    manifests.mkdir()
    corpora = [("plain", PLAIN.encode(), "char", None), ("toy", TOY.encode(), "char", TOY_SPLIT),
               ("toy8", TOY8, "byte", TOY8_SPLIT)]  # fmt: skip
    for name, raw, unit, split in corpora:
        (data / f"{name}.txt").write_bytes(raw)
        (manifests / f"{name}.json").write_text(json.dumps(manifest(name, len(raw), unit, split)))
    monkeypatch.setenv("CHARLM_DATA", str(data))
    monkeypatch.setenv("CHARLM_CORPORA", str(manifests))
    monkeypatch.setenv("CHARLM_CACHE", str(tmp_path / "cache"))

    def no_network(url: str, dest: Path, total: int | None = None) -> None:
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(catalog, "download", no_network)
    return tmp_path


@dataclass(frozen=True)
class Kind:
    """An input as a user names it, and what it must read, built by hand."""

    args: tuple[str, ...]
    text: str | bytes  # bytes: read byte-level
    include: tuple[str, ...] = ()
    declared: tuple[int, int] | None = None  # the manifest's (end of train, end of valid)

    @property
    def units(self) -> np.ndarray:
        """The text as code points (or bytes): what ids must decode to, one per unit."""
        if isinstance(self.text, bytes):
            return np.frombuffer(self.text, np.uint8)
        return np.array([ord(c) for c in self.text], dtype=np.int64)

    def split(self) -> tuple[np.ndarray, np.ndarray]:
        """(train, validation) units: the declared parts, else the last VAL_FRACTION."""
        units = self.units
        if self.declared is not None:
            train_end, val_end = self.declared
            return units[:train_end], units[train_end:val_end]
        cut = len(units) - int(len(units) * VAL_FRACTION)
        return units[:cut], units[cut:]


KINDS = {
    "file": Kind(("a.txt",), FILE),
    "folder": Kind(("docs",), "\n".join(DOCS.values())),
    "glob": Kind(("docs/**/*.txt",), "bee\n\ndee\n"),
    "gz": Kind(("g.txt.gz",), GZ),
    "zip": Kind(("z.zip",), "\n".join(ZIPPED.values())),
    # a member of a zip is not a path: --include picks it out of the archive
    "zip member": Kind(("z.zip",), ZIPPED["z/2.txt"], include=("z.zip/z/2.txt",)),
    "several": Kind(("a.txt", "g.txt.gz"), FILE + "\n" + GZ),
    "named": Kind(("plain",), PLAIN),
    "named with a split": Kind(("toy",), TOY, declared=(TOY_SPLIT[0], sum(TOY_SPLIT[:2]))),
    "named:test": Kind(("toy:test",), TOY[sum(TOY_SPLIT[:2]) :]),
    "byte unit": Kind(("toy8",), TOY8, declared=(TOY8_SPLIT[0], sum(TOY8_SPLIT[:2]))),
    "byte unit:test": Kind(("toy8:test",), TOY8[sum(TOY8_SPLIT[:2]) :]),
    "builtin": Kind(("builtin",), ""),  # its text is Python's: see builtin()
}


def expected(kind: Kind) -> Kind:
    return Kind(kind.args, builtin(), kind.include) if kind.args == ("builtin",) else kind


def units_of(corpus_ids: np.ndarray, vocab: Vocab) -> np.ndarray:
    """Ids as code points (or bytes), so that corpora of two vocabularies compare."""
    ids = np.asarray(corpus_ids, dtype=np.int64)
    return ids if vocab.is_bytes else vocab.codepoints[ids].astype(np.int64)


def as_cli_builds_it(kind: Kind, out: Path) -> TrainConfig:
    """The TrainConfig of `charlm train ARGS [--include ...] --val-fraction ...`."""
    corpus = kind.args[0] if len(kind.args) == 1 else kind.args
    return TrainConfig(corpus=corpus, include=kind.include, out=str(out),
                       val_fraction=VAL_FRACTION)  # fmt: skip


@pytest.mark.parametrize("name", list(KINDS))
def test_every_way_in_reads_the_same_text_split_alike(world: Path, name: str) -> None:
    kind = expected(KINDS[name])
    byte_level = isinstance(kind.text, bytes)
    selection = Selection(include=kind.include)
    readers = {
        "load_inputs": load_inputs(list(kind.args), selection),
        "charlm train": read_corpus(as_cli_builds_it(kind, world / "run"), quiet=True),
    }
    if len(kind.args) == 1 and not kind.include:
        readers["load_corpus"] = load_corpus(kind.args[0])
    # else: load_corpus takes one argument, and no --include: a legitimate refusal
    train_units, val_units = kind.split()
    for reader, corpus in readers.items():
        assert corpus.vocab.is_bytes == byte_level, reader
        np.testing.assert_array_equal(units_of(corpus.ids, corpus.vocab), kind.units, reader)
        train_ids, val_ids = corpus.split(VAL_FRACTION)
        np.testing.assert_array_equal(units_of(train_ids, corpus.vocab), train_units, reader)
        np.testing.assert_array_equal(units_of(val_ids, corpus.vocab), val_units, reader)
    # `charlm eval perplexity` scores all it reads (a NAME:PART reads that part): no split;
    # read for a model whose vocabulary is built here from the expected text
    vocab = Vocab.of_bytes() if byte_level else Vocab(sorted(set(kind.text)))
    reading = Reading(include=kind.include, separator="\\n")  # as typed: a newline
    _, ids = read_scored_text(list(kind.args), vocab, reading, False, "the model")
    np.testing.assert_array_equal(units_of(ids, vocab), kind.units)


def test_a_local_file_named_builtin_wins_everywhere(world: Path) -> None:
    """`builtin` is a name like the others: a path that exists comes first."""
    Path("builtin").write_text("my own builtin\n", encoding="utf-8")
    cfg = TrainConfig(corpus="builtin", out=str(world / "run"), val_fraction=VAL_FRACTION)
    for corpus in (load_corpus("builtin"), load_inputs("builtin"), read_corpus(cfg, True)):
        assert corpus.vocab.decode(corpus.ids) == "my own builtin\n"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    """Two tiny trained runs: one knows every character of the inputs above, one reads bytes."""
    folder = tmp_path_factory.mktemp("models")
    every = "".join([FILE, *DOCS.values(), GZ, *ZIPPED.values(), PLAIN, TOY, builtin()])
    (folder / "chars.txt").write_text(every, encoding="utf-8")
    (folder / "bytes.txt").write_bytes(TOY8)
    runs = {}
    for byte_level, text in ((False, "chars.txt"), (True, "bytes.txt")):
        cfg = TrainConfig(
            corpus=str(folder / text), out=str(folder / text[:-4]), byte_level=byte_level,
            hidden_size=8, embedding_dim=4, seq_len=8, batch_size=2, max_steps=1,
            val_fraction=0.001 if not byte_level else 0.1, sample_every=0, device="cpu",
            amp="off",
        )  # fmt: skip
        runs[byte_level] = train(cfg, progress_bar=False).out
    return runs


@pytest.mark.parametrize("name", list(KINDS))
def test_the_eval_command_scores_what_every_kind_reads(
    world: Path, models: dict[bool, Path], name: str
) -> None:
    kind = expected(KINDS[name])
    run = models[isinstance(kind.text, bytes)]
    include = [arg for pattern in kind.include for arg in ("--include", pattern)]
    args = ["eval", "perplexity", *kind.args, *include, "--checkpoint", str(run), "--json"]
    result = CliRunner().invoke(main, [*args, "--streams", "16"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.output.splitlines()[-1])
    model, vocab, _ = load_model(run, "cpu")
    ids = kind.units if vocab.is_bytes else vocab.encode(kind.text)
    want = score(model, ids, seq_len=256, streams=16)
    assert got["chars"] == want.chars and got["skipped"] == 0
    assert got["nll"] == pytest.approx(want.nll, rel=1e-6)
