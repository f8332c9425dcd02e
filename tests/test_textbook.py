"""The textbook's char-LM (Dive into Deep Learning, ../shared/seeds/), exactly.

The references below are written from the book's definitions (its `data_iter_random`,
`data_iter_consecutive` and `train_and_predict_rnn`), in plain Python and PyTorch, and charlm's
samplers and textbook configuration are checked against them.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from charlm.builtin import BUILTIN
from charlm.inputs import load_corpus
from charlm.samplers import ConsecutiveSampler, RandomSampler
from charlm.train import TrainConfig, train
from tests.conftest import epoch_rows

T, B = 35, 32  # the book's num_steps and batch_size


def book_random(corpus: list[int], batch_size: int, num_steps: int, order: list[int]):
    """The book's data_iter_random, with the shuffled window order passed in."""
    num_examples = (len(corpus) - 1) // num_steps
    assert sorted(order) == list(range(num_examples))
    for i in range(num_examples // batch_size):
        batch = order[i * batch_size : (i + 1) * batch_size]
        X = [corpus[j * num_steps : j * num_steps + num_steps] for j in batch]
        Y = [corpus[j * num_steps + 1 : j * num_steps + 1 + num_steps] for j in batch]
        yield np.array(X), np.array(Y)  # (B, T), as the book has them


def book_consecutive(corpus: list[int], batch_size: int, num_steps: int):
    """The book's data_iter_consecutive."""
    batch_len = len(corpus) // batch_size
    indices = np.array(corpus[: batch_size * batch_len]).reshape(batch_size, batch_len)
    for i in range((batch_len - 1) // num_steps):
        i *= num_steps
        yield indices[:, i : i + num_steps], indices[:, i + 1 : i + num_steps + 1]


def batches(sampler, epoch):
    return [(X.numpy().T, Y.numpy().T) for X, Y in sampler.batches(epoch)]  # (B, T) each


@pytest.mark.parametrize("n", [1000, 1001, 1121, 1136, 2345])
def test_random_sampler_is_the_books(n):
    data = np.arange(n)  # the value at a position is the position
    s = RandomSampler(data, seq_len=T, batch_size=B if n > 1200 else 5, seed=5)
    num_windows = (n - 1) // T
    seen = set()
    for epoch in range(3):
        got = batches(s, epoch)
        starts = np.concatenate([X[:, 0] for X, _ in got])
        assert np.all(starts % T == 0)  # windows start at multiples of T, no phase
        # the epoch's order is a shuffle of *all* windows, and its batches are its front
        shown = [int(j) for j in starts // T]
        rest = sorted(set(range(num_windows)) - set(shown))
        rng = random.Random(epoch)
        rng.shuffle(rest)
        want = list(book_random(list(range(n)), s.B, T, shown + rest))
        assert len(got) == len(want) == num_windows // s.B
        for (X, Y), (Xb, Yb) in zip(got, want, strict=True):
            np.testing.assert_array_equal(X, Xb)
            np.testing.assert_array_equal(Y, Yb)
        seen.update(shown)
    assert len(seen) > len(got) * s.B  # other windows in other epochs


def test_random_sampler_covers_the_whole_text_over_epochs():
    n = 10_000
    s = RandomSampler(np.arange(n), seq_len=T, batch_size=B, seed=0)
    seen = set()
    for epoch in range(8):
        seen.update(int(x) for X, _ in batches(s, epoch) for x in X[:, 0])
    assert seen == {j * T for j in range((n - 1) // T)}  # the end of the text too


@pytest.mark.parametrize("n", [1000, 1120, 1151, 10_000])
def test_consecutive_sampler_is_the_books(n):
    data = np.arange(n)
    b = 4 if n < 5000 else B
    s = ConsecutiveSampler(data, seq_len=T, batch_size=b, seed=3)
    want = list(book_consecutive(list(range(n)), b, T))
    for epoch in range(2):  # no phase: every epoch the same
        got = batches(s, epoch)
        assert len(got) == len(want) == len(s)
        for (X, Y), (Xb, Yb) in zip(got, want, strict=True):
            np.testing.assert_array_equal(X, Xb)
            np.testing.assert_array_equal(Y, Yb)


@pytest.mark.parametrize("cls", [RandomSampler, ConsecutiveSampler])
def test_random_offset_is_an_explicit_setting(cls):
    n, t = 2000, 10
    s = cls(np.arange(n), seq_len=t, batch_size=4, seed=1, random_offset=True)
    phases = set()
    for epoch in range(12):
        got = batches(s, epoch)
        assert len(got) == len(s)  # the same batch count every epoch
        starts = np.concatenate([X[:, 0] for X, _ in got])
        if cls is RandomSampler:
            assert len(set(starts % t)) == 1  # one phase per epoch
        phases.add(int(starts.min() % t))  # the first window (stream 0) starts at the phase
        last = max(int(Y.max()) for _, Y in got)
        assert last < n
    assert len(phases) > 3


# --- the training curve --------------------------------------------------------------------


def book_train(corpus: list[int], vocab_size: int, epochs: int, random_iter: bool) -> list[float]:
    """The book's train_and_predict_rnn with its hyperparameters: per-epoch perplexity."""
    torch.manual_seed(0)
    rng = random.Random(0)
    H, lr, theta = 256, 100.0, 0.01

    def normal(*shape):
        return (torch.randn(shape, dtype=torch.float64) * 0.01).requires_grad_()

    W_xh, W_hh, W_hq = normal(vocab_size, H), normal(H, H), normal(H, vocab_size)
    b_h = torch.zeros(H, dtype=torch.float64, requires_grad=True)
    b_q = torch.zeros(vocab_size, dtype=torch.float64, requires_grad=True)
    params = [W_xh, W_hh, b_h, W_hq, b_q]
    curve = []
    for _ in range(epochs):
        state = torch.zeros(B, H, dtype=torch.float64)
        if random_iter:
            order = list(range((len(corpus) - 1) // T))
            rng.shuffle(order)
            data = book_random(corpus, B, T, order)
        else:
            data = book_consecutive(corpus, B, T)
        l_sum, n = 0.0, 0
        for X, Y in data:
            state = torch.zeros(B, H, dtype=torch.float64) if random_iter else state.detach()
            outputs = []
            for t in range(T):
                x_W_xh = W_xh[torch.from_numpy(X[:, t])]  # one-hot(x) @ W_xh, as a row lookup
                state = torch.tanh(x_W_xh + state @ W_hh + b_h)
                outputs.append(state @ W_hq + b_q)
            y = torch.from_numpy(Y.T.copy()).flatten()
            loss = torch.nn.functional.cross_entropy(torch.cat(outputs), y)
            for p in params:
                p.grad = None
            loss.backward()
            norm = math.sqrt(sum(float((p.grad**2).sum()) for p in params))
            with torch.no_grad():
                for p in params:
                    if norm > theta:
                        p.grad *= theta / norm
                    p -= lr * p.grad
            l_sum += loss.item() * len(y)
            n += len(y)
        curve.append(math.exp(l_sum / n))
    return curve


def textbook_corpus(tmp_path):
    """10,000 characters with newlines as spaces, as the book prepares its lyrics."""
    text = "".join(load_corpus(BUILTIN).vocab.chars[i] for i in load_corpus(BUILTIN).ids[:10_000])
    path = tmp_path / "corpus.txt"
    path.write_text(text.replace("\n", " ").replace("\r", " "), encoding="utf-8")
    return path


def charlm_curve(path, out, sampler: str, epochs: int) -> list[float]:
    cfg = TrainConfig(
        corpus=str(path),
        out=str(out),
        model="rnn",
        embedding_dim=0,
        hidden_size=256,
        num_layers=1,
        seq_len=T,
        batch_size=B,
        optimizer="sgd",
        lr=100,
        clip=0.01,
        val_fraction=0,
        epochs=epochs,
        sampler=sampler,
        lr_schedule="constant",
        sample_every=0,
        device="cpu",
        amp="off",  # the textbook computes in float32 (--amp auto would pick bfloat16 here)
        dropout=0.0,  # the book's RNN has none
    )
    train(cfg, progress_bar=False)
    rows = epoch_rows(out)
    return [r["train_ppl"] for r in rows]


def compare_curves(tmp_path, sampler: str, epochs: int, at: list[int]) -> None:
    path = textbook_corpus(tmp_path)
    text = path.read_text(encoding="utf-8")
    chars = sorted(set(text))
    ids = [chars.index(c) for c in text]
    ours = charlm_curve(path, tmp_path / sampler, sampler, epochs)
    book = book_train(ids, len(chars), epochs, sampler == "random")
    for e in at:
        ratio = ours[e - 1] / book[e - 1]
        assert 1 / 1.25 <= ratio <= 1.25, (sampler, e, ours[e - 1], book[e - 1])


@pytest.mark.parametrize("sampler", ["random", "consecutive"])
def test_training_curve_follows_the_book_loop(tmp_path, sampler):
    compare_curves(tmp_path, sampler, epochs=20, at=[5, 10, 15, 20])


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["random", "consecutive"])
def test_training_curve_follows_the_book_loop_for_250_epochs(tmp_path, sampler):
    compare_curves(tmp_path, sampler, epochs=250, at=[50, 100, 150, 200, 250])
