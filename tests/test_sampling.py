"""The sampling settings object: one check where it is made, and the two ways to pass it."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from click.testing import CliRunner

from charlm.cli import main
from charlm.errors import CharLMError, command_line
from charlm.generate import generate, stream
from charlm.model import CharLM, ModelConfig
from charlm.sampling import Sampling
from charlm.vocab import Vocab

VOCAB = Vocab(sorted(set("abcdefgh \n")))


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [
        ("length", -1, "--length"),
        ("temperature", 0.0, "--temperature"),
        ("temperature", math.nan, "--temperature"),
        ("temperature", -math.inf, "--temperature"),
        ("top_k", 0, "--top-k"),
        ("top_p", 0.0, "--top-p"),
        ("top_p", 1.5, "--top-p"),
        ("top_p", math.nan, "--top-p"),
        ("num_samples", 0, "--num-samples"),
        ("num_samples", 2.0, "--num-samples"),
        ("top_k", 2.5, "--top-k"),
        ("length", True, "--length"),
        ("seed", 2**64, "--seed"),
        ("seed", -(2**63) - 1, "--seed"),
        ("seed", "7", "--seed"),
    ],
)
def test_bad_values_are_refused_with_the_flag(field: str, value: object, flag: str) -> None:
    with pytest.raises(CharLMError, match=f"^{field} must"):
        Sampling(**{field: value})
    with command_line(), pytest.raises(CharLMError, match=flag):
        Sampling(**{field: value})


def test_amp_and_int8_exclude_each_other_and_settings_are_frozen() -> None:
    with pytest.raises(CharLMError, match=r"^amp and int8 are two"):
        Sampling(amp=True, int8=True)
    with command_line(), pytest.raises(CharLMError, match="--amp and --int8"):
        Sampling(amp=True, int8=True)
    s = Sampling()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.seed = 3  # type: ignore[misc]
    assert (s.length, s.temperature, s.num_samples, s.top_k) == (200, 1.0, 1, None)


def test_settings_and_keyword_options_sample_the_same() -> None:
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=len(VOCAB), hidden_size=16, embedding_dim=8))
    s = Sampling(length=30, temperature=0.9, top_k=5, num_samples=2, seed=4)
    texts = generate(model, VOCAB, "ab", settings=s)
    assert texts == generate(
        model, VOCAB, "ab", 30, temperature=0.9, top_k=5, num_samples=2, seed=4
    )
    pieces = ["", ""]
    for chars in stream(model, VOCAB, "ab", settings=s):
        pieces = [p + ch for p, ch in zip(pieces, chars, strict=True)]
    assert ["ab" + p for p in pieces] == texts
    assert len(generate(model, VOCAB, "ab", seed=1)[0]) == 2 + 200  # Sampling's default length
    with pytest.raises(TypeError, match="not both"):
        generate(model, VOCAB, "ab", 30, settings=s)
    with pytest.raises(TypeError, match="not both"):
        generate(model, VOCAB, "ab", settings=s, seed=1)
    with pytest.raises(TypeError):
        generate(model, VOCAB, "ab", 30, temprature=0.9)  # a misspelt option is not ignored


def test_the_cli_checks_its_settings_once(
    tiny_config, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    from charlm.train import train

    run = train(dataclasses.replace(tiny_config, epochs=1, sample_every=0), progress_bar=False).out
    checks = []
    original = Sampling.__post_init__

    def counted(self: Sampling) -> None:
        checks.append(self)
        original(self)

    monkeypatch.setattr(Sampling, "__post_init__", counted)
    args = ["generate", "--checkpoint", str(run), "--length", "10", "--num-samples", "2"]
    result = CliRunner().invoke(main, [*args, "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert len(checks) == 1
