"""The random sampler's order, computed on demand (charlm/permutation.py): a true permutation,
uniform, reproducible from its generator, and any part of it computed alone.

The uniformity checks are chi-square tests on fixed seeds (so they are repeatable) with a
threshold a uniform order passes with probability > 1 - 1e-6 (z < 5 for the large degrees of
freedom here); `test_the_checks_can_fail` shows that a Feistel network with too few rounds, or
a plain rotation, fails them.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest

from charlm.permutation import ROUNDS, Permutation

Draw = Callable[[int, int], np.ndarray]  # (n, seed) -> one order of range(n)


def feistel(rounds: int = ROUNDS) -> Draw:
    def draw(n: int, seed: int) -> np.ndarray:
        keys = np.random.default_rng([seed, 99]).integers(0, 2**64, rounds, dtype=np.uint64)
        return Permutation(n, keys)[np.arange(n)]

    return draw


def rotation(n: int, seed: int) -> np.ndarray:
    """Uniform marginals, but every order is a rotation of 0, 1, 2, ...: far from uniform."""
    return (np.arange(n) + seed) % n


def z_score(counts: np.ndarray, expected: float, dof: int) -> float:
    """How far a chi-square statistic lies above its degrees of freedom, in standard
    deviations (the normal approximation, good for dof in the tens and more)."""
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    return (chi2 - dof) / math.sqrt(2 * dof)


def whole_orders_z(draw: Draw, n: int, per_order: int) -> float:
    """Every order of range(n) should come out equally often: n! cells, one test."""
    orders = math.factorial(n)
    seen = Counter(tuple(draw(n, seed).tolist()) for seed in range(per_order * orders))
    counts = np.array([seen[o] for o in itertools.permutations(range(n))])
    return z_score(counts, per_order, orders - 1)


def pairwise_z(draw: Draw, n: int, draws: int) -> float:
    """Which of i and j comes first: each of the n(n-1)/2 pairs should be a fair coin. The
    pairs share elements, so the sum is not chi-square distributed; its mean is still the
    number of pairs, and a uniform order stays well within 5 sd of it (measured)."""
    first = np.zeros((n, n))
    for seed in range(draws):
        where = np.argsort(draw(n, seed))
        first += where[:, None] < where[None, :]
    upper = first[np.triu_indices(n, 1)]
    pairs = len(upper)
    chi2 = float(((upper - draws / 2) ** 2 / (draws / 4)).sum())
    return (chi2 - pairs) / math.sqrt(2 * pairs)


def landing_z(draw: Draw, n: int, draws: int, bins: int = 8) -> float:
    """Where each element lands, in `bins` equal parts of the order: uniform, element by
    element (n independent rows of a multinomial over the bins)."""
    counts = np.zeros((n, bins))
    for seed in range(draws):
        counts[draw(n, seed), np.arange(n) * bins // n] += 1
    sizes = np.bincount(np.arange(n) * bins // n, minlength=bins)
    return z_score(counts, draws * sizes / n, n * (bins - 1))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 31, 32, 33, 1000, 2**12 + 1, 65_537])
def test_it_is_a_permutation(n: int) -> None:
    for seed in range(3):
        order = Permutation.drawn(n, np.random.default_rng(seed))[np.arange(n)]
        assert order.dtype == np.int64
        np.testing.assert_array_equal(np.sort(order), np.arange(n))


def test_any_part_is_the_same_part_of_the_whole_and_the_generator_decides() -> None:
    n = 100_003
    whole = Permutation.drawn(n, np.random.default_rng([5, 2]))[np.arange(n)]
    again = Permutation.drawn(n, np.random.default_rng([5, 2]))
    np.testing.assert_array_equal(again[np.arange(70_000, 70_100)], whole[70_000:70_100])
    np.testing.assert_array_equal(
        again[np.array([[n - 1, 0], [3, 3]])], whole[[[n - 1, 0], [3, 3]]]
    )
    other = Permutation.drawn(n, np.random.default_rng([5, 3]))[np.arange(n)]
    assert (other != whole).mean() > 0.99  # another epoch: another order
    assert np.corrcoef(whole, np.arange(n))[0, 1] ** 2 < 1e-3  # no trace of the identity left
    with pytest.raises(IndexError):
        again[np.array([n])]


@pytest.mark.parametrize("n", [4, 5, 6])
def test_every_order_of_a_small_n_is_equally_likely(n: int) -> None:
    """5 and 6 take 3 bits and a walk over 8 numbers: the hardest case for a Feistel network."""
    assert whole_orders_z(feistel(), n, per_order={4: 30, 5: 20, 6: 8}[n]) < 5


@pytest.mark.parametrize("n", [11, 40, 257])
def test_which_comes_first_and_where_each_lands_are_uniform(n: int) -> None:
    draws = 500 if n < 100 else 100
    assert abs(pairwise_z(feistel(), n, draws)) < 5
    assert abs(landing_z(feistel(), n, draws)) < 5


def test_the_checks_can_fail() -> None:
    assert whole_orders_z(feistel(rounds=4), 5, per_order=10) > 5  # too few rounds
    assert pairwise_z(rotation, 40, 500) > 5  # uniform marginals, ordered pairs
    assert landing_z(lambda n, seed: np.arange(n), 40, 500) > 5  # never moves
