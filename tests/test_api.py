"""The public surface: the Python API example of the README runs as written; --version;
shell completion."""

from __future__ import annotations

import math
import re

import pytest

import charlm
from tests.conftest import ROOT, run_cli

# The README's "Using charlm from Python" example, verbatim: this test runs exactly this code.
EXAMPLE = """\
import charlm

# train: every flag of `charlm train` is a TrainConfig field
cfg = charlm.TrainConfig(
    corpus="builtin",  # Python's help text (offline), a named corpus, or a file
    out="runs/api",
    hidden_size=64,
    seq_len=32,
    batch_size=16,
    max_steps=60,  # a quick demonstration; real runs train for thousands of steps
    device="cpu",
)
result = charlm.train(cfg, progress_bar=False)
print(f"stopped by {result.stopped_by} at step {result.progress.step}")

# load a checkpoint (a run folder means its best.pt) and continue a prefix
model, vocab, checkpoint = charlm.load_model("runs/api", device="cpu")
for text in charlm.generate(model, vocab, "The ", length=60, num_samples=2, seed=1):
    print(text)

# score a text under the model
score = charlm.score_text(model, vocab, "To be, or not to be, that is the question.")
print(f"perplexity {score.perplexity:.2f}, {score.bits_per_char:.2f} bits per character")
"""


def test_public_names() -> None:
    for name in ("load_model", "generate", "score_text", "train", "TrainConfig"):
        assert name in charlm.__all__ and callable(getattr(charlm, name))


def test_readme_example_runs(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CHARLM_CACHE", str(tmp_path / "cache"))  # nothing is cached or fetched
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__main__"}
    exec(compile(EXAMPLE, "README example", "exec"), namespace)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "stopped by max_steps at step 60"
    assert (tmp_path / "runs" / "api" / "best.pt").exists()
    samples = out.split("\n", 1)[1].rsplit("\nperplexity", 1)[0]
    assert samples.startswith("The ") and samples.count("The ") >= 2
    found = re.fullmatch(r"perplexity (\S+), (\S+) bits per character", lines[-1])
    ppl, bpc = float(found[1]), float(found[2])
    vocab = len(namespace["vocab"])
    assert 1 < ppl < vocab, "a trained model beats uniform guessing over its characters"
    assert bpc == pytest.approx(math.log2(ppl), abs=0.01)


def test_readme_shows_this_example() -> None:
    """The README's Python API section holds this exact, tested example: a missing or edited
    example fails here (the test above runs this copy)."""
    assert EXAMPLE in (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_training_options_table_shows_the_real_defaults() -> None:
    """Each row of the README's "Training options" table: its defaults are TrainConfig's."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## Training options")[1]
    rows = [line.split("|")[1:3] for line in section.split("\n## ")[0].splitlines()
            if line.startswith("| `--")]  # fmt: skip
    assert len(rows) >= 10
    defaults = charlm.TrainConfig()
    checked = 0
    for options, shown in rows:
        flags = re.findall(r"`--([a-z-]+)`", options)
        values = [v.split(" (")[0].strip().strip("`") for v in shown.split(",")]  # 0 (auto)
        assert len(values) == len(flags), options
        for flag, value in zip(flags, values, strict=True):
            real = getattr(defaults, flag.replace("-", "_"))
            if value == "-":
                assert not real, flag  # none (0 or None)
            elif isinstance(real, bool):
                assert value == ("on" if real else "off"), flag
            elif isinstance(real, (int, float)):
                assert float(value) == real, flag
            else:
                assert value == real, flag
            checked += 1
    assert checked >= 15


def test_version() -> None:
    proc = run_cli("--version", timeout=120)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"charlm, version {charlm.__version__}"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{charlm.__version__}"' in pyproject


def test_shell_completion(monkeypatch) -> None:
    monkeypatch.setenv("_CHARLM_COMPLETE", "bash_source")
    script = run_cli(timeout=120)
    assert script.returncode == 0, script.stderr
    assert "complete -o nosort -F _charlm_completion charlm" in script.stdout
    # what bash asks when the user types `charlm ge<TAB>`
    monkeypatch.setenv("_CHARLM_COMPLETE", "bash_complete")
    monkeypatch.setenv("COMP_WORDS", "charlm ge")
    monkeypatch.setenv("COMP_CWORD", "1")
    answer = run_cli(timeout=120)
    assert answer.stdout.split() == ["plain,generate"]
