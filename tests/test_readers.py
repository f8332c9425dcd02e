"""Generative tests of the checked readers and the opener: a valid file of each kind that charlm
reads back (a checkpoint with its whole resume payload, config.json, a settings file, a corpus
manifest, the encoded cache's record), mutated by hypothesis (keys dropped, added, retyped;
shapes and dtypes changed; huge, negative, NaN and deeply nested values; truncated), and every
kind of path swapped for a special file, then the real command run on it: exit 0 with a correct
result, or one `error:` line and exit 1; never a traceback, a hang (a deadline in the test) or
a crash signal (the crash class runs in a subprocess)."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charlm import catalog
from charlm.cli import main
from charlm.config import TrainConfig, check_config, read_settings
from charlm.errors import CharLMError
from charlm.inputs import load_corpus
from charlm.resume import read_resumed
from charlm.run import RunFolder
from charlm.train import train
from tests.conftest import ROOT, TEXT


def quick(examples: int) -> settings:
    """A few examples, no deadline (a command takes a while), the same ones every run."""
    return settings(max_examples=examples, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))  # fmt: skip


TINY = dict(hidden_size=8, embedding_dim=4, seq_len=8, batch_size=2, sample_every=0,
            threads=1, device="cpu", amp="off", lr=0.01)  # fmt: skip


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail, instead of hanging the suite, if the block runs past `seconds` (a FIFO opened
    for reading, an epoch that never ends): SIGALRM interrupts the blocking call."""

    def expired(signum: int, frame: Any) -> None:
        raise TimeoutError(f"still running after {seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def clean(result) -> bool:
    """Exit 0 (True), or one `error:` line and exit 1 (False); never a traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.output,
        repr(result.exception),
    )
    lines = [line for line in result.output.splitlines() if line.strip()]
    if result.exit_code == 0:
        return True
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return False


def invoke(*args: str, seconds: float = 60, **env: str):
    with deadline(seconds):
        return CliRunner(env=env or None).invoke(main, list(args))


# --- values and mutations ---------------------------------------------------------------------


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = {"a": [value]}
    return value


PLAIN = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([10**400, -1, 0, 2**63, 10**6]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.sampled_from(["", "\x00", "x" * 300, "caf\udce9"]),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.builds(nested, st.sampled_from([50, 200])),  # deeper: the red-team tests below
)
TENSORS = st.builds(
    lambda shape, dtype, nan: torch.full(shape, math.nan if nan and dtype.is_floating_point else 1,
                                         dtype=dtype),
    st.lists(st.integers(0, 3), max_size=3).map(tuple),
    st.sampled_from([torch.float32, torch.float64, torch.int64, torch.uint8, torch.bfloat16]),
    st.booleans(),
)  # fmt: skip


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a nested payload: a key path to each dict entry and list item."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            found += paths(v, (*prefix, k))
    elif isinstance(value, list | tuple) and len(value) <= 8:
        for k, v in enumerate(value):
            found += paths(v, (*prefix, k))
    return found


def mutate(payload: dict, where: tuple, how: str, value: Any) -> dict:
    """`payload` with the entry at `where` dropped, joined by a new key, or replaced."""
    changed = copy.deepcopy(payload)
    parent = changed
    for key in where[:-1]:
        parent = parent[key]
    if isinstance(parent, tuple):  # tuples (betas, a carried (h, c)) become lists to change
        return changed
    last = where[-1]
    if how == "drop":
        del parent[last]
    elif how == "add" and isinstance(parent, dict):
        parent["unexpected"] = value
    elif how == "shape" and isinstance(parent[last], torch.Tensor):
        parent[last] = torch.zeros(*[s + 1 for s in parent[last].shape], 1)
    elif how == "dtype" and isinstance(parent[last], torch.Tensor):
        parent[last] = parent[last].to(torch.float64)
    else:
        parent[last] = value
    return changed


HOW = st.sampled_from(["drop", "add", "replace", "replace", "shape", "dtype"])
VALUE = st.one_of(PLAIN, TENSORS)


# --- a run to mutate --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run stopped mid-epoch that carries its state (consecutive sampler, an LSTM: (h, c))."""
    root = tmp_path_factory.mktemp("readers")
    (root / "corpus.txt").write_text(TEXT, encoding="utf-8")
    cfg = TrainConfig(corpus=str(root / "corpus.txt"), out=str(root / "run"), max_steps=3,
                      sampler="consecutive", **TINY)  # fmt: skip
    train(cfg, progress_bar=False)
    return root / "run"


@pytest.fixture(scope="module")
def payload(run) -> dict:
    return torch.load(run / "checkpoint.pt", weights_only=True)


def copy_run(run: Path, to: Path, ckpt: dict) -> Path:
    to.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "metrics.jsonl"):
        (to / name).write_bytes((run / name).read_bytes())
    torch.save(ckpt, to / "checkpoint.pt")
    return to


@quick(25)
@given(data=st.data(), how=HOW, value=VALUE)
def test_any_mutated_resume_payload_resumes_or_is_one_line(
    run, payload, tmp_path_factory, data, how, value
):
    where = data.draw(st.sampled_from(paths(payload)))
    crafted = mutate(payload, where, how, value)
    out = copy_run(run, tmp_path_factory.mktemp("resume") / "run", crafted)
    corpus = str(run.parent / "corpus.txt")
    result = invoke("train", corpus, "--out", str(out), "--resume", "--max-steps", "4",
                    "--quiet", seconds=60)  # fmt: skip
    if clean(result):  # resumed: what it wrote is a checkpoint a later --resume reads
        assert "done (" in result.output
        read_resumed(RunFolder(out, writes=False))


CRASHED = [  # each once ended the process with a signal, or a traceback
    "c['optimizer']['state'][0]['exp_avg'] = torch.zeros(3)",  # segfault in fused Adam
    "c['optimizer']['state'][1]['exp_avg_sq'] = torch.zeros(2, 1000)",
    "c['optimizer']['state'][0]['step'] = torch.zeros(5)",
    "c['optimizer']['state'][0]['exp_avg'] = c['optimizer']['state'][0]['exp_avg'].double()",
    "c['optimizer']['param_groups'][0]['amsgrad'] = True",
    "c['state'] = [torch.zeros(1, 1, 1), torch.zeros(1, 1, 1)]",
]
# one process resumes each crafted run in turn: a crash signal ends it, and shows as one
RESUME_EACH = """
import sys
from click.testing import CliRunner
from charlm.cli import main
for out in sys.argv[2:]:
    result = CliRunner().invoke(main, ["train", sys.argv[1], "--out", out, "--resume",
                                       "--max-steps", "5", "--quiet"])
    print(result.exit_code, result.output.replace("\\n", " ").strip(), flush=True)
"""


def test_an_optimizer_state_that_crashed_the_process_is_one_line(run, payload, tmp_path):
    """A wrong-shaped Adam moment once crashed the fused kernel (segfault, `free(): invalid
    next size`): resumed in a subprocess, so that a crash signal would show as one."""
    outs = []
    for k, change in enumerate(CRASHED):
        c = copy.deepcopy(payload)
        exec(change)
        outs.append(str(copy_run(run, tmp_path / f"run{k}", c)))
    corpus = str(run.parent / "corpus.txt")
    proc = subprocess.run(
        [sys.executable, "-c", RESUME_EACH, corpus, *outs], capture_output=True, text=True,
        timeout=300, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-500:])
    lines = proc.stdout.splitlines()
    assert len(lines) == len(CRASHED), proc.stdout
    for line in lines:
        assert line.startswith("1 error: cannot resume from"), line


@quick(20)
@given(data=st.data(), how=HOW, value=VALUE)
def test_any_mutated_model_generates_scores_and_shows_or_is_one_line(
    run, payload, tmp_path_factory, data, how, value
):
    generation = {k: payload[k] for k in ("model_config", "vocab", "model", "config", "progress")}
    where = data.draw(st.sampled_from([p for p in paths(generation)]))
    crafted = {**payload, **mutate(generation, where, how, value)}
    out = copy_run(run, tmp_path_factory.mktemp("model") / "run", crafted)
    generated = invoke("generate", "--checkpoint", str(out), "--length", "20", "--seed", "1")
    if clean(generated):
        assert len(generated.output) >= 20
    scored = invoke("eval", "perplexity", str(run.parent / "corpus.txt"), "--checkpoint",
                    str(out), "--json", "--skip-unknown")  # fmt: skip
    if clean(scored):
        assert math.isfinite(json.loads(scored.output)["perplexity"])
    shown = invoke("info", str(out), "--json")
    if clean(shown):
        facts = json.loads(shown.output)
        assert isinstance(facts["corpus_source"], str | None) and facts["steps"] >= 0


@quick(25)
@given(data=st.data(), how=st.sampled_from(["drop", "add", "replace"]), value=PLAIN)
def test_any_mutated_config_json_shows_or_is_one_line(run, tmp_path_factory, data, how, value):
    record = json.loads((run / "config.json").read_text())
    where = data.draw(st.sampled_from(paths(record)))
    folder = tmp_path_factory.mktemp("info") / "run"
    copy_run(run, folder, torch.load(run / "checkpoint.pt", weights_only=True))
    text = json.dumps(mutate(record, where, how, value), allow_nan=True)
    (folder / "config.json").write_text(text[: data.draw(st.sampled_from([len(text), 7]))])
    shown = invoke("info", str(folder))
    if clean(shown):
        assert "corpus" in shown.output


# --- settings files ---------------------------------------------------------------------------

SETTINGS = {"hidden_size": 8, "lr": 0.01, "corpus": ["a.txt"], "include": ["*.txt"],
            "amp": "off", "epochs": 2, "separator": "\\n", "time_budget": 0.0}  # fmt: skip


def toml(data: dict) -> str:
    def value(v: Any) -> str:
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(map(value, v)) + "]"
        if isinstance(v, float) and not math.isfinite(v):
            return {math.inf: "inf", -math.inf: "-inf"}.get(v, "nan")
        if isinstance(v, int | float):
            return repr(v)
        return json.dumps(str(v))

    return "".join(f"{k} = {value(v)}\n" for k, v in data.items())


@quick(60)
@given(
    key=st.sampled_from([*SETTINGS, "colour", "hidden-size"]),
    how=st.sampled_from(["drop", "add", "replace"]),
    value=PLAIN,
    suffix=st.sampled_from([".json", ".toml"]),
    cut=st.sampled_from([None, 5]),
)
def test_any_mutated_settings_file_loads_or_is_one_line(
    tmp_path_factory, key, how, value, suffix, cut
):
    data = dict(SETTINGS)
    if how == "drop":
        data.pop(key, None)
    elif how == "add":
        data["unexpected"] = value
    else:
        data[key] = value
    text = json.dumps(data, allow_nan=True) if suffix == ".json" else toml(data)
    path = tmp_path_factory.mktemp("settings") / f"run{suffix}"
    path.write_text(text[:cut], encoding="utf-8", errors="surrogatepass")
    try:
        cfg = TrainConfig(**read_settings(path))
        check_config(cfg)
    except CharLMError as e:
        assert "\n" not in str(e)
        return
    assert cfg.hidden_size >= 0 and math.isfinite(cfg.lr)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("lr = 1" + "0" * 400, "lr must be a number up to 1e30"),
        ('{"lr": 1' + "0" * 400 + "}", "lr must be a number up to 1e30"),
        ('out = "a\\u0000b"', "--out holds a NUL byte"),
        ('corpus = "a\\u0000b"', "--corpus holds a NUL byte"),
        ('encoding = "hex"', "not a text encoding"),
        ("time_budget = 1e30", "--time-budget must be at most"),
    ],
)
def test_settings_files_the_red_team_wrote(tmp_path, text, fragment):
    suffix = ".json" if text.startswith("{") else ".toml"
    (tmp_path / f"run{suffix}").write_text(text)
    out = [] if text.startswith("out") else ["--out", str(tmp_path / "o")]
    result = invoke("train", "--config", str(tmp_path / f"run{suffix}"), *out, "--quiet",
                    "--max-steps", "1", "--hidden-size", "8")  # fmt: skip
    assert not clean(result) and fragment in result.output, result.output
    assert not (tmp_path / "o").exists()


# --- manifests --------------------------------------------------------------------------------

MANIFEST = {"name": "mini", "description": "a small text", "url": "https://example.org/mini",
            "file": "mini.txt", "size": 12, "license": "CC0", "unpack": "none",
            "split": {"train": 8, "valid": 2, "test": 2}, "unit": "char"}  # fmt: skip


@quick(30)
@given(data=st.data(), how=st.sampled_from(["drop", "add", "replace"]), value=PLAIN)
def test_any_mutated_manifest_lists_or_is_one_line(tmp_path_factory, data, how, value):
    folder = tmp_path_factory.mktemp("manifests")
    where = data.draw(st.sampled_from(paths(MANIFEST)))
    text = json.dumps(mutate(MANIFEST, where, how, value), allow_nan=True)
    (folder / "mini.json").write_text(text[: data.draw(st.sampled_from([len(text), 9]))])
    listed = invoke("corpora", CHARLM_CORPORA=str(folder))
    if clean(listed):
        entry = catalog.parse_manifest(folder / "mini.json")
        assert entry.name in listed.output and entry.size >= 1


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000 + "]" * 100_000, '{"a":' * 100_000, '{"size": ' + "9" * 5000 + "}",
     '{"size": NaN}'],
)  # fmt: skip
def test_manifests_the_red_team_wrote(tmp_path, text):
    (tmp_path / "deep.json").write_text(text)
    assert not clean(invoke("corpora", CHARLM_CORPORA=str(tmp_path)))


# --- the encoded cache's record ---------------------------------------------------------------


@quick(20)
@given(data=st.data(), how=st.sampled_from(["drop", "add", "replace"]), value=PLAIN)
def test_a_damaged_cache_record_is_encoded_again(tmp_path_factory, data, how, value):
    """A record that is not one, or does not fit its ids, is never served: the text read is
    the text of the file, as a first run reads it."""
    root = tmp_path_factory.mktemp("cache")
    (root / "c.txt").write_text(TEXT, encoding="utf-8")
    first = load_corpus(root / "c.txt", in_memory_below=1, cache=root / "cache")
    (record,) = (root / "cache").glob("*.json")
    meta = json.loads(record.read_text())
    where = data.draw(st.sampled_from([p for p in paths(meta) if p[0] != "inputs"] or [("x",)]))
    record.write_text(json.dumps(mutate(meta, where, how, value), allow_nan=True))
    again = load_corpus(root / "c.txt", in_memory_below=1, cache=root / "cache")
    assert again.vocab.decode(again.ids) == first.vocab.decode(first.ids) == TEXT


def test_ids_past_the_vocabulary_are_never_served(tmp_path):
    (tmp_path / "c.txt").write_text(TEXT, encoding="utf-8")
    load_corpus(tmp_path / "c.txt", in_memory_below=1, cache=tmp_path / "cache")
    (ids,) = (tmp_path / "cache").glob("*.bin")
    ids.write_bytes(b"\xff" * ids.stat().st_size)  # same size, every id 255: no such character
    again = load_corpus(tmp_path / "c.txt", in_memory_below=1, cache=tmp_path / "cache")
    assert again.vocab.decode(again.ids) == TEXT


# --- the opener: every path a user names, swapped for what is not a file -----------------------


def special(kind: str, where: Path) -> str:
    """Make `where` a special thing of `kind`; the path to name."""
    if kind == "fifo":
        os.mkfifo(where)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(where))
        sock.close()
    elif kind == "folder":
        where.mkdir()
    elif kind == "loop":
        os.symlink(where, where)
    elif kind == "device":
        return "/dev/zero"
    elif kind == "nul":
        return str(where) + "\x00x"
    return str(where)


KINDS = ["fifo", "socket", "folder", "loop", "device", "nul"]


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("texts")
    (root / "t.txt").write_text(TEXT, encoding="utf-8")
    return root


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "role",
    ["corpus", "checkpoint", "checkpoint in a run", "config", "manifest", "out", "html", "plot",
     "info", "eval input"],
)  # fmt: skip
def test_every_path_a_user_names_is_looked_at_before_it_is_opened(run, texts, tmp_path, role, kind):
    if kind == "folder" and role in ("corpus", "out", "eval input", "checkpoint", "info"):
        pytest.skip("a folder is what this path may name")
    odd = special(kind, tmp_path / ("x.json" if role in ("manifest", "config") else "x.pt"))
    corpus, ckpt = str(texts / "t.txt"), str(run / "checkpoint.pt")
    env = {}
    if role == "checkpoint in a run":
        if kind in ("device", "nul"):
            pytest.skip("a run folder's own file")
        folder = tmp_path / "r"
        folder.mkdir()
        special(kind, folder / "best.pt")
        args = ["generate", "--checkpoint", str(folder), "--length", "5"]
    else:
        args = {
            "corpus": ["train", odd, "--out", str(tmp_path / "o"), "--quiet"],
            "checkpoint": ["generate", "--checkpoint", odd, "--length", "5"],
            "config": ["train", corpus, "--config", odd, "--out", str(tmp_path / "o")],
            "manifest": ["corpora"],
            "out": ["train", corpus, "--out", odd, "--max-steps", "1", "--quiet", "--hidden-size",
                    "8"],
            "html": ["eval", "perplexity", corpus, "--checkpoint", ckpt, "--html", odd],
            "plot": ["plot", str(run), "-o", odd],
            "info": ["info", odd],
            "eval input": ["eval", "perplexity", odd, "--checkpoint", ckpt],
        }[role]  # fmt: skip
        if role == "manifest":
            if kind in ("device", "nul"):
                pytest.skip("a manifest is a file found in a folder")
            env["CHARLM_CORPORA"] = str(tmp_path)
    if role == "plot":
        pytest.importorskip("matplotlib")
    result = invoke(*args, seconds=60, **env)
    assert not clean(result), result.output
    assert not (tmp_path / "o").exists()


def test_an_unreadable_file_is_one_line(run, monkeypatch):
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if "checkpoint" in str(p)
                        else real(p, mode, **kw))  # fmt: skip
    result = invoke("generate", "--checkpoint", str(run / "checkpoint.pt"))
    assert not clean(result) and "permission denied" in result.output
