"""Batch samplers: the layout of windows in batches, for both samplers."""

import itertools

import numpy as np
import pytest

from charlm.errors import CharLMError
from charlm.samplers import ConsecutiveSampler, RandomSampler

DATA = np.arange(1000)  # the value at a position is the position: windows are easy to read


def all_batches(sampler, epoch=0):
    return [(X.numpy(), Y.numpy()) for X, Y in sampler.batches(epoch)]


@pytest.mark.parametrize("cls", [RandomSampler, ConsecutiveSampler])
def test_targets_are_inputs_shifted_by_one(cls):
    s = cls(DATA, seq_len=7, batch_size=4, seed=0)
    for X, Y in all_batches(s):
        assert X.shape == (7, 4) and Y.shape == (7, 4)
        np.testing.assert_array_equal(Y, X + 1)
        np.testing.assert_array_equal(np.diff(X, axis=0), 1)  # each column is a contiguous window


def test_random_windows_do_not_overlap_and_are_shuffled_per_epoch():
    s = RandomSampler(DATA, seq_len=10, batch_size=5, seed=0)
    batches = all_batches(s)
    assert len(batches) == len(s) == (1000 - 10) // 10 // 5
    starts = np.concatenate([X[0] for X, _ in batches])
    assert len(set(starts)) == len(starts)
    assert len(set(starts % 10)) == 1  # one phase per epoch: windows tile the text
    assert not np.all(np.diff(starts) > 0)  # shuffled
    other = np.concatenate([X[0] for X, _ in all_batches(s, epoch=1)])
    assert not np.array_equal(starts, other)


def test_consecutive_rows_continue_across_batches():
    s = ConsecutiveSampler(DATA, seq_len=6, batch_size=4, seed=3)
    batches = all_batches(s)
    assert len(batches) == len(s) > 3
    for (X0, _), (X1, _) in itertools.pairwise(batches):
        np.testing.assert_array_equal(X1[0], X0[-1] + 1)  # row i of batch k+1 follows row i


def test_order_depends_only_on_seed_and_epoch_and_resumes_mid_epoch():
    a = RandomSampler(DATA, 5, 4, seed=7)
    b = RandomSampler(DATA, 5, 4, seed=7)
    full = all_batches(a, epoch=2)
    tail = [(X.numpy(), Y.numpy()) for X, Y in b.batches(2, start=3)]
    assert len(tail) == len(full) - 3
    for (X, _), (Xt, _) in zip(full[3:], tail, strict=True):
        np.testing.assert_array_equal(X, Xt)
    c = RandomSampler(DATA, 5, 4, seed=8)
    assert not np.array_equal(all_batches(c, 2)[0][0], full[0][0])


@pytest.mark.parametrize("cls", [RandomSampler, ConsecutiveSampler])
def test_ranks_take_disjoint_rows_of_the_global_batch(cls):
    whole = all_batches(cls(DATA, 5, 4, seed=1))
    r0 = all_batches(cls(DATA, 5, 4, seed=1, rank=0, world_size=2))
    r1 = all_batches(cls(DATA, 5, 4, seed=1, rank=1, world_size=2))
    for (X, _), (X0, _), (X1, _) in zip(whole, r0, r1, strict=True):
        np.testing.assert_array_equal(np.concatenate([X0, X1], axis=1), X)


@pytest.mark.parametrize("cls", [RandomSampler, ConsecutiveSampler])
def test_too_short_text_says_how_long_it_must_be(cls):
    need = cls.min_length(35, 32)
    with pytest.raises(CharLMError, match=f"at least {need}"):
        cls(np.arange(need - 1), 35, 32)
    assert len(cls(np.arange(need), 35, 32)) == 1
