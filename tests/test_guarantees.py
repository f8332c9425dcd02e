"""The guarantees of docs/guarantees.md that are not a reader's (test_readers.py): text in and
out in any terminal encoding, a run folder that holds one run and never reads itself, memory
checked against every limit, the edges of a run's length, failed writes and lost streams, and
a Python API that checks its types. Each class is tested as a class; the red team's examples
are among the cases."""

from __future__ import annotations

import codecs
import encodings
import errno
import json
import os
import pkgutil
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charlm import checkpoint, resources, storage
from charlm.budget import Costs
from charlm.cli import main
from charlm.config import READING, TIME_BUDGET_MAX, TrainConfig, check_config
from charlm.errors import CharLMError
from charlm.evaluate import score_text
from charlm.generate import generate
from charlm.inputs import Reading, load_corpus, load_inputs
from charlm.resources import check_figure
from charlm.run import RUN_FILES
from charlm.sampling import Sampling
from charlm.scoring import Scoring
from charlm.settle import Facts, settle
from charlm.train import train
from charlm.vocab import Vocab
from tests.conftest import ROOT, TEXT, one_line_error

TINY = ["--hidden-size", "8", "--embedding-dim", "4", "--seq-len", "8", "--batch-size", "2",
        "--sample-every", "0", "--threads", "1", "--device", "cpu", "--quiet"]  # fmt: skip


ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def cli(*args: str, runner: CliRunner | None = None, **kwargs):
    return (runner or CliRunner()).invoke(main, list(args), **kwargs)


@pytest.fixture(scope="module")
def latin(tmp_path_factory) -> Path:
    """A run on `caf\\xe9.txt`, a Latin-1 text read with --errors surrogateescape: its file
    name and its text hold bytes that are not UTF-8."""
    root = tmp_path_factory.mktemp("latin")
    name = os.fsdecode(bytes(root / "caf") + b"\xe9.txt")
    Path(name).write_bytes(("caf\xe9 cr\xe8me br\xfbl\xe9e\n" * 150).encode("latin-1"))
    out = root / "run"
    result = cli("train", name, "--out", str(out), "--errors", "surrogateescape",
                 "--max-steps", "3", *TINY)  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


# --- text in, text out ------------------------------------------------------------------------

CODECS = sorted({m.name for m in pkgutil.iter_modules(encodings.__path__)} - {"aliases"})


def test_encoding_takes_text_encodings_only(tmp_path):
    """Every codec Python has: a text encoding reads the file or says why in one line; any
    other (hex, base64, rot13, zlib_codec: bytes to bytes, text to text) is refused."""
    path = tmp_path / "t.txt"
    path.write_bytes(bytes(range(32, 256)) * 4 + b"+-AB xn--abc \xff\xfe")
    for name in CODECS:
        try:
            text = codecs.lookup(name)._is_text_encoding
        except LookupError:
            continue
        try:
            corpus = load_inputs([str(path)], encoding=name, errors="replace")
        except CharLMError as e:
            assert "\n" not in str(e)
            assert text or "not a text encoding" in str(e), (name, e)
            continue
        assert text and len(corpus.ids) > 0, name
    one_line_error(cli("train", str(path), "--encoding", "hex", *TINY), "not a text encoding")


@pytest.mark.parametrize("charset", ["utf-8", "ascii", "latin-1"])
def test_output_follows_the_terminal_encoding_without_raising(latin, charset):
    """A strict terminal of each encoding (PYTHONIOENCODING=utf-8:strict, as a desktop locale
    gives): generate from a surrogateescape model, info of a run on caf\\xe9.txt, and an
    interactive line that is not valid in it, all exit 0; the bytes surrogateescape read are
    written back as they were, the rest escaped."""
    runner = CliRunner(charset=charset)
    generated = cli("generate", "--checkpoint", str(latin), "--length", "300", "--seed", "1",
                    "--temperature", "3", runner=runner)  # fmt: skip
    assert generated.exit_code == 0, generated.output
    assert b"\xe9" in generated.stdout_bytes or b"\\xe9" in generated.stdout_bytes
    shown = cli("info", str(latin), runner=runner)
    assert shown.exit_code == 0, shown.output
    # click re-encodes what it prints for an ASCII terminal itself, with '?' for the rest
    assert (b"caf?.txt" if charset == "ascii" else b"caf\xe9.txt") in shown.stdout_bytes
    typed = cli("generate", "--checkpoint", str(latin), "--interactive", "--length", "5",
                "--seed", "1", input=b"caf\xe9\n\xff\xfe\n", runner=runner)  # fmt: skip
    assert typed.exit_code == 0, typed.output
    if charset != "latin-1":  # in Latin-1, \xe9 is é, which the model never saw: one line
        assert typed.stdout_bytes.startswith(b"caf\xe9")  # the undecodable byte, as it came


def test_a_byte_level_model_gets_the_prefix_bytes(tmp_path):
    """UTF-8 bytes for text, the raw byte for what surrogateescape kept (a command-line
    argument that was not UTF-8), and any other lone surrogate as Python encodes it."""
    vocab = Vocab.of_bytes()
    prefix = "café " + os.fsdecode(b"\xff")
    assert vocab.encode(prefix).tolist() == list(b"caf\xc3\xa9 \xff")
    assert vocab.encode("\ud800").tolist() == list("\ud800".encode("utf-8", "surrogatepass"))
    (tmp_path / "b.txt").write_bytes(b"caf\xc3\xa9 \xff\x00 " * 200)
    cli("train", str(tmp_path / "b.txt"), "--byte-level", "--out", str(tmp_path / "r"),
        "--max-steps", "2", *TINY)  # fmt: skip
    result = cli("generate", "--checkpoint", str(tmp_path / "r"), "--prefix", prefix,
                 "--length", "5", "--seed", "1")  # fmt: skip
    assert result.exit_code == 0 and result.stdout_bytes.startswith(b"caf\xc3\xa9 \xff")


# --- one run folder, one run ------------------------------------------------------------------


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "data" / "c.txt"
    path.parent.mkdir()
    path.write_text(TEXT[:600], encoding="utf-8")  # short: an epoch of a few dozen steps
    return path


def test_overwrite_leaves_nothing_of_the_earlier_run(corpus, tmp_path):
    """An LSTM run with validation (best.pt, samples), then a GRU run without (--val-fraction
    0) --overwrite: generate, eval and info all see the GRU, and every file the earlier run
    left is gone or this run's."""
    out = tmp_path / "run"
    first = cli("train", str(corpus), "--out", str(out), "--max-steps", "3", *TINY[:-3],
                "--sample-every", "1", "--sample-length", "20", "--quiet")  # fmt: skip
    assert first.exit_code == 0 and (out / "best.pt").exists() and (out / "samples.txt").exists()
    (out / ".checkpoint-probe.tmp").write_bytes(b"left by a killed run")
    second = cli("train", str(corpus), "--out", str(out), "--model", "gru", "--val-fraction",
                 "0", "--max-steps", "2", "--overwrite", *TINY)  # fmt: skip
    assert second.exit_code == 0, second.output
    assert not (out / "best.pt").exists() and not (out / "samples.txt").exists()
    for name in RUN_FILES:
        if (out / name).exists() and name.endswith(".pt"):
            assert torch.load(out / name, weights_only=True)["config"]["model"] == "gru"
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_loss"] for r in rows] == [None]
    _, _, ckpt = checkpoint.load_model(out, "cpu")
    assert ckpt["model_config"]["model"] == "gru"
    info = json.loads(cli("info", str(out), "--json").output)
    assert info["model"] == "gru"


def test_the_run_never_reads_its_own_folder(corpus, tmp_path, monkeypatch):
    """`train 'data/**' --out data/run`, and a corpus folder reached through a symlink: the
    run's files are never inputs, so its own --resume finds the inputs unchanged."""
    monkeypatch.chdir(tmp_path)
    os.symlink("data", "link")
    for args in (["data/**"], ["link"], ["link/**"]):
        out = "data/run"
        first = cli("train", *args, "--out", out, "--max-steps", "2", "--overwrite", *TINY)
        assert first.exit_code == 0, (args, first.output)
        again = cli("train", *args, "--out", out, "--resume", "--max-steps", "3", *TINY)
        assert again.exit_code == 0, (args, again.output)
    one_line_error(cli("train", "data/run/metrics.jsonl", "--out", "data/run", *TINY),
                   "the run's own --out")  # fmt: skip


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("reading")
    (root / "docs").mkdir()
    for k in range(2):
        (root / "docs" / f"{k}.txt").write_text(TEXT[:400], encoding="utf-8")
    out = root / "run"
    assert cli("train", str(root / "docs"), "--out", str(out), "--max-steps", "2",
               *TINY).exit_code == 0  # fmt: skip
    return root / "docs", out


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--separator", r"\n\n\n"), ("--include", "*.txt"), ("--exclude", "0.txt"), ("--hidden", None),
     ("--encoding", "latin-1"), ("--errors", "replace"), ("--byte-level", None),
     ("--val-fraction", "0.2")],
)  # fmt: skip
def test_every_setting_that_makes_the_text_is_held_on_resume(folder_run, flag, value):
    assert {f.replace("-", "_") for f in ("separator", "include", "exclude", "hidden",
            "encoding", "errors")} == set(READING)  # fmt: skip
    docs, out = folder_run
    given = [flag] if value is None else [flag, value]
    result = cli("train", str(docs), "--out", str(out), "--resume", *given, "--dry-run", *TINY)
    one_line_error(result, f"cannot resume with {flag}")


@settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(first=st.integers(1, 6), more=st.integers(1, 40))
def test_a_longer_max_steps_on_resume_trains_to_it(tmp_path_factory, first, more):
    """Made with --max-steps N (its epochs settled from it), resumed with a larger one: the
    run trains to that step, across epochs, as the README says."""
    root = tmp_path_factory.mktemp("longer")
    (root / "c.txt").write_text(TEXT[:600], encoding="utf-8")
    out, corpus = str(root / "run"), str(root / "c.txt")
    assert cli("train", corpus, "--out", out, "--max-steps", str(first), *TINY).exit_code == 0
    result = cli("train", corpus, "--out", out, "--resume", "--max-steps", str(first + more),
                 *TINY)  # fmt: skip
    assert result.exit_code == 0 and "done (max_steps)" in result.output, result.output
    ckpt = torch.load(root / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["progress"]["step"] == first + more


# --- memory -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small")
    (root / "c.txt").write_text(TEXT, encoding="utf-8")
    assert cli("train", str(root / "c.txt"), "--out", str(root / "run"), "--max-steps", "1",
               *TINY).exit_code == 0  # fmt: skip
    return root


def test_evaluation_windows_are_estimated(small, monkeypatch):
    """`eval --seq-len 100000000` asks for a window as long as the text: refused in one line
    where memory cannot hold it, naming --seq-len; the default window scores."""
    monkeypatch.setattr(resources, "available_bytes", lambda device: 2 * 2**20)
    args = ["eval", "perplexity", str(small / "c.txt"), "--checkpoint", str(small / "run")]
    one_line_error(cli(*args, "--seq-len", "100000000"), "--seq-len 100000000", "of memory")
    assert cli(*args).exit_code == 0


def test_a_figure_is_estimated_before_it_is_drawn(monkeypatch):
    with pytest.raises(CharLMError, match="--dpi 100000 makes an image of 1,200,000 x 800,000"):
        check_figure(12, 8, 100000)
    monkeypatch.setattr(resources, "available_bytes", lambda device: 2**20)
    with pytest.raises(CharLMError, match="a figure at --dpi 120 needs about"):
        check_figure(12, 8, 120)
    with pytest.raises(CharLMError, match="--dpi must be"):
        check_figure(12, 8, 0)


MEASURE = """
import resource, sys, torch
from charlm.checkpoint import load_model
from charlm.generate import generate
from charlm.resources import held_bytes
model, vocab, _ = load_model(sys.argv[1], "cpu")
generate(model, vocab, "", 10, num_samples=2, seed=1)  # warm: kernels, buffers
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
texts = generate(model, vocab, "", 50_000, num_samples=2, seed=1)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(after - before, held_bytes(50_000, 2))
"""


def test_held_samples_stay_within_their_estimate(small):
    """Two samples of 50,000 characters: the memory they take (peak RSS) is within the
    estimate that `generate` checks (once, each step's id was a tensor of its own: 16x)."""
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(small / "run")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**ENV, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    used, estimate = map(float, proc.stdout.split())
    assert used <= estimate, (used, estimate)


def test_threads_are_checked_against_the_address_space_limit(small):
    """`--threads 1024` under `ulimit -v`: the threads' stacks and arenas are refused in one
    line, not a MemoryError in an import or an abort in thread creation."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, resource.RLIM_INFINITY))

    proc = subprocess.run(
        [sys.executable, "-m", "charlm", "generate", "--checkpoint", str(small / "run"),
         "--length", "5", "--threads", "1024"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, preexec_fn=limit,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-400:]
    assert proc.stderr.startswith("error: --threads 1024") and "ulimit -v" in proc.stderr


# --- the length of a run, failed writes, lost streams -----------------------------------------


def test_a_budget_too_short_for_one_step_says_so(small, tmp_path):
    out = tmp_path / "run"
    result = cli("train", str(small / "c.txt"), "--out", str(out), "--time-budget", "0.01",
                 *TINY)  # fmt: skip
    one_line_error(result, "--time-budget 0.01", "too short for one step")
    assert not (out / "checkpoint.pt").exists()


@settings(max_examples=200, deadline=None)
@given(
    budget=st.floats(1e-3, TIME_BUDGET_MAX),
    step_s=st.floats(1e-7, 100),
    epoch=st.integers(1, 10**7),
    spent=st.floats(0, 1),
)
def test_what_a_budget_settles_resume_accepts(budget, step_s, epoch, spent):
    """Any budget in range, any measured costs: the settled run (what its checkpoint records)
    passes the checks its --resume makes (once, --time-budget 1e30 settled 4.5e30 epochs)."""
    cfg = TrainConfig(time_budget=budget, device="cpu")
    facts = Facts(steps_per_epoch=epoch, amp=False, costs=Costs(step_s, step_s, step_s),
                  spent_s=spent * budget)  # fmt: skip
    settled = settle(cfg, facts)
    check_config(settled.cfg)
    assert settled.plan is not None and settled.plan.steps < 2**62


def failing_disk(monkeypatch, after: int = 100) -> None:
    """Every file the atomic writer opens fails with an I/O error after `after` bytes (not a
    full disk: torch.save turned that into `RuntimeError ... unexpected pos`)."""
    real = os.fdopen

    class Failing:
        def __init__(self, f) -> None:
            self.f, self.written = f, 0

        def write(self, data) -> int:
            self.written += len(data)
            if self.written > after:
                raise OSError(errno.EIO, "Input/output error")
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.f.close()

    monkeypatch.setattr(storage.os, "fdopen", lambda fd, mode: Failing(real(fd, mode)))


@pytest.mark.parametrize(
    "write",
    [
        lambda p: checkpoint.save({"model": torch.zeros(1000)}, p),
        lambda p: storage.write_text(p, "x" * 1000),
    ],
)
def test_every_failed_write_names_the_path_and_the_reason(tmp_path, monkeypatch, write):
    (tmp_path / "f").write_text("old")
    failing_disk(monkeypatch)
    with pytest.raises(CharLMError) as e:
        write(tmp_path / "f")
    assert str(e.value) == f"cannot write {tmp_path / 'f'}: Input/output error"
    assert (tmp_path / "f").read_text() == "old" and os.listdir(tmp_path) == ["f"]


def test_a_checkpoint_that_cannot_be_written_ends_the_run_in_one_line(small, tmp_path, monkeypatch):
    failing_disk(monkeypatch, after=10_000)
    result = cli("train", str(small / "c.txt"), "--out", str(tmp_path / "run"), "--max-steps",
                 "2", *TINY)  # fmt: skip
    one_line_error(result, "cannot write", "checkpoint.pt: Input/output error")


COMMANDS = ["train", "generate", "eval", "corpora", "plot", "info"]


def shell(command: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m charlm ARGS` with the shell's redirections in `command` ({} is charlm)."""
    charlm = " ".join(f"'{a}'" for a in [sys.executable, "-m", "charlm", *args])
    return subprocess.run(["sh", "-c", command.format(charlm)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=ENV)  # fmt: skip


FULL = "error: cannot write the output: No space left on device\n"
CLOSED = "error: cannot write the output: standard output is closed\n"


@pytest.mark.parametrize("args", [[c, "--help"] for c in COMMANDS] + [["--help"], ["--version"]])
def test_help_to_a_full_or_closed_output_is_one_line(args):
    """Every command and --help alike (once `train --help > /dev/full` exited 0)."""
    full = shell("{} > /dev/full", *args)
    assert (full.returncode, full.stderr) == (1, FULL)
    closed = shell("{} >&-", *args)
    assert (closed.returncode, closed.stderr) == (1, CLOSED)


def test_generate_to_a_closed_output_and_from_a_closed_input(small):
    """Once: exit 0 having written nothing, and an AttributeError."""
    ckpt = str(small / "run")
    closed = shell("{} >&-", "generate", "--checkpoint", ckpt)
    assert (closed.returncode, closed.stderr) == (1, CLOSED)
    no_input = shell("{} <&-", "generate", "--checkpoint", ckpt, "--interactive")
    assert (no_input.returncode, no_input.stdout, no_input.stderr) == (0, "", "")


# --- the Python API checks its types ----------------------------------------------------------

WRONG = st.one_of(st.text(max_size=3), st.lists(st.integers(), max_size=2), st.just(b"x"),
                  st.just(object()))  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    made=st.sampled_from([Sampling, Scoring, Reading]),
    data=st.data(),
    value=st.one_of(WRONG, st.booleans(), st.floats(), st.integers()),
)
def test_settings_objects_refuse_a_value_of_another_type_naming_it(made, data, value):
    from dataclasses import fields

    field = data.draw(st.sampled_from([f.name for f in fields(made)]))
    try:
        made(**{field: value})
    except CharLMError as e:
        assert "\n" not in str(e)
        assert field.replace("_", "-") in str(e) or field in str(e), (field, e)
        return
    # a value of its type: a scalar, or (for the patterns of include/exclude) strings in a list
    strings = isinstance(value, list) and all(isinstance(v, str) for v in value)
    assert isinstance(value, int | float | bool | str | type(None)) or strings, (field, value)


def test_public_functions_check_their_arguments(small):
    model, vocab, _ = checkpoint.load_model(small / "run", "cpu")
    for call, name in [
        (lambda: generate(model, vocab, "", 5, greedy="no"), "--greedy"),
        (lambda: generate(model, vocab, "", 5, temperature="0.8"), "--temperature"),
        (lambda: generate(model, vocab, 5, 5), "prefix"),
        (lambda: score_text(model, vocab, 5), "text"),
        (lambda: load_corpus(5), "corpus"),
        (lambda: load_corpus(small / "c.txt", encoding=5), "encoding"),
        (lambda: load_corpus(small / "c.txt", byte_level="no"), "byte_level"),
        (lambda: checkpoint.load_model(None), "checkpoint"),
        (lambda: train("corpus.txt"), "TrainConfig"),
    ]:
        with pytest.raises(CharLMError, match=name):
            call()
