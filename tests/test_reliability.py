"""Reliability and security: untrusted checkpoints, atomic writes, signals, NaN, exact resume."""

import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from charlm import checkpoint
from charlm.cli import main
from charlm.errors import CharLMError, command_line
from charlm.train import Callback, resume_config, train
from charlm.vocab import Vocab
from tests.conftest import ROOT, epoch_rows, tiny


@given(st.text(alphabet=st.characters(codec="utf-8"), min_size=1))
@settings(max_examples=200, deadline=None)
def test_encode_decode_round_trips_any_unicode(text):
    vocab = Vocab(sorted(set(text)))
    assert vocab.decode(vocab.encode(text)) == text


def test_round_trip_keeps_crlf_astral_and_combining_marks():
    text = "line\r\nnext\r\n\U0001f600\U00010348 e\u0301 \u0915\u094d\u0937"
    vocab = Vocab(sorted(set(text)))
    assert vocab.decode(vocab.encode(text)) == text and "\r" in vocab.chars


class Exploit:
    """A pickle that would create a file when loaded by an unsafe loader."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "version": 1, "model": Exploit(marker)}, bad)
    with pytest.raises(CharLMError, match="refusing"):
        checkpoint.load(bad)
    assert not marker.exists()
    result = CliRunner().invoke(main, ["generate", "--checkpoint", str(bad)])
    assert result.exit_code == 1 and "refusing" in result.output and not marker.exists()


# torch warns that the file's pickle protocol is not its own: this file is meant to be foreign
@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_plain_pickle_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "p.pt"
    path.write_bytes(pickle.dumps({"hello": 1}))
    with pytest.raises(CharLMError):
        checkpoint.load(path)


@pytest.fixture
def trained(tiny_config):
    train(tiny(tiny_config, epochs=1), progress_bar=False)
    return tiny_config


def test_truncated_foreign_and_future_checkpoints(trained, tmp_path):
    good = tmp_path / "run" / checkpoint.LATEST
    data = good.read_bytes()
    cases = {
        "truncated": (data[: len(data) // 2], "truncated or corrupt"),
        "garbage": (b"this is not a checkpoint at all", "truncated or corrupt"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(content)
        with pytest.raises(CharLMError, match=message):
            checkpoint.load(path)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CharLMError, match="not a charlm checkpoint"):
        checkpoint.load(foreign)
    future = tmp_path / "future.pt"
    ckpt = torch.load(good, weights_only=True)
    ckpt["version"] = 99
    torch.save(ckpt, future)
    with pytest.raises(CharLMError, match="version 99"):
        checkpoint.load(future)


def test_atomic_save_leaves_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    checkpoint.save({"x": torch.ones(2)}, path)
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    with pytest.raises(CharLMError, match=r"cannot write .*c\.pt: the disk is full"):
        checkpoint.save({"x": torch.zeros(2)}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind


def test_nan_loss_stops_with_advice_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path):
    train(tiny(tiny_config, epochs=1, optimizer="sgd", lr=0.5), progress_bar=False)
    good = (tmp_path / "run" / checkpoint.LATEST).read_bytes()
    cfg = resume_config(tmp_path / "run", {"epochs": 3, "lr": 1e38, "clip": 0.0})
    with pytest.raises(CharLMError, match=r"^lr must be a finite number up to 1e30"):
        train(cfg, resume=True, progress_bar=False)
    with command_line(), pytest.raises(CharLMError, match="--lr"):
        train(cfg, resume=True, progress_bar=False)
    assert (tmp_path / "run" / checkpoint.LATEST).read_bytes() == good


def test_resume_refuses_changed_model_flags(trained, tmp_path):
    with pytest.raises(CharLMError, match=r"cannot resume with hidden_size=64: .* hidden_size=32"):
        resume_config(tmp_path / "run", {"hidden_size": 64})
    with command_line(), pytest.raises(CharLMError, match="--hidden-size"):
        resume_config(tmp_path / "run", {"hidden_size": 64})
    result = CliRunner().invoke(
        main,
        ["train", trained.corpus, "--out", str(tmp_path / "run"), "--resume", "--model", "gru"],
    )
    assert result.exit_code == 1 and "--model" in result.output


def test_resume_reads_auto_given_again_as_what_the_run_chose(trained, tmp_path):
    auto = {"hidden_size": 0, "seq_len": 0, "lr": 0.0, "dropout": -1.0}
    cfg = resume_config(tmp_path / "run", auto)
    ran = json.loads((tmp_path / "run" / "config.json").read_text())
    assert [getattr(cfg, k) for k in auto] == [ran[k] for k in auto] and cfg.dropout >= 0


def test_save_every_writes_checkpoints_mid_epoch(tiny_config, tmp_path):
    saved = []

    class Saves(Callback):
        def on_checkpoint(self, trainer) -> None:
            saved.append(trainer.p.step)

    train(tiny(tiny_config, save_every=3, max_steps=4), progress_bar=False, callbacks=[Saves()])
    assert saved[0] == 3


def metrics(out):
    return epoch_rows(out)


def train_args(corpus, out, sampler):
    return [
        "train",
        str(corpus),
        "--out",
        str(out),
        "--hidden-size",
        "48",
        "--embedding-dim",
        "16",
        "--seq-len",
        "16",
        "--batch-size",
        "4",
        "--epochs",
        "2",
        "--sampler",
        sampler,
        "--dropout",
        "0.1",
        "--num-layers",
        "2",
        "--device",
        "cpu",
        "--quiet",
        "--sample-every",
        "0",
    ]


def _default_sighup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def spawn(args):
    """A training process with SIGHUP at its default, even when the tests run under nohup
    (which charlm, by design, would honour)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "charlm", *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_default_sighup,
    )


@pytest.mark.parametrize(
    ("sampler", "sig"), [("consecutive", signal.SIGINT), ("random", signal.SIGTERM)]
)
def test_signal_then_resume_equals_an_uninterrupted_run(corpus, tmp_path, sampler, sig):
    """Interrupt a real training process mid-epoch; resuming must continue exactly."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    CliRunner().invoke(main, train_args(corpus, straight, sampler))

    proc = spawn([*train_args(corpus, stopped, sampler), "--save-every", "1"])
    deadline = time.time() + 120
    while not (stopped / checkpoint.LATEST).exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert "--resume" in err and "Traceback" not in err
    step = torch.load(stopped / checkpoint.LATEST, weights_only=True)["progress"]["step"]
    assert 0 < step < metrics(straight)[-1]["step"]

    resumed = CliRunner().invoke(main, [*train_args(corpus, stopped, sampler), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    a, b = metrics(straight), metrics(stopped)
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b, strict=True):
        for key in ("step", "train_loss", "val_loss", "grad_norm", "lr"):
            assert ra[key] == pytest.approx(rb[key], abs=1e-6), key
    wa = torch.load(straight / checkpoint.LATEST, weights_only=True)["model"]
    wb = torch.load(stopped / checkpoint.LATEST, weights_only=True)["model"]
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-6), k


def test_random_bytes_are_a_corrupt_file_not_an_exploit(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(CharLMError, match="truncated or corrupt"):
        checkpoint.load(path)


def test_sighup_saves_like_sigterm_unless_started_under_nohup(corpus, tmp_path):
    args = train_args(corpus, tmp_path / "hup", "random")
    proc = spawn([*args, "--epochs", "50", "--save-every", "1"])
    deadline = time.time() + 120
    while not (tmp_path / "hup" / checkpoint.LATEST).exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGHUP, err
    assert "SIGHUP: stopped at step" in err and "Traceback" not in err

    nohup = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "charlm",
            *train_args(corpus, tmp_path / "nohup", "random"),
            "--epochs",
            "50",
            "--save-every",
            "1",
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    ckpt = tmp_path / "nohup" / checkpoint.LATEST
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.02)
    nohup.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    assert nohup.poll() is None  # still training
    nohup.send_signal(signal.SIGTERM)
    _, err = nohup.communicate(timeout=120)
    assert nohup.returncode == 128 + signal.SIGTERM, err
