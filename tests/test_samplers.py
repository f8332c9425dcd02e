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


# --- the random order, drawn batch by batch (layout 3), and the one older runs keep (2) -----


def epoch_windows(sampler, epoch):
    return np.concatenate([X[0].numpy() for X, _ in sampler.batches(epoch)]) // sampler.T


@pytest.mark.parametrize("n", [1000, 1001, 4 * 10 * 64 + 1, 20_000])
def test_an_epoch_takes_each_window_at_most_once_from_a_shuffle_of_all(n):
    s = RandomSampler(np.arange(n), seq_len=10, batch_size=4, seed=3)
    num_windows = (n - 1) // 10
    seen = set()
    for epoch in range(3):
        windows = epoch_windows(s, epoch)
        assert len(windows) == len(s) * 4 == num_windows // 4 * 4
        assert len(set(windows)) == len(windows) and windows.max() < num_windows
        # the front of the epoch's order of all windows: the order itself is a permutation
        order = s.starts(epoch, 0, len(s)).ravel() // 10
        np.testing.assert_array_equal(order, windows)
        seen.update(windows.tolist())
    assert len(seen) > len(s) * 4 or len(s) * 4 == num_windows  # other windows, other epochs


def test_the_order_is_computed_a_chunk_at_a_time_and_seeks(monkeypatch):
    """The first batch of a 10^9-character text costs one chunk, not the whole epoch; batch k
    is reached without computing batches 0..k-1."""
    from charlm import permutation, samplers

    asked = []
    real = permutation.Permutation.__getitem__

    def counting(self, positions):
        asked.append(np.asarray(positions).size)
        return real(self, positions)

    monkeypatch.setattr(permutation.Permutation, "__getitem__", counting)
    huge = np.broadcast_to(np.zeros(1, dtype=np.uint8), (10**9,))  # 10^9 characters, no memory
    s = RandomSampler(huge, seq_len=64, batch_size=32, seed=0)
    assert len(s) == (10**9 - 1) // 64 // 32
    X, _ = next(s.batches(0))
    assert X.shape == (64, 32) and asked == [samplers.CHUNK_WINDOWS]
    asked.clear()
    next(s.batches(0, start=len(s) - 1))  # the last batch: one batch's windows
    assert asked == [32]


def test_mid_epoch_batches_are_those_of_the_whole_epoch_across_chunks(monkeypatch):
    from charlm import samplers

    monkeypatch.setattr(samplers, "CHUNK_WINDOWS", 12)  # 3 batches of 4 per chunk
    s = RandomSampler(DATA, seq_len=5, batch_size=4, seed=2)
    whole = s.starts(1)
    for start in (0, 2, 3, 7, len(s) - 1):
        got = [X[0].numpy() for X, _ in s.batches(1, start)]
        np.testing.assert_array_equal(np.stack(got), whole[start:])


@pytest.mark.parametrize("random_offset", [False, True])
def test_layout_2_is_the_order_older_runs_were_trained_with(random_offset):
    """charlm's layout 2, as it was written: rng.permutation of all windows, up front."""
    s = RandomSampler(DATA, 7, 4, seed=11, random_offset=random_offset, layout=2)
    for epoch in range(3):
        rng = np.random.default_rng([11, epoch])
        offset = int(rng.integers(0, 7)) if random_offset else 0
        order = rng.permutation(s._num_windows())[: len(s) * 4]
        want = (offset + 7 * order).reshape(len(s), 4)
        got = np.stack([X[0].numpy() for X, _ in s.batches(epoch)])
        np.testing.assert_array_equal(got, want)
        new = RandomSampler(DATA, 7, 4, seed=11, random_offset=random_offset)
        assert new.layout == 3 and not np.array_equal(new.starts(epoch), want)
    with pytest.raises(ValueError, match="layout 1"):
        RandomSampler(DATA, 7, 4, layout=1)
