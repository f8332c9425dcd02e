"""The public surface: the README's Python example runs as written; --version;
shell completion."""

from __future__ import annotations

import math
import re

import pytest

import charlm
from tests.conftest import ROOT, run_cli


def readme_example() -> str:
    """The README's Python example: its first ```python block."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return readme.split("```python\n", 1)[1].split("```", 1)[0]


def test_public_names() -> None:
    for name in ("load_model", "generate", "score_text", "train", "TrainConfig"):
        assert name in charlm.__all__ and callable(getattr(charlm, name))


def test_readme_example_runs(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CHARLM_CACHE", str(tmp_path / "cache"))  # nothing is cached or fetched
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__main__"}
    exec(compile(readme_example(), "README example", "exec"), namespace)
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


def test_the_options_table_shows_the_real_defaults() -> None:
    """Each row of the training page's options table: its defaults are TrainConfig's."""
    page = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    section = page.split("## All the options")[1]
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
