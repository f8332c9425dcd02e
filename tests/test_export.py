"""`charlm export`: ONNX against PyTorch, safetensors read back as the run, and bad input.

The page (--format html) is tested in a browser: tests/test_export_page.py.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import safetensors.torch
import torch
from click.testing import CliRunner

from charlm import cells, checkpoint, tensorfile
from charlm.cells import CELLS
from charlm.checkpoint import load_model
from charlm.cli import main
from charlm.errors import CharLMError, command_line
from charlm.model import CharLM, ModelConfig
from charlm.train import TrainConfig, train
from tests.conftest import ROOT, TEXT, one_line_error

VOCAB = sorted(set(TEXT))
STEPS = 1000  # characters every ONNX check runs through


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def random_run(folder: Path, **config) -> Path:
    """A run folder whose best.pt holds an untrained model (PyTorch's init: not near zero)."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=len(VOCAB), init="pytorch", **config)
    folder.mkdir(parents=True)
    payload = {"model_config": asdict(cfg), "vocab": VOCAB, "model": CharLM(cfg).state_dict()}
    checkpoint.save(payload, folder / "best.pt")
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained model (about a second on the CPU)."""
    folder = tmp_path_factory.mktemp("export")
    corpus = folder / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    cfg = TrainConfig(
        corpus=str(corpus), out=str(folder / "run"), hidden_size=32, embedding_dim=16,
        seq_len=32, batch_size=16, lr=1e-2, epochs=2, sample_every=0, device="cpu", amp="off",
    )  # fmt: skip
    return train(cfg, progress_bar=False).out


def ort_logits(path: Path, texts: list[str]) -> tuple[np.ndarray, dict[str, str]]:
    """Step the ONNX file through equally long texts, one stream each: (T, N, V) logits."""
    session = ort.InferenceSession(str(path))
    meta = session.get_modelmeta().custom_metadata_map
    index = {ch: i for i, ch in enumerate(json.loads(meta["vocab"]))}
    L, H = json.loads(meta["state_shape"])
    state = {name: np.zeros((L, len(texts), H), np.float32) for name in json.loads(meta["state"])}
    out = []
    for chars in zip(*texts, strict=True):
        ids = np.array([index[ch] for ch in chars], dtype=np.int64)
        logits, *new = session.run(None, {"ids": ids, **state})
        state = dict(zip(state, new, strict=True))
        out.append(logits)
    return np.stack(out), meta


# every registered cell, with one layer and an embedding, and with two layers and one-hot input
SHAPES = [{"num_layers": 1, "embedding_dim": 8}, {"num_layers": 2, "embedding_dim": 0}]
EVERY_CELL = [{"model": name, "hidden_size": 16, **shape} for name in CELLS for shape in SHAPES]


def shape_id(c: dict) -> str:
    return f"{c['model']}-{c['num_layers']}-{'E' if c['embedding_dim'] else 'onehot'}"


@pytest.mark.parametrize("config", EVERY_CELL, ids=shape_id)
def test_onnx_logits_equal_pytorch_over_1000_steps(tmp_path: Path, config: dict) -> None:
    """ONNX Runtime, one step at a time on three streams, against the model's forward pass over
    the whole text (nn.LSTM's / nn.GRU's kernels, each cell's sequence code), in float32."""
    folder = random_run(tmp_path / "run", **config)
    result = cli("export", str(folder), "--format", "onnx")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"wrote {folder / 'best.onnx'} (")
    texts = [TEXT[k : k + STEPS] for k in (0, 7, 300)]  # the streams axis is dynamic: 3, not 2
    got, meta = ort_logits(folder / "best.onnx", texts)
    model, vocab, _ = load_model(folder, "cpu")
    ids = torch.stack([torch.from_numpy(vocab.encode(t)) for t in texts], dim=1)  # (T, N)
    with torch.no_grad():
        want = model(ids, dropout=False)[0].numpy()
    assert got.shape == want.shape == (STEPS, 3, len(VOCAB))
    assert np.abs(got - want).max() <= 1e-5
    assert np.abs(want).max() > 0.1  # the logits move: a real check, not zeros against zeros
    assert json.loads(meta["vocab"]) == VOCAB
    assert json.loads(meta["model_config"]) == asdict(model.cfg)
    assert meta["charlm.format"] == "charlm-onnx-step" and meta["unit"] == "char"
    onnx.checker.check_model(onnx.load(folder / "best.onnx"))


def docs_example() -> str:
    """The Python example of docs/export.md: the block after 'onnxruntime and numpy alone'."""
    page = (ROOT / "docs" / "export.md").read_text(encoding="utf-8")
    return (
        page.split("onnxruntime and numpy alone", 1)[1].split("```python\n", 1)[1].split("```")[0]
    )


def test_the_docs_onnx_example_generates_what_charlm_generates(run: Path, tmp_path: Path) -> None:
    """The docs' script, run with onnxruntime and numpy alone (neither torch nor charlm is
    imported), continues a prefix greedily as `charlm generate --greedy` does."""
    assert (
        cli("export", str(run), "--format", "onnx", "-o", str(tmp_path / "m.onnx")).exit_code == 0
    )
    script = tmp_path / "example.py"
    script.write_text(docs_example(), encoding="utf-8")
    check = (
        "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name="
        "'__main__'); assert not {'torch', 'charlm'} & set(sys.modules), 'imported torch'"
    )
    args = [str(script), str(tmp_path / "m.onnx"), "First", "200"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", check, *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    want = cli("generate", "--checkpoint", str(run), "--prefix", "First", "--length", "200",
               "--greedy")  # fmt: skip
    assert want.exit_code == 0
    assert proc.stdout == want.output
    assert len(set(proc.stdout)) > 5  # not one character over and over


def test_safetensors_is_the_run(run: Path, tmp_path: Path) -> None:
    """generate, eval perplexity and info read the .safetensors file as the run itself."""
    file = tmp_path / "model.safetensors"
    result = cli("export", str(run), "--format", "safetensors", "-o", str(file))
    assert result.exit_code == 0, result.output
    corpus = str(run.parent / "corpus.txt")
    for args in (
        ["generate", "--prefix", "First", "--length", "300", "--seed", "7", "--temperature", "0.9"],
        ["generate", "--num-samples", "3", "--length", "50", "--seed", "1", "--int8"],
        ["eval", "perplexity", corpus, "--json"],
    ):
        original = cli(*args, "--checkpoint", str(run))
        exported = cli(*args, "--checkpoint", str(file))
        assert original.exit_code == exported.exit_code == 0, exported.output
        assert exported.output == original.output
    facts = json.loads(cli("info", str(file), "--json").output)
    want = json.loads(cli("info", str(run / "best.pt"), "--json").output)
    assert facts.pop("checkpoint") == str(file) and want.pop("checkpoint").endswith("best.pt")
    assert facts.pop("corpus_source") is None  # the run folder's config.json is not in the file
    want.pop("corpus_source")
    # nor its metrics.jsonl: the file records the run's settings and progress, not its rows
    assert facts.pop("metrics")["rows"] == {"epoch": 0, "train": 0, "eval": 0}
    assert want.pop("metrics")["rows"]["epoch"] > 0
    assert facts == want and facts["best_val_bpc"] is not None
    # a plain safetensors file: any reader gets the weights, and the record as JSON strings
    weights = safetensors.torch.load_file(file)
    model, vocab, _ = load_model(run, "cpu")
    assert weights.keys() == model.state_dict().keys()
    assert all(torch.equal(weights[k], w) for k, w in model.state_dict().items())
    with safetensors.safe_open(file, "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["vocab"]) == vocab.chars
    assert json.loads(meta["model_config"]) == asdict(model.cfg)


def hostile(tmp_path: Path, metadata: dict, weights: dict | None = None) -> Path:
    """A .safetensors file with this metadata (and a tiny GRU's weights unless given)."""
    if weights is None:
        torch.manual_seed(0)
        weights = CharLM(ModelConfig(len(VOCAB), "gru", 8, embedding_dim=4)).state_dict()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(safetensors.torch.save(weights, metadata))
    return path


GOOD = {
    "format": "charlm-weights",
    "version": "1",
    "vocab": json.dumps(VOCAB),
    "model_config": json.dumps(asdict(ModelConfig(len(VOCAB), "gru", 8, embedding_dim=4))),
}


def _with(**changes: str | None) -> dict:
    return {k: v for k, v in {**GOOD, **changes}.items() if v is not None}


def _config(**changes) -> str:
    return json.dumps({**json.loads(GOOD["model_config"]), **changes})


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (_with(format=None), "not one charlm wrote"),
        (_with(format="charlm-checkpoint"), "not one charlm wrote"),
        (_with(version="2"), "format version '2'; this charlm reads version 1"),
        (_with(vocab=None), "its metadata has no 'vocab'"),
        (_with(model_config="{hidden_size: 8"), "'model_config' metadata is not JSON"),
        (_with(model_config="[1, 2]"), "'model_config' metadata is not a JSON dict"),
        (_with(vocab='"abc"'), "'vocab' metadata is not a JSON list"),
        (_with(vocab="[" * 100_000 + "]" * 100_000), "'vocab' metadata is not JSON"),
        (_with(model_config=GOOD["model_config"].replace("8", "9" * 5000)), "is not JSON"),
        (_with(model_config=_config(hidden_size=10**12)), "hidden_size 1000000000000 is larger"),
        (_with(model_config=_config(hidden_size=7)), "has shape"),
        (_with(model_config=_config(num_layers=3)), "not those of its model config"),
        (_with(model_config=_config(model="transformer")), "unknown model"),
        (_with(model_config=_config(hidden_size="8")), "larger than any of its weights"),
        (_with(vocab=json.dumps(VOCAB[:-1])), "its model predicts"),
        (_with(vocab=json.dumps(["ab", *VOCAB[1:]])), "sorted, distinct single characters"),
        (_with(vocab=json.dumps([1, 2, 3])), "do not fit a charlm model"),
        (_with(config="[]"), "'config' metadata is not a JSON dict"),
    ],
)
def test_hostile_safetensors_metadata_is_one_line(
    tmp_path: Path, metadata: dict, message: str
) -> None:
    path = hostile(tmp_path, metadata)
    with pytest.raises(CharLMError, match=re.escape(message)):
        load_model(path, "cpu")
    one_line_error(cli("generate", "--checkpoint", str(path)), message)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda w: w.update(W_hq=torch.zeros(8, 3)), "W_hq has shape (8, 3)"),
        (lambda w: w.pop("b_q"), "not those of its model config"),
        (lambda w: w.update(extra=torch.zeros(1)), "not those of its model config"),
        (lambda w: w.update(b_q=torch.full((len(VOCAB),), float("nan"))), "NaN"),
        (lambda w: w.update(b_q=torch.zeros(len(VOCAB), dtype=torch.int32)), "floating-point"),
    ],
)
def test_hostile_safetensors_weights_are_one_line(tmp_path: Path, change, message: str) -> None:
    torch.manual_seed(0)
    weights = CharLM(ModelConfig(len(VOCAB), "gru", 8, embedding_dim=4)).state_dict()
    change(weights)
    path = hostile(tmp_path, GOOD, weights)
    one_line_error(cli("generate", "--checkpoint", str(path)), message)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a readable safetensors file"),
        (b"not a safetensors file at all", "not a readable safetensors file"),
        (struct.pack("<Q", 2**62) + b"{}", "not a readable safetensors file"),  # a huge header
        (struct.pack("<Q", 2) + b"{]", "not a readable safetensors file"),
        # a header naming more bytes than the file has
        (struct.pack("<Q", 64) + b'{"W":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}}  ',
         "not a readable safetensors file"),
    ],
)  # fmt: skip
def test_damaged_safetensors_files_are_one_line(tmp_path: Path, content: bytes, message) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    one_line_error(cli("generate", "--checkpoint", str(path)), message)
    one_line_error(cli("info", str(path)), message)


class Branching(cells.LSTM):
    """An LSTM whose step branches on a value: something no exported graph can hold."""

    name = "branching"

    def step(self, xW, hW, h, c):
        if float(xW.sum()) > 0:
            return super().step(xW, hW, h, c)
        return super().step(-xW, hW, h, c)


class Woven(cells.MinGRU):
    """A minGRU whose layers join in a way the page has no JavaScript for."""

    hooks = "woven"


@pytest.mark.parametrize(
    ("name", "cell", "refusals"),
    [
        ("branching", Branching, {
            "onnx": "--format onnx cannot express the branching",
            "html": "--format html has no JavaScript step for the branching cell",
        }),
        ("mingru", Woven, {
            "html": "--format html has no JavaScript for the woven hooks of the mingru cell",
        }),
    ],
)  # fmt: skip
def test_a_cell_a_format_cannot_express_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, cell: type, refusals: dict
) -> None:
    monkeypatch.setitem(cells.CELLS, name, cell)
    folder = random_run(tmp_path / "run", model=name, hidden_size=8, embedding_dim=4)
    for fmt, message in refusals.items():
        one_line_error(cli("export", str(folder), "--format", fmt), message)
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt"]  # nothing written
    assert cli("export", str(folder), "--format", "safetensors").exit_code == 0  # weights: any
    from charlm.export import export

    with pytest.raises(CharLMError, match=r"^format='html' has no JavaScript"):
        export(str(folder), "html")  # a Python caller reads the parameter's name


def _no_leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_bad_export_requests_are_one_line(run: Path, tmp_path: Path) -> None:
    """Each refused before or while writing, with nothing half-written left behind."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "empty").mkdir()
    (tmp_path / "folder").mkdir()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((run / "best.pt").read_bytes()[:5000])
    other = tmp_path / "v2.pt"
    torch.save({"format": "charlm-checkpoint", "version": 2}, other)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    (tmp_path / "link.pt").symlink_to(run / "best.pt")
    os.mkfifo(tmp_path / "pipe.safetensors")
    cases = [
        ((str(tmp_path / "empty"), "--format", "onnx"), "no checkpoint in"),
        ((str(tmp_path / "missing"), "--format", "onnx"), "no such checkpoint"),
        ((str(truncated), "--format", "html"), "not a readable checkpoint"),
        ((str(other), "--format", "onnx"), "format version 2; this charlm reads version 1"),
        ((str(text), "--format", "safetensors", "-o", "x.safetensors"), "not a readable"),
        ((str(run), "--format", "html", "-o", str(tmp_path / "folder")), "not a regular file"),
        ((str(run), "--format", "html", "-o", str(fifo)), "not a regular file"),
        ((str(run), "--format", "onnx", "-o", "/dev/full"), "not a regular file"),
        ((str(run), "--format", "html", "-o", str(tmp_path / "no" / "p.html")), "cannot write"),
        ((str(run), "--format", "html", "-o", str(run / "best.pt")), "is the checkpoint being"),
        ((str(run), "--format", "html", "-o", str(tmp_path / "link.pt")), "is the checkpoint"),
        ((str(tmp_path / "pipe.safetensors"), "--format", "onnx"), "is not a regular file"),
        ((str(run), "--format", "safetensors", "-o", str(tmp_path / "w.pt")), "must end in"),
        ((str(run), "--format", "onnx", "--quantize", "int8"), "--quantize int8 is not avail"),
    ]
    for args, message in cases:
        one_line_error(cli("export", *args), message)
    assert _no_leftovers(tmp_path) == _no_leftovers(run) == []
    assert not (run / "best.onnx").exists() and not (run / "best.html").exists()
    assert (tmp_path / "folder").is_dir() and not any((tmp_path / "folder").iterdir())
    # click refuses what is not a choice, before anything runs
    for args in (("--format", "tflite"), ("--format", "html", "--quantize", "int" + "9" * 100)):
        result = cli("export", str(run), *args)
        assert result.exit_code == 2 and "Invalid value" in result.output


def test_a_failed_write_keeps_the_old_file(run: Path, tmp_path: Path, monkeypatch) -> None:
    """A disk that fills up half-way: the file that was there stays whole, no temporary file."""
    out = tmp_path / "model.html"
    out.write_text("the previous export")

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    one_line_error(cli("export", str(run), "--format", "html", "-o", str(out)), "disk is full")
    assert out.read_text() == "the previous export" and _no_leftovers(tmp_path) == []


def test_library_refusals() -> None:
    from charlm.export import export

    # a Python caller reads its parameters' names, the command's user the flags
    with pytest.raises(CharLMError, match=r"^format must be one of onnx, safetensors, html"):
        export("runs/none", "tflite")
    with pytest.raises(CharLMError, match=r"^quantize='int4' is not available: .*quantize='int8'"):
        export("runs/none", "html", quantize="int4")
    with command_line(), pytest.raises(CharLMError, match=r"^--format must be one of onnx"):
        export("runs/none", "tflite")
    with command_line(), pytest.raises(CharLMError, match=r"^--quantize int4 .*--quantize int8"):
        export("runs/none", "html", quantize="int4")
    assert tensorfile.holds("a/b.SafeTensors") and not tensorfile.holds("a/b.pt")


def test_int8_page_weights_are_within_half_a_step_per_row() -> None:
    """--quantize int8: each row (an output unit) scaled so that its largest |w| is 127, every
    weight within half a step of its float32 value; a zero row stays zeros."""
    from charlm.page import Tensor, pack

    rng = np.random.default_rng(0)
    values = (rng.standard_normal((5, 7)) * [[1], [10], [0.01], [0], [3]]).astype(np.float32)
    buffer, (about,) = pack([Tensor("W", values, int8=True)])
    q = np.frombuffer(buffer, np.int8, values.size, about["offset"]).reshape(5, 7)
    scale = np.frombuffer(buffer, "<f4", 5, about["scale"])
    assert about["kind"] == "i8" and about["shape"] == [5, 7] and about["scale"] % 4 == 0
    for row, q_row, s in zip(values, q, scale, strict=True):
        if not row.any():
            assert not q_row.any()
            continue
        assert np.abs(q_row).max() == 127
        assert np.abs(q_row.astype(np.float64) * s - row).max() <= s / 2 * (1 + 1e-6)
