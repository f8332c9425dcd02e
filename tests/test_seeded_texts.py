"""Texts from a fixed seed, with the thread count pinned, stay bitwise what they were.

tests/fixtures/seeded_texts.json holds the continuations that commit 086939b (before cells and
samplers were split into their own modules) generated on a CPU with AVX512-BF16 and VNNI, for
every cell kind, 1 to 3 layers, embedding or one-hot input, one stream (split over 1 or 2
threads), a few streams and WIDE streams, in float32, bfloat16 (`amp`) and int8, greedy, top-k
and top-p. A restructuring of the samplers must reproduce them character for character.

To rewrite the fixture after a deliberate change of the sampled texts, run this module with
CHARLM_WRITE_SEEDED_TEXTS=1: it writes the file and fails, so it never passes by writing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from charlm.generate import generate
from charlm.model import CharLM, ModelConfig
from charlm.vocab import Vocab

FIXTURE = Path(__file__).parent / "fixtures" / "seeded_texts.json"
VOCAB = Vocab(sorted(set("abcdefghijklmnopqrstuvwxyz .,\n")))
PREFIX, LENGTH = "the cat", 20

MODELS = [(k, n, e) for k in ("rnn", "lstm", "gru") for n in (1, 2) for e in (0, 8)]
MODELS += [("lstm", 3, 8), ("gru", 3, 0)]

# (threads, generate's keyword arguments): one stream over 1 and 2 threads (column blocks),
# 3 streams, 17 streams (WIDE: buffers stored transposed), and each precision and filter
SETTINGS: list[tuple[int, dict]] = [
    (1, {"seed": 1}),
    (2, {"seed": 1}),
    (1, {"seed": 2, "num_samples": 3}),
    (1, {"seed": 3, "num_samples": 17, "temperature": 0.8}),
    (2, {"seed": 3, "num_samples": 17, "temperature": 0.8}),
    (1, {"greedy": True}),
    (2, {"greedy": True, "num_samples": 2}),
    (1, {"seed": 4, "num_samples": 2, "top_k": 3, "temperature": 1.3}),
    (1, {"seed": 5, "num_samples": 2, "top_p": 0.7}),
    (1, {"seed": 6, "num_samples": 2, "top_k": 4, "top_p": 0.8}),
    (1, {"seed": 7, "num_samples": 3, "amp": True}),
    (1, {"seed": 8, "num_samples": 17, "amp": True}),
    (1, {"seed": 7, "num_samples": 3, "int8": True}),
    (2, {"seed": 8, "num_samples": 17, "int8": True}),
]


def make_model(kind: str, layers: int, embedding: int) -> CharLM:
    """A small float32 model with weights large enough that the samples vary."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=len(VOCAB), model=kind, hidden_size=24, num_layers=layers,
        embedding_dim=embedding, init="pytorch",
    )  # fmt: skip
    model = CharLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3)
    return model.eval()


def key(kind: str, layers: int, embedding: int, threads: int, kwargs: dict) -> str:
    options = ",".join(f"{k}={v}" for k, v in sorted(kwargs.items()))
    return f"{kind} L{layers} E{embedding} threads={threads} {options}"


def seeded_texts(kind: str, layers: int, embedding: int) -> Iterator[tuple[str, list[str]]]:
    """(key, continuations) of one model under every setting."""
    model = make_model(kind, layers, embedding)
    before = torch.get_num_threads()
    try:
        for threads, kwargs in SETTINGS:
            torch.set_num_threads(threads)
            texts = generate(model, VOCAB, PREFIX, LENGTH, **kwargs)
            yield key(kind, layers, embedding, threads, kwargs), [t[len(PREFIX) :] for t in texts]
    finally:
        torch.set_num_threads(before)


def test_write_fixture_when_asked() -> None:
    """With CHARLM_WRITE_SEEDED_TEXTS=1: rewrite the fixture from the current code, then fail."""
    if not os.environ.get("CHARLM_WRITE_SEEDED_TEXTS"):
        assert FIXTURE.is_file(), f"{FIXTURE} is missing: see this module's docstring"
        return
    texts = {k: v for m in MODELS for k, v in seeded_texts(*m)}
    FIXTURE.write_text(json.dumps(texts, indent=0, sort_keys=True) + "\n", encoding="utf-8")
    pytest.fail(f"wrote {len(texts)} cases to {FIXTURE}: check and commit it")


@pytest.mark.parametrize(("kind", "layers", "embedding"), MODELS)
def test_seeded_texts_are_bitwise_unchanged(kind: str, layers: int, embedding: int) -> None:
    expected = json.loads(FIXTURE.read_text(encoding="utf-8"))
    got = dict(seeded_texts(kind, layers, embedding))
    assert len(got) == len(SETTINGS)
    for k, texts in got.items():
        assert texts == expected[k], k
