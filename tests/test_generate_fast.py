"""The fast sampler (`Stepper` + Gumbel-max) against the model's own forward pass, in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from charlm.decode import next_char_probs
from charlm.errors import CharLMError, command_line
from charlm.generate import generate, stream
from charlm.model import CharLM, ModelConfig
from charlm.stepper import WIDE, Stepper
from charlm.vocab import Vocab

VOCAB = Vocab(sorted(set("abcdefghij klmnop\nqrstuvwxyz.,")))
PREFIX = "hello world"


def make_model(kind: str, layers: int = 1, embedding: int = 8, dropout: float = 0.0) -> CharLM:
    """A small float64 model with weights large enough that its distributions are peaked."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=len(VOCAB), model=kind, hidden_size=24, num_layers=layers,
        embedding_dim=embedding, dropout=dropout, init="pytorch",
    )  # fmt: skip
    model = CharLM(cfg).double()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(PEAK.get(kind, 4))
    return model.eval()


# the min cells' residual blocks pass a scaled weight on through the stream, the feed-forward
# block and the gains: 4x makes them deterministic, 1.5x about as peaked as the others at 4x
PEAK = {"mingru": 1.5, "minlstm": 1.5}


def forward_logits(model: CharLM, texts: list[str]) -> torch.Tensor:
    """(T, N, V) logits of a full forward pass over equal-length texts."""
    ids = torch.stack([torch.from_numpy(VOCAB.encode(t)) for t in texts], dim=1)
    with torch.no_grad():
        return model(ids)[0]


ALL = [(k, n, e) for k in ("rnn", "lstm", "gru") for n in (1, 2) for e in (0, 8)]
ALL += [("lstm", 3, 8), ("gru", 3, 0)]  # a middle layer: input from below, output to above
ALL += [("mingru", 2, 8), ("minlstm", 2, 0), ("mingru", 1, 0), ("minlstm", 1, 8)]


# the bfloat16 and int8 batches: a few streams, and WIDE (bfloat16 then stored transposed)
LOW_PRECISION = [("rnn", 2, 3), ("lstm", 2, 3), ("gru", 2, 3), ("lstm", 1, WIDE), ("gru", 2, WIDE)]
# the min cells' states are unbounded: bfloat16 only (int8 is refused, tests/test_stepper.py)
AMP = [*LOW_PRECISION, ("mingru", 2, 3), ("minlstm", 1, WIDE)]


@pytest.fixture
def three_threads():
    """One stream splits each matmul into a column block per thread: make that 3 blocks."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield
    torch.set_num_threads(before)


def assert_steps_follow_forward(
    model: CharLM, texts: list[str], atol: float, amp: bool = False, int8: bool = False
) -> Stepper:
    """Step through `texts` after the prefix: every distribution equals the forward pass's."""
    full = forward_logits(model, texts)  # (T, N, V)
    ids = torch.stack([torch.from_numpy(VOCAB.encode(t)) for t in texts], dim=1)
    stepper = Stepper(model, len(texts), amp=amp, int8=int8)
    with torch.no_grad():
        stepper.load_state(model(ids[: len(PREFIX) - 1, :1])[1])  # batch-1 state, copied to N
    with torch.inference_mode():
        for t in range(len(PREFIX) - 1, ids.shape[0] - 1):
            fast = torch.softmax(stepper.step(ids[t]), dim=-1)
            torch.testing.assert_close(fast, torch.softmax(full[t], dim=-1), rtol=0, atol=atol)
    return stepper


@pytest.mark.parametrize(("kind", "layers", "embedding"), ALL)
def test_step_probabilities_equal_forward(kind: str, layers: int, embedding: int) -> None:
    model = make_model(kind, layers, embedding)
    texts = generate(model, VOCAB, PREFIX, 40, num_samples=3, seed=5)
    assert len({t[len(PREFIX) :] for t in texts}) > 1  # the samples are not copies of each other
    assert_steps_follow_forward(model, texts, atol=1e-10)


@pytest.mark.parametrize(("kind", "layers", "embedding"), ALL)
def test_one_stream_split_over_threads_equals_forward(
    kind: str, layers: int, embedding: int, three_threads: None
) -> None:
    model = make_model(kind, layers, embedding)
    texts = generate(model, VOCAB, PREFIX, 40, seed=5)
    stepper = assert_steps_follow_forward(model, texts, atol=1e-10)
    weights = stepper.stages[0].gemm.W
    assert weights.shape[0] == 3  # the weights are held as 3 column blocks


@pytest.mark.parametrize(("kind", "layers", "embedding"), ALL)
def test_wide_batch_stored_transposed_equals_forward(
    kind: str, layers: int, embedding: int
) -> None:
    """From WIDE streams on: buffers stored (width, N), tanh through sigmoid; same maths."""
    model = make_model(kind, layers, embedding)
    texts = generate(model, VOCAB, PREFIX, 30, num_samples=WIDE + 1, seed=5)
    stepper = assert_steps_follow_forward(model, texts, atol=1e-10)
    assert stepper.h.stride(-1) == WIDE + 1 and stepper.logits.stride(0) == 1  # stored (H, N)


@pytest.mark.parametrize(("kind", "layers", "n"), AMP)
def test_amp_streams_use_bfloat16_matmuls_and_stay_close(kind: str, layers: int, n: int) -> None:
    model = make_model(kind, layers).float()
    texts = generate(model, VOCAB, PREFIX, 40, num_samples=n, seed=5, amp=True)
    assert len({t[len(PREFIX) :] for t in texts}) > 1
    stepper = assert_steps_follow_forward(model, texts, atol=3e-2, amp=True)
    assert stepper.h_m.dtype == torch.bfloat16
    assert stepper.h.dtype == stepper.c.dtype == stepper.table.dtype == torch.float32
    assert stepper.logits.dtype == torch.float32
    # one stream gains nothing from bfloat16 (a matrix-vector product): it stays in float32
    assert Stepper(model, 1, amp=True).h_m.dtype == torch.float32


@pytest.mark.parametrize(("kind", "layers", "n"), LOW_PRECISION)
def test_int8_streams_use_int8_matmuls_and_stay_close(kind: str, layers: int, n: int) -> None:
    model = make_model(kind, layers).float()
    texts = generate(model, VOCAB, PREFIX, 40, num_samples=n, seed=5, int8=True)
    assert len({t[len(PREFIX) :] for t in texts}) > 1
    assert generate(model, VOCAB, PREFIX, 40, num_samples=n, seed=5, int8=True) == texts
    stepper = assert_steps_follow_forward(model, texts, atol=3e-2, int8=True)
    assert stepper.h_m.dtype == torch.int8
    assert stepper.h.dtype == stepper.c.dtype == stepper.logits.dtype == torch.float32
    assert stepper.h.stride(-1) == 1  # row-major even from WIDE streams on
    # each weight column is stored as integers in [-127, 127] times a scale: within half a step
    W_q, scale = stepper.stages[-1].gemm.W, stepper.stages[-1].gemm.scale
    assert W_q.dtype == torch.int8 and int(W_q.abs().max()) == 127
    W_h = Stepper(model, n).stages[-1].gemm.W  # the same matrix in float32
    error = (W_q.float() * scale * 127 - W_h).abs()
    assert bool((error <= scale * 127 / 2 + 1e-6).all())
    # one stream stays in float32, as with --amp
    assert Stepper(model, 1, int8=True).h_m.dtype == torch.float32


def test_int8_needs_cpu_and_excludes_amp() -> None:
    model = make_model("lstm").float()
    with pytest.raises(CharLMError, match=r"^amp and int8 are two"):
        generate(model, VOCAB, PREFIX, 5, num_samples=2, amp=True, int8=True)
    with command_line(), pytest.raises(CharLMError, match="--amp and --int8"):
        generate(model, VOCAB, PREFIX, 5, num_samples=2, amp=True, int8=True)
    with pytest.raises(CharLMError, match=r"^int8 runs on CPU, not meta: use amp there"):
        generate(model.to("meta"), VOCAB, PREFIX, 5, num_samples=2, int8=True)
    with command_line(), pytest.raises(CharLMError, match="--int8 runs on CPU, not meta"):
        generate(model.to("meta"), VOCAB, PREFIX, 5, num_samples=2, int8=True)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru", "mingru", "minlstm"])
def test_greedy_is_argmax_of_forward(kind: str) -> None:
    model = make_model(kind, layers=2)
    text = generate(model, VOCAB, PREFIX, 30, greedy=True)[0]
    logits = forward_logits(model, [text])[:, 0]
    expected = logits[len(PREFIX) - 1 : -1].argmax(dim=-1)
    assert VOCAB.decode(expected.numpy()) == text[len(PREFIX) :]


def test_same_seed_same_text_and_stream_matches_generate() -> None:
    model = make_model("lstm")
    a = generate(model, VOCAB, PREFIX, 150, temperature=1.5, num_samples=2, seed=3)
    b = generate(model, VOCAB, PREFIX, 150, temperature=1.5, num_samples=2, seed=3)
    c = generate(model, VOCAB, PREFIX, 150, temperature=1.5, num_samples=2, seed=4)
    assert a == b and a != c
    pieces = ["", ""]
    for chars in stream(model, VOCAB, PREFIX, length=150, temperature=1.5, num_samples=2, seed=3):
        assert not torch.is_inference_mode_enabled()  # the caller's code runs outside the mode
        pieces = [p + ch for p, ch in zip(pieces, chars, strict=True)]
    assert [PREFIX + p for p in pieces] == a
    # a longer sample with the same seed continues the shorter one
    longer = generate(model, VOCAB, PREFIX, 300, temperature=1.5, num_samples=2, seed=3)
    assert [t[: len(a[0])] for t in longer] == a


@pytest.mark.parametrize("temperature", [0.7, 1.0, 2.0])
def test_sampling_follows_the_distribution(temperature: float) -> None:
    """4000 samples of one step: frequencies match softmax(logits / T) within 5 sigma."""
    model = make_model("gru")
    n = 4000
    texts = generate(model, VOCAB, PREFIX, 1, temperature=temperature, num_samples=n, seed=0)
    counts = np.bincount(VOCAB.encode("".join(t[-1] for t in texts)), minlength=len(VOCAB))
    p = torch.softmax(forward_logits(model, [PREFIX])[-1, 0] / temperature, -1).numpy()
    sigma = np.sqrt(p * (1 - p) / n) + 1e-3
    assert np.all(np.abs(counts / n - p) < 5 * sigma), (counts / n, p)


def sampled_with_logits(model: CharLM, texts: list[str]) -> list[tuple[int, torch.Tensor]]:
    """(sampled id, forward logits before it) for every generated character of every text."""
    full = forward_logits(model, texts)
    pairs = []
    for j, text in enumerate(texts):
        ids = VOCAB.encode(text)
        for t in range(len(PREFIX), len(text)):
            pairs.append((int(ids[t]), full[t - 1, j]))
    return pairs


def test_top_k_is_respected() -> None:
    model = make_model("lstm", layers=2)
    texts = generate(model, VOCAB, PREFIX, 60, temperature=2.0, top_k=3, num_samples=8, seed=1)
    ranks = [int((logits > logits[i]).sum()) for i, logits in sampled_with_logits(model, texts)]
    assert max(ranks) <= 2  # always among the 3 likeliest
    assert len(set(ranks)) == 3  # and not always the likeliest
    greedy = generate(model, VOCAB, PREFIX, 60, greedy=True)
    assert generate(model, VOCAB, PREFIX, 60, top_k=1, seed=9) == greedy


@pytest.mark.parametrize("top_k", [None, 5])
def test_top_p_is_respected(top_k: int | None) -> None:
    model = make_model("rnn", layers=2)
    texts = generate(
        model, VOCAB, PREFIX, 60, temperature=1.5, top_p=0.6, top_k=top_k, num_samples=8, seed=2
    )
    outside, inside_but_not_top = 0, 0
    for i, logits in sampled_with_logits(model, texts):
        allowed = next_char_probs(logits[None], 1.5, top_k, 0.6)[0] > 0
        outside += not allowed[i]
        inside_but_not_top += bool(allowed[i]) and i != int(logits.argmax())
    assert outside == 0
    assert inside_but_not_top > 0


def test_dropout_model_in_training_mode_samples_like_eval() -> None:
    model = make_model("lstm", layers=2, dropout=0.5).train()
    text = generate(model, VOCAB, PREFIX, 30, greedy=True)[0]
    assert model.training  # restored
    model.eval()
    assert generate(model, VOCAB, PREFIX, 30, greedy=True)[0] == text


def test_edges() -> None:
    model = make_model("gru")
    assert generate(model, VOCAB, PREFIX, 0, num_samples=2) == [PREFIX, PREFIX]
    (text,) = generate(model, VOCAB, "", 20, seed=0)
    assert len(text) == 20
    (one,) = generate(model, VOCAB, "h", 5, greedy=True)
    assert len(one) == 6
    with pytest.raises(CharLMError, match=r"^top_k must be > 0"):
        generate(model, VOCAB, PREFIX, 5, top_k=0)
    with command_line(), pytest.raises(CharLMError, match="--top-k"):
        generate(model, VOCAB, PREFIX, 5, top_k=0)
    with pytest.raises(CharLMError, match="not in the model's vocabulary"):
        generate(model, VOCAB, "HELLO", 5)


def test_float32_model_close_to_forward() -> None:
    """The default dtype: equal to the forward pass up to float32 rounding."""
    model = make_model("lstm", layers=2).float()
    texts = generate(model, VOCAB, PREFIX, 30, num_samples=2, seed=0)
    full = forward_logits(model, texts)
    ids = torch.stack([torch.from_numpy(VOCAB.encode(t)) for t in texts], dim=1)
    stepper = Stepper(model, 2)
    with torch.inference_mode():
        for t in range(ids.shape[0] - 1):
            fast = torch.softmax(stepper.step(ids[t]), dim=-1)
            torch.testing.assert_close(fast, torch.softmax(full[t], dim=-1), rtol=0, atol=1e-5)
