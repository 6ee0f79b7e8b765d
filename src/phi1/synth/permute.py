"""A seeded permutation of ``range(n)`` computed one index at a time.

Synthetic data is asked for seed by seed, and seeds must not repeat: the
``i``-th request takes combination ``Permutation(n, key)(i)`` of a seed space
of ``n`` combinations. Nothing is stored, so the space may have billions of
combinations, any index is computed on its own (a resumed or sharded run asks
for exactly the seeds it would have asked for), and distinct indices always
give distinct combinations.

How: a balanced Feistel network on ``2k`` bits (``4^k >= n``) is a bijection
of ``range(4^k)`` whatever its round function; walking the cycle from ``i``
until the value falls below ``n`` ("cycle walking", Black and Rogaway 2002)
turns it into a bijection of ``range(n)``. Fewer than 4 steps on average.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported where it is used: this module stays light
    import numpy as np

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _mix64(x: int) -> int:
    """splitmix64's finaliser: a fast, well-spread 64-bit hash of ``x``."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


class Permutation:
    """``p(i)`` for ``0 <= i < n``: a pseudo-random bijection of ``range(n)``
    determined by ``key`` (any string: seed and purpose)."""

    def __init__(self, n: int, key: str, rounds: int = 4):
        if n < 1:
            raise ValueError(f"a permutation needs n >= 1, got {n}")
        self.n = n
        bits = max(2, (n - 1).bit_length())
        bits += bits & 1
        self._half = bits // 2
        self._mask = (1 << self._half) - 1
        base = int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")
        self._keys = [_mix64((base + r * _GOLDEN) & _M64) for r in range(rounds)]

    def _encrypt(self, x: int) -> int:
        half, mask = self._half, self._mask
        left, right = x >> half, x & mask
        for k in self._keys:
            left, right = right, left ^ (_mix64(right ^ k) & mask)
        return (left << half) | right

    def __call__(self, i: int) -> int:
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} outside range({self.n})")
        x = self._encrypt(i)
        while x >= self.n:
            x = self._encrypt(x)
        return x

    def many(self, indices: "np.ndarray") -> "np.ndarray":
        """``p(i)`` for an array of indices at once (numpy, same values as one by one)."""
        import numpy as np

        idx = np.asarray(indices, dtype=np.uint64)
        if idx.size and (int(idx.max()) >= self.n):
            raise IndexError(f"index {int(idx.max())} outside range({self.n})")
        x = self._encrypt_many(idx)
        out = x >= self.n
        while out.any():
            x[out] = self._encrypt_many(x[out])
            out = x >= self.n
        return x

    def _encrypt_many(self, x: "np.ndarray") -> "np.ndarray":
        import numpy as np

        half, mask = np.uint64(self._half), np.uint64(self._mask)
        left, right = x >> half, x & mask
        for k in self._keys:
            left, right = right, left ^ (_mix64_many(right ^ np.uint64(k)) & mask)
        return (left << half) | right

    def __len__(self) -> int:
        return self.n


def _mix64_many(x: "np.ndarray") -> "np.ndarray":
    import numpy as np

    with np.errstate(over="ignore"):  # uint64 products wrap mod 2^64, as in _mix64
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))
