"""The fast Stepper against the plain reference stepper, and the reference against the model.

The reference (charlm/reference.py) applies each cell's equations as written; it is checked
against `CharLM.forward` in float64, then the fast Stepper is held to it for every cell, 1-3
layers, embedding and one-hot input, 1 stream (one column block per thread), a few streams and
WIDE streams (buffers stored transposed), in every precision.
"""

from __future__ import annotations

import re

import pytest
import torch

from charlm.cells import CELLS
from charlm.errors import CharLMError
from charlm.model import CharLM, ModelConfig
from charlm.reference import ReferenceStepper
from charlm.stepper import WIDE, Stepper

V, STEPS = 30, 30
AMP_BOUND = {"mingru": 3e-2, "minlstm": 3e-2}  # see test_low_precision_steps_stay_close...
# 1-3 layers; the min cells' layers are all alike after the first (their residual blocks) and
# cost more to step (four matmuls a layer), so 1-2 of them
MODELS = [
    (kind, n, e)
    for kind in CELLS
    for n in ((1, 2) if kind.startswith("min") else (1, 2, 3))
    for e in (0, 8)
]


def make_model(kind: str, layers: int, embedding: int, dtype: torch.dtype) -> CharLM:
    """Weights twice PyTorch's init: peaked distributions, states that use tanh's whole range."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=V, model=kind, hidden_size=24, num_layers=layers, embedding_dim=embedding,
        init="pytorch",
    )  # fmt: skip
    model = CharLM(cfg).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2)
    return model.eval()


def inputs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (6, 1) prefix to warm the state on, and (STEPS, n) ids to step through."""
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, V, (6, 1), generator=g), torch.randint(0, V, (STEPS, n), generator=g)


def max_prob_error(model: CharLM, n: int, sync: bool = False, **precision: bool) -> float:
    """Largest |p_fast - p_reference| over STEPS steps from the same warmed state.

    sync: before every step, the reference takes the fast stepper's state, so that the error
    measured is one step's, not the drift of two trajectories (low precision).
    """
    prefix, xs = inputs(n)
    with torch.no_grad():
        state = model(prefix)[1]
    fast, ref = Stepper(model, n, **precision), ReferenceStepper(model, n)
    fast.load_state(state)
    ref.load_state(state)
    lstm = isinstance(state, tuple)
    error = 0.0
    with torch.inference_mode():
        for x in xs:
            if sync:
                ref.load_state((fast.h.clone(), fast.c.clone()) if lstm else fast.h.clone())
            p_fast = torch.softmax(fast.step(x).double(), dim=-1)
            p_ref = torch.softmax(ref.step(x).double(), dim=-1)
            error = max(error, float((p_fast - p_ref).abs().max()))
    return error


@pytest.mark.parametrize(("kind", "layers", "embedding"), MODELS)
def test_reference_equals_forward_in_float64(kind: str, layers: int, embedding: int) -> None:
    """The plain equations, step by step, give the sequence forward pass's logits."""
    model = make_model(kind, layers, embedding, torch.float64)
    prefix, xs = inputs(3)
    ids = torch.cat([prefix.expand(-1, 3), xs])  # (6 + STEPS, 3)
    with torch.no_grad():
        full = model(ids)[0]
    ref = ReferenceStepper(model, 3, scale=2.0)
    for t in range(ids.shape[0]):
        torch.testing.assert_close(ref.step(ids[t]), full[t] * 2.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [1, 3, WIDE + 1])
@pytest.mark.parametrize(("kind", "layers", "embedding"), MODELS)
def test_fast_equals_reference_float64_and_float32(
    kind: str, layers: int, embedding: int, n: int
) -> None:
    """Free-running for 30 steps (a wrong c or h would show): float64 agrees to ~1e-16, float32
    to its rounding (eps 1.2e-7) grown a few times by the recurrence; measured <= 3e-7."""
    assert max_prob_error(make_model(kind, layers, embedding, torch.float64), n) < 1e-13
    assert max_prob_error(make_model(kind, layers, embedding, torch.float32), n) < 2e-6


@pytest.mark.parametrize(("kind", "layers", "embedding"), MODELS)
def test_one_stream_in_column_blocks_equals_reference(
    kind: str, layers: int, embedding: int
) -> None:
    """One stream splits every matmul into a column block per thread: 3 blocks here."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        model = make_model(kind, layers, embedding, torch.float64)
        assert Stepper(model, 1).stages[0].gemm.W.shape[0] == 3
        assert max_prob_error(model, 1) < 1e-13
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("n", [3, WIDE + 1])
@pytest.mark.parametrize(("kind", "layers", "embedding"), MODELS)
def test_low_precision_steps_stay_close_to_reference(
    kind: str, layers: int, embedding: int, n: int
) -> None:
    """bfloat16 and int8 matmuls: one step's probabilities within 1e-2 and 2e-2 of the plain
    float32 equations from the same state.

    bfloat16 keeps 8 significant bits: each matmul operand (states |h| <= 1, weights) is off by
    up to 2^-9 = 0.2% relative, and a logit sums K ~ 2H such products, so it is off by about
    sqrt(K) * 0.2% of its scale (~1e-2 here); a probability moves by at most half the largest
    logit error. int8 rounds each weight to 1/254 of its column's largest |w| and h to 1/254:
    about twice bfloat16's step. Measured over these models: <= 2.5e-3 (bfloat16) and
    <= 4e-3 (int8), so the bounds leave a margin of 4-5 for other seeds and thread counts.
    Sizes: sync=True measures one step, not two trajectories drifting apart over 30 steps.
    A cell whose state is unbounded (the min cells) refuses int8 (`Cell.bounded_state`). The
    min cells' test models spread their logits 4x as wide (std 2.3 against 0.6: the doubled
    weights act again through the residual stream, the feed-forward block and the gains), and
    a logit's rounding error grows with it: measured <= 1.3e-2, bound AMP_BOUND[kind].
    """
    model = make_model(kind, layers, embedding, torch.float32)
    assert max_prob_error(model, n, sync=True, amp=True) < AMP_BOUND.get(kind, 1e-2)
    if model.rnn.bounded_state:
        assert max_prob_error(model, n, sync=True, int8=True) < 2e-2
    else:
        with pytest.raises(CharLMError, match=re.escape("does not declare |h| <= 1")):
            max_prob_error(model, n, sync=True, int8=True)


def test_low_precision_is_used_and_state_stays_in_model_precision() -> None:
    model = make_model("lstm", 2, 8, torch.float32)
    amp, int8 = Stepper(model, 3, amp=True), Stepper(model, 3, int8=True)
    assert amp.h_m.dtype == torch.bfloat16 and int8.h_m.dtype == torch.int8
    for stepper in (amp, int8):
        assert stepper.h.dtype == stepper.c.dtype == stepper.logits.dtype == torch.float32


def test_int8_is_refused_for_a_cell_without_a_bounded_state() -> None:
    """int8 quantizes h as round(127 h): only a cell that declares |h| <= 1 may use it."""
    model = make_model("gru", 1, 8, torch.float32)
    model.rnn.bounded_state = False
    with pytest.raises(CharLMError, match=re.escape("does not declare |h| <= 1")):
        Stepper(model, 3, int8=True)
    Stepper(model, 3, amp=True)  # bfloat16 measures nothing: still fine
    assert Stepper(model, 1, int8=True).h_m.dtype == torch.float32  # one stream: no int8


def parents_of(n: int, steps: int) -> torch.Tensor:
    """(steps, n) random parents: streams copied, dropped and swapped at every step."""
    return torch.randint(0, n, (steps, n), generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize(("kind", "layers", "embedding"), MODELS)
def test_reference_reorder_equals_forward_on_the_reordered_histories(
    kind: str, layers: int, embedding: int
) -> None:
    """After reorder(parents), stream i steps on as if it had read stream parents[i]'s text."""
    model = make_model(kind, layers, embedding, torch.float64)
    prefix, xs = inputs(4)
    ref = ReferenceStepper(model, 4)
    with torch.no_grad():
        ref.load_state(model(prefix[:-1])[1])
    histories = [prefix[:-1, 0].tolist() for _ in range(4)]  # what each stream has read
    x = prefix[-1].expand(4)
    for parents, nxt in zip(parents_of(4, 10), xs, strict=False):
        histories = [[*h, c] for h, c in zip(histories, x.tolist(), strict=True)]
        with torch.no_grad():
            full = model(torch.tensor(histories).t())[0][-1]  # (4, V)
        torch.testing.assert_close(ref.step(x), full, rtol=0, atol=1e-12)
        ref.reorder(parents)
        histories = [histories[p] for p in parents.tolist()]
        x = nxt


def max_reorder_error(model: CharLM, n: int, sync: bool = False, **precision: bool) -> float:
    """Largest |p_fast - p_reference| over STEPS steps, each followed by the same reorder."""
    prefix, xs = inputs(n)
    with torch.no_grad():
        state = model(prefix)[1]
    fast, ref = Stepper(model, n, **precision), ReferenceStepper(model, n)
    fast.load_state(state)
    ref.load_state(state)
    lstm = isinstance(state, tuple)
    error = 0.0
    with torch.inference_mode():
        for x, parents in zip(xs, parents_of(n, STEPS), strict=True):
            if sync:
                ref.load_state((fast.h.clone(), fast.c.clone()) if lstm else fast.h.clone())
            p_fast = torch.softmax(fast.step(x).double(), dim=-1)
            p_ref = torch.softmax(ref.step(x).double(), dim=-1)
            error = max(error, float((p_fast - p_ref).abs().max()))
            fast.reorder(parents)
            ref.reorder(parents)
    return error


@pytest.mark.parametrize("n", [3, WIDE + 1])
@pytest.mark.parametrize(("kind", "layers", "embedding"), MODELS)
def test_fast_reorder_equals_reference(kind: str, layers: int, embedding: int, n: int) -> None:
    """The fast stepper permutes its states and its precomputed recurrent terms together:
    float64 agrees to ~1e-16, float32 to its rounding, bfloat16 and int8 as one step does."""
    assert max_reorder_error(make_model(kind, layers, embedding, torch.float64), n) < 1e-13
    model = make_model(kind, layers, embedding, torch.float32)
    assert max_reorder_error(model, n) < 2e-6
    assert max_reorder_error(model, n, sync=True, amp=True) < AMP_BOUND.get(kind, 1e-2)
    if model.rnn.bounded_state:  # else int8 is refused (above)
        assert max_reorder_error(model, n, sync=True, int8=True) < 2e-2


def test_one_stream_reorder_is_the_identity() -> None:
    model = make_model("lstm", 2, 8, torch.float64)
    a, b = Stepper(model, 1), Stepper(model, 1)
    x = torch.tensor([3])
    with torch.inference_mode():
        a.step(x)
        b.step(x)
        a.reorder(torch.tensor([0]))
        torch.testing.assert_close(a.step(x), b.step(x), rtol=0, atol=0)


def test_output_scale_is_folded_into_the_output_weights() -> None:
    """The decoder's scale (1/T) costs the fast stepper nothing per step: its output weights are
    W_hq / T bitwise, as sampling at temperature T always divided them (seeded texts stay), and
    its logits are the plain stepper's logits * scale."""
    model = make_model("gru", 2, 0, torch.float64)
    _, xs = inputs(3)
    fast, ref = Stepper(model, 3, scale=1 / 0.7), ReferenceStepper(model, 3, scale=1 / 0.7)
    with torch.inference_mode():
        for x in xs[:5]:
            torch.testing.assert_close(fast.step(x), ref.step(x), rtol=0, atol=1e-12)
    model = model.float()
    G = model.rnn.gates * model.rnn.hidden_size
    for T in (0.7, 0.8, 1.3, 2.9):
        W = Stepper(model, 3, scale=1 / T).stages[-1].gemm.W[:, G : G + V]
        assert torch.equal(W, model.W_hq / T)
