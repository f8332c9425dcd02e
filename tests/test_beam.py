"""Beam search against brute force: every continuation of a tiny model scored by its forward pass.

With a vocabulary of 4-5 and a length of 3-4 there are at most 625 continuations; a beam as wide
as all of them keeps every one, so it must return exactly the brute-force ranking (by total
log-probability, then the lower id sequence). Width 1 is greedy. The plain and the fast stepper
run it, the fast one in every precision it supports.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from charlm import resources
from charlm.decode import Beam
from charlm.errors import CharLMError, command_line
from charlm.generate import generate, stream
from charlm.model import CharLM, ModelConfig
from charlm.reference import ReferenceStepper
from charlm.resources import beam_bytes
from charlm.sampling import Sampling
from charlm.stepper import Stepper
from charlm.vocab import Vocab

PREFIX = [1, 0, 2]  # ids the streams are warmed on; the last one is the first step's input
MODELS = [("rnn", 1, 0), ("lstm", 2, 3), ("gru", 1, 3), ("gru", 3, 0)]
SIZES = [(4, 4), (5, 3)]  # (vocabulary, length): 256 and 125 continuations


def make_model(kind: str, layers: int, embedding: int, V: int, dtype=torch.float64) -> CharLM:
    """Weights three times PyTorch's init: distributions peaked enough for a clear ranking."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=V, model=kind, hidden_size=12, num_layers=layers, embedding_dim=embedding,
        init="pytorch",
    )  # fmt: skip
    model = CharLM(cfg).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3)
    return model.eval()


def brute_force(model: CharLM, V: int, length: int) -> list[tuple[float, tuple[int, ...]]]:
    """(total log-probability, ids) of every continuation, best first, by the forward pass in
    float64: one batch of all V**length texts."""
    model = model.double()
    seqs = list(itertools.product(range(V), repeat=length))  # in lexicographic order
    ids = torch.tensor([PREFIX + list(s) for s in seqs]).t()  # (T, M)
    with torch.no_grad():
        logp = torch.log_softmax(model(ids)[0], dim=-1)  # (T, M, V)
    start = len(PREFIX) - 1
    steps = logp[start : start + length].gather(2, ids[start + 1 :, :, None])[..., 0]  # (L, M)
    totals = steps.sum(0).tolist()
    return sorted(zip(totals, seqs, strict=True), key=lambda p: (-p[0], p[1]))


def run_beam(stepper, model: CharLM, length: int, width: int, n: int):
    """Warm `stepper` on the prefix as generate does, then search."""
    prefix = torch.tensor(PREFIX)
    with torch.no_grad():
        stepper.load_state(model(prefix[:-1, None], None, dropout=False)[1])
    with torch.inference_mode():
        return Beam(width, n).search(stepper, prefix[-1:], length)


def steppers(model: CharLM, width: int, **precision: bool):
    return {
        "plain": ReferenceStepper(model, width),
        "fast": Stepper(model, width, **precision),
    }


def assert_well_separated(ranking, gap: float) -> None:
    """The test is well posed: neighbouring brute-force totals differ by more than `gap`."""
    totals = np.array([t for t, _ in ranking])
    assert np.all(totals[:-1] - totals[1:] > gap)


@pytest.mark.parametrize(("V", "length"), SIZES)
@pytest.mark.parametrize(("kind", "layers", "embedding"), MODELS)
@pytest.mark.parametrize("which", ["plain", "fast"])
def test_a_beam_as_wide_as_all_continuations_is_the_brute_force_ranking(
    kind: str, layers: int, embedding: int, V: int, length: int, which: str
) -> None:
    model = make_model(kind, layers, embedding, V)
    ranking = brute_force(model, V, length)
    assert_well_separated(ranking, 1e-9)
    width = V**length
    ids, totals = run_beam(steppers(model, width)[which], model, length, width, width)
    assert [tuple(row) for row in ids.tolist()] == [s for _, s in ranking]
    np.testing.assert_allclose(totals, [t for t, _ in ranking], rtol=0, atol=1e-10)


@pytest.mark.parametrize(("kind", "layers", "embedding"), MODELS)
def test_a_narrow_beam_finds_continuations_no_better_than_the_best(
    kind: str, layers: int, embedding: int
) -> None:
    """Width 3 of 256: the 3 it returns are real continuations with their true totals, in
    order, and none beats the brute-force best."""
    model = make_model(kind, layers, embedding, 4)
    truth = {s: t for t, s in brute_force(model, 4, 4)}
    ids, totals = run_beam(Stepper(model, 3), model, 4, 3, 3)
    found = [tuple(row) for row in ids.tolist()]
    assert len(set(found)) == 3
    np.testing.assert_allclose(totals, [truth[s] for s in found], rtol=0, atol=1e-10)
    assert list(totals) == sorted(totals, reverse=True)
    assert totals[0] <= max(truth.values()) + 1e-12


def test_ties_go_to_the_lower_id_sequence() -> None:
    """Equal totals rank by the lexicographically smaller id sequence: with uniform logits every
    continuation ties; with ids 0 and 3 likeliest and equal, the continuations over {0, 3}."""
    model = make_model("lstm", 1, 0, 4)
    with torch.no_grad():
        model.W_hq.zero_()
        model.b_q.zero_()
    for which, stepper in steppers(model, 64).items():
        ids, totals = run_beam(stepper, model, 3, 64, 64)
        assert [tuple(r) for r in ids.tolist()] == list(itertools.product(range(4), repeat=3))
        assert len(set(totals.tolist())) == 1, which
    with torch.no_grad():
        model.b_q.copy_(torch.tensor([2.0, 0.0, 1.0, 2.0]))
    for stepper in steppers(model, 5).values():
        ids, _ = run_beam(stepper, model, 3, 5, 5)
        expected = [(0, 0, 0), (0, 0, 3), (0, 3, 0), (0, 3, 3), (3, 0, 0)]
        assert [tuple(r) for r in ids.tolist()] == expected
    # after one step the likeliest are (0), (3), (2), (1): ties between children of different
    # parents still go to the lower sequence, (2, 0) before (3, 2), not by the parents' rank
    expected = [(0, 0), (0, 3), (3, 0), (3, 3), (0, 2), (2, 0), (2, 3), (3, 2)]
    assert [s for _, s in brute_force(model, 4, 2)[:8]] == expected
    for stepper in steppers(model, 8).values():
        ids, _ = run_beam(stepper, model, 2, 8, 8)
        assert [tuple(r) for r in ids.tolist()] == expected


def test_the_beam_starts_with_one_live_hypothesis() -> None:
    """Wider than the vocabulary: the first step keeps V distinct continuations, not `width`
    copies of the best one; asking for more than exist is refused."""
    model = make_model("gru", 1, 3, 4)
    ids, _ = run_beam(Stepper(model, 8), model, 1, 8, 4)
    assert sorted(ids[:, 0].tolist()) == [0, 1, 2, 3]
    with pytest.raises(CharLMError, match="num_samples=5 asks for more continuations"):
        run_beam(Stepper(model, 8), model, 1, 8, 5)
    with (
        command_line(),
        pytest.raises(CharLMError, match="--num-samples 5 asks for more continuations"),
    ):
        run_beam(Stepper(model, 8), model, 1, 8, 5)


VOCAB = Vocab(sorted("abc\n"))


@pytest.mark.parametrize(("kind", "layers"), [("rnn", 2), ("lstm", 1), ("gru", 2)])
def test_width_one_is_greedy(kind: str, layers: int) -> None:
    model = make_model(kind, layers, 3, len(VOCAB), torch.float32)
    for precision in ({}, {"amp": True}, {"int8": True}):
        beam = generate(model, VOCAB, "ab", 40, beam_width=1, **precision)
        assert beam == generate(model, VOCAB, "ab", 40, greedy=True, **precision)


@pytest.mark.parametrize(("kind", "layers", "embedding"), MODELS)
def test_the_fast_stepper_in_every_precision(kind: str, layers: int, embedding: int) -> None:
    """float32: the brute-force ranking's top 6 (its totals 1e-4 apart, far above float32's
    rounding). bfloat16 and int8 round each logit by ~1e-2: the beam (as wide as all) returns
    distinct continuations whose reported and true totals agree to rounding, and its best is
    within rounding of the true best."""
    model = make_model(kind, layers, embedding, 4, torch.float32)
    ranking = brute_force(model, 4, 4)
    truth = {s: t for t, s in ranking}
    assert_well_separated(ranking[:7], 1e-4)
    ids, totals = run_beam(Stepper(model, 256), model, 4, 256, 6)
    assert [tuple(r) for r in ids.tolist()] == [s for _, s in ranking[:6]]
    np.testing.assert_allclose(totals, [t for t, _ in ranking[:6]], rtol=0, atol=1e-4)
    for precision in ({"amp": True}, {"int8": True}):
        ids, totals = run_beam(Stepper(model, 256, **precision), model, 4, 256, 6)
        found = [tuple(r) for r in ids.tolist()]
        assert len(set(found)) == 6 and list(totals) == sorted(totals, reverse=True)
        true = np.array([truth[s] for s in found])
        np.testing.assert_allclose(totals, true, rtol=0, atol=0.1)
        assert true[0] >= ranking[0][0] - 0.2


def test_generate_returns_the_n_best_texts_best_first() -> None:
    """The library call: the beam's ids as text after the prefix, the same on a rerun."""
    model = make_model("lstm", 2, 3, len(VOCAB))
    texts = generate(model, VOCAB, "ab", 4, beam_width=256, num_samples=3)
    ids = [VOCAB.encode(t[2:]).tolist() for t in texts]
    stepper = Stepper(model, 256)
    prefix = torch.from_numpy(VOCAB.encode("ab"))
    with torch.no_grad():
        stepper.load_state(model(prefix[:-1, None], None, dropout=False)[1])
    with torch.inference_mode():
        expected, _ = Beam(256, 3).search(stepper, prefix[-1:], 4)
    assert ids == expected.tolist()
    assert all(t.startswith("ab") and len(t) == 6 for t in texts)
    assert generate(model, VOCAB, "ab", 4, beam_width=256, num_samples=3) == texts


def test_a_byte_level_model_beams_over_bytes_and_decodes_as_generate_does() -> None:
    vocab = Vocab.of_bytes()
    model = make_model("gru", 1, 8, 256, torch.float32)
    texts = generate(model, vocab, "é", 6, beam_width=4, num_samples=2)
    assert len(texts) == 2 and texts[0] != texts[1]
    assert generate(model, vocab, "é", 6, beam_width=1) == generate(
        model, vocab, "é", 6, greedy=True
    )
    prefix = torch.from_numpy(vocab.encode("é"))
    stepper = Stepper(model, 4)
    with torch.no_grad():
        stepper.load_state(model(prefix[:-1, None], None, dropout=False)[1])
    with torch.inference_mode():
        ids, _ = Beam(4, 2).search(stepper, prefix[-1:], 6)
    assert texts == ["é" + bytes(row).decode("utf-8", "replace") for row in ids.tolist()]


@pytest.mark.parametrize(
    ("options", "flag", "parameter"),
    [
        ({"temperature": 0.5}, "--temperature", "temperature does not apply to beam_width"),
        ({"top_k": 2}, "--top-k", "top_k does not apply"),
        ({"top_p": 0.9}, "--top-p", "top_p does not apply"),
        ({"greedy": True}, "--greedy", "greedy does not apply"),
        ({"seed": 1}, "--seed", "seed does not apply"),
        ({"num_samples": 3}, "--num-samples 3 must be <= --beam-width 2",
         "num_samples=3 must be <= beam_width=2"),
        ({"beam_width": 0}, "--beam-width must be > 0", "beam_width must be > 0"),
        ({"beam_width": 2.0}, "--beam-width must be a whole number", "beam_width must be a whole"),
    ],
)  # fmt: skip
def test_what_a_beam_cannot_take_is_refused_with_the_flag(
    options: dict, flag: str, parameter: str
) -> None:
    with pytest.raises(CharLMError, match=parameter):  # a Python caller: the parameter
        Sampling(**{"beam_width": 2, **options})
    with command_line(), pytest.raises(CharLMError, match=flag) as e:
        Sampling(**{"beam_width": 2, **options})
    assert "\n" not in str(e.value)


def test_a_beam_is_neither_streamed_nor_a_refusal_of_amp_or_int8() -> None:
    model = make_model("gru", 1, 3, len(VOCAB), torch.float32)
    with pytest.raises(CharLMError, match=r"^stream prints"):
        next(stream(model, VOCAB, "ab", length=3, beam_width=2))
    with command_line(), pytest.raises(CharLMError, match="--stream"):
        next(stream(model, VOCAB, "ab", length=3, beam_width=2))
    Sampling(beam_width=2, amp=True)
    Sampling(beam_width=2, int8=True, num_samples=2)


def test_its_memory_is_estimated_before_it_is_spent(monkeypatch: pytest.MonkeyPatch) -> None:
    """The estimate grows with width, vocabulary and length; a beam over it is refused."""
    assert beam_bytes(8, 4, 72, 100) < beam_bytes(16, 4, 72, 100) < beam_bytes(16, 4, 72, 10**6)
    assert beam_bytes(8, 4, 72, 100) < beam_bytes(8, 40, 72, 100)
    model = make_model("lstm", 1, 3, len(VOCAB), torch.float32)
    need = beam_bytes(64, len(VOCAB), 6 * 12, 10**5)
    monkeypatch.setattr(resources, "available_bytes", lambda device: int(need) - 1)
    with pytest.raises(CharLMError, match="beam search beam_width=64 x length=100000 needs"):
        generate(model, VOCAB, "ab", 10**5, beam_width=64)
    with (
        command_line(),
        pytest.raises(CharLMError, match="beam search --beam-width 64 x --length 100000 needs"),
    ):
        generate(model, VOCAB, "ab", 10**5, beam_width=64)
    monkeypatch.setattr(resources, "available_bytes", lambda device: int(need) + 1)
    monkeypatch.setattr(Stepper, "__init__", lambda *a, **k: pytest.fail("got past the check"))
    with pytest.raises(pytest.fail.Exception, match="got past the check"):
        generate(model, VOCAB, "ab", 10**5, beam_width=64)
