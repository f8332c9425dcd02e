"""Checkpoints are validated as a schema before use: crafted or damaged ones are one line."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charlm import checkpoint
from charlm.checkpoint import load_model
from charlm.errors import CharLMError
from charlm.model import CharLM, ModelConfig
from tests.conftest import run_cli

VOCAB = list("\n !,.:;?ACEFILMOSTWabcdefghiklmnoprstuvwy")


@pytest.fixture(scope="module")
def payload() -> dict:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=len(VOCAB), model="gru", hidden_size=8, embedding_dim=4)
    model = CharLM(cfg)
    return {
        "model_config": vars(cfg).copy(),
        "vocab": VOCAB,
        "model": model.state_dict(),
    }


def save(tmp_path: Path, payload: dict) -> Path:
    path = tmp_path / "c.pt"
    checkpoint.save(payload, path)
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda p: p.update(vocab=VOCAB[:-3]),
            "vocabulary has 38 characters, its model predicts 41",
        ),
        (lambda p: p.update(vocab=[*VOCAB[:-1], "a"]), "sorted, distinct single characters"),
        (lambda p: p.update(vocab=["ab", *VOCAB[1:]]), "sorted, distinct single characters"),
        (lambda p: p["model_config"].update(hidden_size=7), "has shape"),
        (lambda p: p["model_config"].update(hidden_size=10**9), "hidden_size 1000000000 is larg"),
        (lambda p: p["model_config"].update(num_layers=10**6), "num_layers 1000000 is larger"),
        (lambda p: p["model_config"].update(num_layers=2), "not those of its model config"),
        (lambda p: p["model_config"].update(model="transformer"), "unknown model"),
        (lambda p: p["model_config"].update(vocab_size="\n"), r"predicts '\\n'"),
        (lambda p: p["model_config"].update(colour="blue"), "colour"),
        (lambda p: p["model"].pop("W_hq"), "not those of its model config"),
        (lambda p: p["model"].update(b_q=torch.zeros(3)), "b_q has shape"),
        (lambda p: p["model"].update(W_hq=torch.zeros(8, 41, dtype=torch.long)), "floating"),
        (lambda p: p.update(model=[1, 2, 3]), "not a dict of tensors"),
        (lambda p: p["model"].update(W_hq="weights"), "not a dict of tensors"),
        (lambda p: p.pop("vocab"), "vocab"),
    ],
)
def test_a_crafted_checkpoint_is_refused_in_one_line(tmp_path, payload, change, message):
    crafted = copy.deepcopy(payload)
    change(crafted)
    path = save(tmp_path, crafted)
    with pytest.raises(CharLMError, match=message) as caught:
        load_model(path, "cpu")
    assert "\n" not in str(caught.value)


def test_generate_and_eval_refuse_a_short_vocabulary(tmp_path, payload):
    """Once a wrong perplexity with exit 0 (eval) and a traceback (generate)."""
    crafted = copy.deepcopy(payload)
    crafted["vocab"] = VOCAB[:-3]
    path = save(tmp_path, crafted)
    text = tmp_path / "t.txt"
    text.write_text("ab ab ab\n")
    for args in (["generate", "--checkpoint", str(path)],
                 ["eval", "perplexity", str(text), "--checkpoint", str(path)]):  # fmt: skip
        result = run_cli(*args)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    key=st.sampled_from(["vocab_size", "hidden_size", "num_layers", "embedding_dim", "dropout",
                         "model", "init", "init_std"]),
    value=st.one_of(st.integers(-2, 2**40), st.floats(allow_nan=True), st.text(max_size=5),
                    st.none(), st.lists(st.integers(), max_size=2)),
)  # fmt: skip
def test_any_model_config_value_loads_or_is_one_line(tmp_path, payload, key, value):
    crafted = copy.deepcopy(payload)
    crafted["model_config"][key] = value
    path = save(tmp_path, crafted)
    try:
        model, vocab, _ = load_model(path, "cpu")
    except CharLMError as e:
        assert "\n" not in str(e)
        return
    assert len(vocab) == model.cfg.vocab_size  # what loads is consistent
