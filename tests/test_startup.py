"""The command starts without torch: --version, --help and Tab completion answer at once, and
`import charlm` stays cheap until a function that needs torch is used."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from charlm.cli import main
from tests.conftest import ROOT

# runs the `charlm` command in a process where importing torch fails
WITHOUT_TORCH = (
    "import sys; sys.modules['torch'] = None; from charlm.cli import main; main(prog_name='charlm')"
)


def python(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=full_env, timeout=120
    )


def test_importing_the_cli_and_the_package_leaves_torch_alone() -> None:
    code = (
        "import sys, charlm, charlm.cli; "
        "assert charlm.__version__ and callable(charlm.cli.main); "
        "assert 'torch' not in sys.modules, 'torch was imported'; "
        "charlm.TrainConfig(hidden_size=8); "  # the settings need no torch either
        "assert 'torch' not in sys.modules, 'TrainConfig imported torch'; "
        "charlm.score_text; "  # the first use of a torch function imports it
        "assert 'torch' in sys.modules; print('ok')"
    )
    proc = python("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


@pytest.mark.parametrize(
    "args",
    [
        ["--version"],
        ["--help"],
        ["train", "--help"],
        ["generate", "--help"],
        ["eval", "perplexity", "--help"],
        ["info", "--help"],
        ["plot", "--help"],
        ["corpora", "--help"],
    ],
)
def test_version_and_help_answer_with_torch_unimportable(args: list[str]) -> None:
    proc = python("-c", WITHOUT_TORCH, *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("charlm, version" if args == ["--version"] else "Usage:")


def test_the_real_entry_point_never_imports_torch_for_version() -> None:
    """`python -X importtime` lists every module the process imported."""
    proc = python("-X", "importtime", "-m", "charlm", "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("charlm, version")
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()]
    assert "charlm.cli" in imported  # the listing is real
    assert not [m for m in imported if m == "torch" or m.startswith("torch.")]


def test_tab_completion_with_torch_unimportable() -> None:
    env = {"_CHARLM_COMPLETE": "bash_complete", "COMP_WORDS": "charlm train --hidden-s"}
    proc = python("-c", WITHOUT_TORCH, COMP_CWORD="2", **env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["plain,--hidden-size"]


def test_top_level_help_shows_whole_descriptions() -> None:
    """click shortens a docstring's first sentence to fit a line; each command says it in full."""
    output = CliRunner().invoke(main, ["--help"], terminal_width=80).output
    listing = " ".join(output.split("Commands:")[1].split())
    assert "..." not in listing
    commands = {**main.commands, **main.commands["eval"].commands}
    for name in ("train", "generate", "eval", "info", "plot", "corpora"):
        short = commands[name].short_help
        assert short and short.endswith(".") and f"{name} {short}" in listing, name
    perplexity = CliRunner().invoke(main, ["eval", "--help"], terminal_width=80).output
    assert commands["perplexity"].short_help in perplexity


def test_train_and_generate_stay_the_functions_after_their_modules_load() -> None:
    """`import charlm.train` binds the module on the package; charlm.train stays the function."""
    proc = python(
        "-c",
        "import charlm, charlm.train, charlm.generate; from charlm.train import Trainer; "
        "assert callable(charlm.train) and charlm.train.__module__ == 'charlm.train'; "
        "assert callable(charlm.generate) and charlm.generate.__module__ == 'charlm.generate'; "
        "assert charlm.load_model.__name__ == 'load_model'; "
        "assert set(charlm.__all__) <= set(dir(charlm)); print('ok')",
    )
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        import charlm

        charlm.nope  # noqa: B018
