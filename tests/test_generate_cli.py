"""`charlm generate`: sample layout, --stream, --interactive (piped stdin and a real terminal)."""

from __future__ import annotations

import importlib
import os
import select
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from charlm.checkpoint import load_model
from charlm.cli import main
from charlm.train import TrainConfig, train
from tests.conftest import ROOT, TEXT, run_cli

# the module, not the function `charlm.generate` that the package exports under the same name
gen_module = importlib.import_module("charlm.generate")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained model (about a second on the CPU), shared by the tests of this module."""
    folder = tmp_path_factory.mktemp("gen")
    corpus = folder / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    cfg = TrainConfig(
        corpus=str(corpus), out=str(folder / "run"), hidden_size=32, embedding_dim=16,
        seq_len=16, batch_size=8, epochs=1, sample_every=0, device="cpu",
    )  # fmt: skip
    return train(cfg, progress_bar=False).out


def cli(*args: str, input: str | None = None):
    return CliRunner().invoke(main, ["generate", *args], input=input)


def samples(run: Path, prefix: str, length: int, **kwargs) -> list[str]:
    model, vocab, _ = load_model(run, "cpu")
    return gen_module.generate(model, vocab, prefix, length, **kwargs)


def layout(texts: list[str]) -> str:
    """The documented layout: each sample from a fresh line, a blank line between samples."""
    return "\n".join(t if t.endswith("\n") else t + "\n" for t in texts)


@pytest.mark.parametrize(("flag", "dtype"), [("amp", torch.bfloat16), ("int8", torch.int8)])
def test_precision_flag_reaches_the_sampler(
    run: Path, monkeypatch: pytest.MonkeyPatch, flag: str, dtype: torch.dtype
) -> None:
    seen = []
    original = gen_module.Stepper

    def spy(*args, **kwargs):
        stepper = original(*args, **kwargs)
        seen.append(stepper.h_m.dtype)
        return stepper

    monkeypatch.setattr(gen_module, "Stepper", spy)
    result = cli("--checkpoint", str(run), "--prefix", "All:", "--length", "30",
                 "--num-samples", "4", "--seed", "7", f"--{flag}")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output == layout(samples(run, "All:", 30, num_samples=4, seed=7, **{flag: True}))
    assert seen[0] == dtype


def test_amp_and_int8_together_is_one_clear_error(run: Path) -> None:
    result = cli("--checkpoint", str(run), "--num-samples", "4", "--amp", "--int8")
    assert result.exit_code != 0
    assert result.output == (
        "error: --amp and --int8 are two precisions for the same matmuls: choose one\n"
    )


def test_samples_start_on_new_lines_separated_by_blank_lines(run: Path) -> None:
    result = cli("--checkpoint", str(run), "--prefix", "All:", "--length", "40",
                 "--num-samples", "3", "--seed", "7")  # fmt: skip
    assert result.exit_code == 0, result.output
    texts = samples(run, "All:", 40, num_samples=3, seed=7)
    assert len(set(texts)) > 1, "three samples drawn with one seed should differ"
    assert result.output == layout(texts)
    for text in texts:  # every sample begins a line, prefix first
        assert result.output.startswith(text) or f"\n\n{text}" in result.output


def test_stream_prints_the_same_text_as_it_is_produced(
    run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--checkpoint", str(run), "--prefix", "First", "--length", "30", "--seed", "3"]
    plain = cli(*args).output
    seen: list[str] = []  # what had been printed each time the next character was asked for
    real_stream = gen_module.stream

    def watched(*a, **k):
        for chars in real_stream(*a, **k):
            seen.append(capsys.readouterr().out)
            yield chars
        seen.append(capsys.readouterr().out)

    monkeypatch.setattr(gen_module, "stream", watched)
    with pytest.raises(SystemExit) as e:
        main(["generate", *args, "--stream"], prog_name="charlm")
    assert e.value.code == 0
    seen.append(capsys.readouterr().out)  # the closing newline
    assert "".join(seen) == plain
    assert seen[0] == "First", "the prefix is printed before the first character is sampled"
    assert all(len(piece) == 1 for piece in seen[1:-1]), "each character printed as produced"


def test_stream_needs_one_sample(run: Path) -> None:
    result = cli("--checkpoint", str(run), "--stream", "--num-samples", "2")
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "--num-samples 1" in result.output


@pytest.mark.parametrize("precision", [[], ["--amp"], ["--int8"]])
def test_beam_width_prints_the_n_best_best_first(run: Path, precision: list[str]) -> None:
    args = ["--checkpoint", str(run), "--prefix", "All:", "--length", "30", *precision]
    result = cli(*args, "--beam-width", "4", "--num-samples", "3")
    assert result.exit_code == 0, result.output
    flags = {p.lstrip("-"): True for p in precision}
    texts = samples(run, "All:", 30, beam_width=4, num_samples=3, **flags)
    assert len(set(texts)) == 3 and result.output == layout(texts)
    one = cli(*args, "--beam-width", "4")  # one continuation: printed once found, not streamed
    assert one.exit_code == 0, one.output
    assert one.output == layout(texts[:1])


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--temperature", "0.8"], "--temperature"),
        (["--top-k", "3"], "--top-k"),
        (["--top-p", "0.9"], "--top-p"),
        (["--greedy"], "--greedy"),
        (["--seed", "1"], "--seed"),
        (["--stream"], "--stream"),
        (["--num-samples", "5"], "--num-samples 5 must be <= --beam-width 4"),
    ],
)
def test_beam_width_refuses_what_a_beam_cannot_take(run: Path, extra: list[str], flag: str) -> None:
    result = cli("--checkpoint", str(run), "--beam-width", "4", *extra)
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith(f"error: {flag}")


def test_interactive_beam_prints_each_line_once_found(run: Path) -> None:
    result = cli("--checkpoint", str(run), "--interactive", "--length", "15", "--beam-width",
                 "3", input="All:\nFirst\n")  # fmt: skip
    assert result.exit_code == 0, result.output
    expected = [samples(run, p, 15, beam_width=3)[0] for p in ("All:", "First")]
    assert result.output == layout(expected)


def test_interactive_continues_each_line(run: Path) -> None:
    result = cli("--checkpoint", str(run), "--interactive", "--length", "25", "--seed", "5",
                 input="All:\nFirst Citizen:\n")  # fmt: skip
    assert result.exit_code == 0, result.output
    expected = [
        samples(run, p, 25, seed=5 + n)[0] for n, p in enumerate(["All:", "First Citizen:"])
    ]
    assert result.output == layout(expected)


def test_interactive_bad_prefix_is_reported_and_the_loop_goes_on(run: Path) -> None:
    result = cli("--checkpoint", str(run), "--interactive", "--length", "10", "--seed", "1",
                 input="€uro\nAll:")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "error: 1 character(s) not in the model's vocabulary: '€'" in result.output
    assert "€uro" not in result.output.replace("'€'", ""), "nothing printed for a bad prefix"
    assert samples(run, "All:", 10, seed=2)[0] in result.output  # line 1: --seed + 1


def test_interactive_piped_stdin_in_a_real_process(run: Path) -> None:
    proc = run_cli("generate", "--checkpoint", str(run), "--interactive", "--length", "20",
                   "--seed", "2", "--device", "cpu", input="All:\n", timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == layout(samples(run, "All:", 20, seed=2))
    assert proc.stderr == ""
    empty = run_cli("generate", "--checkpoint", str(run), "--interactive", input="", timeout=120)
    assert (empty.returncode, empty.stdout, empty.stderr) == (0, "", "")


def _read_until(fd: int, marker: bytes, timeout: float = 60) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"no {marker!r} from the terminal; got {data!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        data += chunk
    return data


def _wait(pid: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, 9)
    raise AssertionError("charlm generate --interactive did not exit")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
@pytest.mark.parametrize("quit_key", [b"\x04", b"\x03"], ids=["ctrl-d", "ctrl-c"])
def test_interactive_in_a_real_terminal(run: Path, quit_key: bytes) -> None:
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: charlm on the terminal's slave side
        # as a shell starts a foreground job: a runner started in the background (e.g. `cmd &`
        # in a script) ignores SIGINT, and an ignored SIGINT would be inherited through exec
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "dumb"}
        os.execve(sys.executable, [sys.executable, "-m", "charlm", "generate", "--checkpoint",
                  str(run), "--interactive", "--length", "20", "--seed", "4", "--device",
                  "cpu"], env)  # fmt: skip
    try:
        assert b"Ctrl-D" in _read_until(fd, b"> ")  # the hint, then the prompt
        os.write(fd, b"All:\n")
        shown = _read_until(fd, b"> ").replace(b"\r\n", b"\n").decode()
        expected = samples(run, "All:", 20, seed=4)[0]
        assert expected in shown
        os.write(fd, b"First\n")  # the typed line's echo, then its continuation: no blank line
        shown = _read_until(fd, b"> ").replace(b"\r\n", b"\n").decode()
        assert shown == "First\n" + layout([samples(run, "First", 20, seed=5)[0]]) + "> "
        # let the child reach its read: CPython's readline loses a SIGINT that lands between
        # printing the prompt and blocking in select() (it then waits for the next key)
        time.sleep(0.5)
        os.write(fd, quit_key)
        rest = _read_until(fd, b"\x00", timeout=30)  # everything until the terminal closes
        assert _wait(pid) == 0
        assert b"Traceback" not in rest
    finally:
        os.close(fd)
