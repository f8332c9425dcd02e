"""A seeded random permutation of [0, n) that is never written out: `order[positions]`.

The random sampler shuffles every window of the text each epoch. Drawing that order with
`rng.permutation(n)` writes all n of them before the first batch (31 million windows for a
1 GB text); this computes any part of the order on demand, so an epoch starts at once and a run
resumed at batch k goes straight to it.

    order[i] = E(i), and again E(E(i)), ... while it lands outside [0, n)   (cycle-walking)

E is a Feistel network on the k-bit numbers, 2^k the smallest power of two >= n (so fewer than
half of the numbers lie outside and a walk takes under two steps on average). The k bits are a
left part L of k // 2 bits and a right part R of the rest; each round

    L, R  <-  R, (L + F(R, key_r)) mod 2^|L|

can be undone (the part sizes swap every round and come back after an even number), so E is a
bijection of the k-bit numbers, and cycle-walking makes a bijection of [0, n) out of it: a walk
from i < n only passes numbers >= n before it lands, and no two walks land on the same number.
F is SplitMix64's finaliser of R + key_r, a hash whose every output bit depends on every input
bit. With keys drawn from the seeded generator, sixteen rounds make every order of a small n
come out equally often (tests/test_permutation.py counts them; eight rounds are not enough for
the few bits of a small n), and where each element lands and which of two comes first are
uniform for larger n.
"""

from __future__ import annotations

import numpy as np

ROUNDS = 16  # even: the parts come back to their sizes
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def _hash(x: np.ndarray, key: np.uint64) -> np.ndarray:
    """SplitMix64's finaliser of x + key (uint64 arithmetic wraps around)."""
    z = x + key
    z = (z ^ (z >> np.uint64(30))) * _MIX[0]
    z = (z ^ (z >> np.uint64(27))) * _MIX[1]
    return z ^ (z >> np.uint64(31))


class Permutation:
    """order[i] for any i in [0, n): one fixed random order of [0, n), chosen by `keys`."""

    def __init__(self, n: int, keys: np.ndarray) -> None:
        """One round per key: an even number of them."""
        if n < 1 or not len(keys) or len(keys) % 2:
            raise ValueError(f"a permutation of {n} elements with {len(keys)} keys")
        bits = max(n - 1, 1).bit_length()
        self.n = n
        self.keys = np.asarray(keys, dtype=np.uint64) + _GOLDEN  # SplitMix64's increment
        self.left, self.right = bits // 2, bits - bits // 2

    @classmethod
    def drawn(cls, n: int, rng: np.random.Generator) -> Permutation:
        """A permutation of [0, n) drawn from `rng` (it takes ROUNDS numbers from it)."""
        return cls(n, rng.integers(0, 2**64, size=ROUNDS, dtype=np.uint64))

    def __getitem__(self, positions: np.ndarray) -> np.ndarray:
        """The elements at `positions` (integers in [0, n), any shape), as int64."""
        where = np.asarray(positions, dtype=np.int64)
        if where.size and not (where.min() >= 0 and where.max() < self.n):
            raise IndexError(f"positions outside [0, {self.n})")
        x = self._encrypt(where.astype(np.uint64).ravel())
        outside = np.flatnonzero(x >= self.n)
        while len(outside):  # cycle-walking: on to the next number until one is inside
            x[outside] = self._encrypt(x[outside])
            outside = outside[x[outside] >= self.n]
        return x.astype(np.int64).reshape(where.shape)

    def _encrypt(self, x: np.ndarray) -> np.ndarray:
        """E: a bijection of the numbers of left + right bits."""
        a, b = self.left, self.right  # the sizes of L and R
        L, R = x >> np.uint64(b), x & np.uint64((1 << b) - 1)
        for key in self.keys:
            L, R = R, (L + _hash(R, key)) & np.uint64((1 << a) - 1)
            a, b = b, a
        return (L << np.uint64(b)) | R
