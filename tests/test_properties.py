"""Property tests: any value of any option, in a flag, a config file or the Python API, ends
in a correct run or a one-line `error:` with nothing written (hypothesis draws the values)."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import fields
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charlm.cli import main
from charlm.config import TrainConfig, check_config
from charlm.errors import CharLMError, command_line
from tests.conftest import TEXT

# a tiny, fast run; the drawn option is added on top
TINY = [
    *("--hidden-size", "8", "--embedding-dim", "4", "--seq-len", "8", "--batch-size", "2"),
    *("--max-steps", "2", "--sample-every", "0", "--threads", "1", "--quiet", "--device", "cpu"),
]
# options whose legal values make a long or large run: drawn values are capped to stay fast
SLOW = {
    *("hidden_size", "embedding_dim", "num_layers", "seq_len", "batch_size", "max_steps"),
    *("epochs", "sample_length", "sample_every", "time_budget", "threads", "save_every"),
}
NUMERIC = [f.name for f in fields(TrainConfig) if f.type in ("int", "float")]

numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["0", "-0", "1e308", "-1e-308", "nan", "inf", "-inf", "0x10", "1_000", " 3"]),
    st.sampled_from(["", "3.5", "1e3", "2**63", "9" * 30]),
)


def capped(name: str, value: object) -> object:
    """Legal but slow values are capped: the large ones are the resource tests' job."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if name in SLOW and number and math.isfinite(value) and value > 16:
        return 16
    return value


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("c") / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def clean_outcome(result, out: Path) -> None:
    """Success, or one `error:` line (exit 1, or click's usage error, exit 2) and no folder."""
    assert "Traceback" not in result.output, result.output
    if result.exit_code == 0:
        return
    assert result.exit_code in (1, 2), (result.exit_code, result.output, result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith(("error:", "Error:"))]
    assert len(errors) == 1, result.output
    if result.exit_code == 1:
        assert len([line for line in result.output.splitlines() if line.strip()]) == 1
    if "training diverged" not in result.output:  # refused before anything was written
        assert not out.exists(), f"{out} was created by a refused run"


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.sampled_from(NUMERIC), value=numbers)
def test_any_number_in_any_training_flag(corpus, tmp_path_factory, name, value):
    value = capped(name, value)
    out = tmp_path_factory.mktemp("run") / "out"
    flag = "--" + name.replace("_", "-")
    result = CliRunner().invoke(
        main, ["train", str(corpus), "--out", str(out), *TINY, flag, str(value)]
    )
    clean_outcome(result, out)
    shutil.rmtree(out, ignore_errors=True)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    name=st.sampled_from(NUMERIC),
    value=st.one_of(
        st.integers(-(2**70), 2**70),
        st.floats(),
        st.text(max_size=4),
        st.booleans(),
        st.none(),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(st.text(max_size=2), st.integers()),
    ),
)
def test_any_value_in_a_config_file(corpus, tmp_path_factory, name, value):
    folder = tmp_path_factory.mktemp("cfg")
    config, out = folder / "run.json", folder / "out"
    config.write_text(json.dumps({name: capped(name, value)}, allow_nan=True))
    result = CliRunner().invoke(
        main, ["train", str(corpus), "--out", str(out), "--config", str(config), *TINY]
    )
    clean_outcome(result, out)


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(NUMERIC), value=st.one_of(
    st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
))  # fmt: skip
def test_the_python_api_checks_as_the_cli_does(name, value):
    """TrainConfig with any number: check_config accepts it or raises CharLMError, never a
    TypeError/OverflowError from below."""
    cfg = TrainConfig(**{name: value})
    try:
        check_config(cfg)
    except CharLMError as e:  # to a Python caller the parameter, to the command's user the flag
        assert "\n" not in str(e) and str(e).startswith(f"{name} ") and "--" not in str(e)
        with command_line(), pytest.raises(CharLMError) as cli:
            check_config(cfg)
        assert "\n" not in str(cli.value) and ("--" + name.replace("_", "-")) in str(cli.value)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    option=st.sampled_from(["--length", "--temperature", "--top-k", "--top-p", "--num-samples",
                            "--seed", "--beam-width"]),
    value=numbers,
)  # fmt: skip
def test_any_number_in_any_generate_option(trained_model, option, value):
    try:  # one sample streams any --length, as it should: cap what would take hours
        number = int(str(value).replace("_", ""))
    except ValueError:
        number = None
    slow = option in ("--length", "--num-samples", "--beam-width")
    if slow and number is not None and number > 50:
        value = 50
    args = ["generate", "--checkpoint", str(trained_model), "--length", "20", option, str(value)]
    result = CliRunner().invoke(main, args)
    assert "Traceback" not in result.output and result.exit_code in (0, 1, 2), result.output
    if result.exit_code == 1:
        assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("error:")


@pytest.fixture(scope="module")
def trained_model(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "run"
    result = CliRunner().invoke(main, ["train", str(corpus), "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    return out
