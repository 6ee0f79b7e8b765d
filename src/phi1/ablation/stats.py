"""The spread across seeds, and whether a difference between arms exceeds it.

With three seeds an arm's standard deviation is itself rough, so the reading
rests on tests that assume nothing about it: do the arms' seed ranges overlap,
and how often would a split of the pooled seeds differ as much by chance (an
exact permutation test)? With 3 seeds per arm even complete separation has
p = 0.1 — suggestive, never established; 4 per arm can reach p < 0.05.
Welch's t-test is given beside them.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class Spread:
    """One metric of one arm across its seeds."""

    values: tuple[float, ...]
    n: int
    mean: float
    std: float | None  # sample standard deviation (n - 1); None with one seed
    min: float
    max: float

    def show(self, digits: int = 3) -> str:
        f = f"{{:.{digits}f}}"
        if self.n == 1:
            return f.format(self.mean) + " (1 seed)"
        return (f"{f.format(self.mean)} ± {f.format(self.std or 0.0)} "
                f"({f.format(self.min)}–{f.format(self.max)})")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "values": list(self.values)}


def spread(values: Sequence[float]) -> Spread:
    """Mean, sample standard deviation, min and max of ``values`` (finite numbers)."""
    vals = tuple(float(v) for v in values)
    if not vals:
        raise ValueError("spread of no values")
    bad = [v for v in vals if not math.isfinite(v)]
    if bad:
        raise ValueError(f"spread of a non-finite value: {bad[0]}")
    std = statistics.stdev(vals) if len(vals) > 1 else None
    return Spread(vals, len(vals), statistics.fmean(vals), std, min(vals), max(vals))


@dataclass(frozen=True)
class Comparison:
    """Arm ``b`` against arm ``a`` on one metric."""

    metric: str
    a: str
    b: str
    difference: float  # mean(b) - mean(a)
    separated: bool  # the seed ranges do not overlap
    welch_t: float | None
    welch_p: float | None  # two-sided
    permutation_p: float | None  # two-sided, exact (sampled beyond PERMUTATIONS splits)
    reading: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def welch(a: Spread, b: Spread) -> tuple[float | None, float | None]:
    """Welch's t statistic of mean(b) - mean(a) and its two-sided p-value
    (None when either arm has one seed or both have no spread at all)."""
    if a.n < 2 or b.n < 2:
        return None, None
    va, vb = (a.std or 0.0) ** 2 / a.n, (b.std or 0.0) ** 2 / b.n
    se = math.sqrt(va + vb)
    if se == 0:
        return None, None
    t = (b.mean - a.mean) / se
    df = (va + vb) ** 2 / ((va ** 2 / (a.n - 1) if va else 0.0) + (vb ** 2 / (b.n - 1) if vb else 0.0))
    from scipy import stats as st

    return t, float(2 * st.t.sf(abs(t), df))


PERMUTATIONS = 200_000
ALPHA = 0.05


def permutation_p(a: Spread, b: Spread) -> float | None:
    """Two-sided permutation test of mean(b) - mean(a): the share of all ways to
    split the pooled values into groups of a.n and b.n whose difference of means
    is at least as large (exact up to PERMUTATIONS splits, else that many seeded
    random ones). None with fewer than 2 values in an arm."""
    if a.n < 2 or b.n < 2:
        return None
    pooled = a.values + b.values
    total, nb = sum(pooled), b.n
    observed = abs(b.mean - a.mean)
    tol = 1e-9 * max(1.0, observed)

    def extreme(chosen: tuple[int, ...]) -> bool:
        sb = sum(pooled[i] for i in chosen)
        return abs(sb / nb - (total - sb) / a.n) >= observed - tol

    count = math.comb(len(pooled), nb)
    if count <= PERMUTATIONS:
        return sum(extreme(c) for c in itertools.combinations(range(len(pooled)), nb)) / count
    rng = random.Random(0)
    idx = list(range(len(pooled)))
    return sum(extreme(tuple(rng.sample(idx, nb))) for _ in range(PERMUTATIONS)) / PERMUTATIONS


def compare(metric: str, a_name: str, a: Spread, b_name: str, b: Spread, lower_is_better: bool,
            digits: int = 3) -> Comparison:
    """Whether ``b`` differs from ``a`` by more than the seeds' spread, in words."""
    diff = b.mean - a.mean
    separated = b.max < a.min or a.max < b.min
    t, p = welch(a, b)
    perm = permutation_p(a, b)
    f = f"{{:.{digits}f}}"
    head = f"{metric}: {b_name} {b.show(digits)} vs {a_name} {a.show(digits)}"
    if diff == 0 and a.min == a.max == b.min == b.max:
        return Comparison(metric, a_name, b_name, 0.0, False, t, p, perm,
                          f"{head}: {f.format(a.mean)} on every seed of both arms; this metric cannot tell "
                          "them apart at this scale")
    better = (diff < 0) == lower_is_better
    word = ("lower" if diff < 0 else "higher") + (" (better)" if better else " (worse)")
    stds = [s.std for s in (a, b) if s.std is not None]
    ratio = (f", {abs(diff) / max(stds):.1f}x the larger seed standard deviation" if stds and max(stds) > 0
             else "")
    ptxt = f"; Welch t = {t:.2f}, p = {p:.3g}" if t is not None and p is not None else ""
    if perm is None:
        verdict = "one seed in an arm shows no spread: no reading either way"
    elif separated and perm <= ALPHA:
        verdict = (f"the seed ranges do not overlap (permutation p = {perm:.3g}): the difference exceeds the seed "
                   "spread at this scale")
    elif separated:
        verdict = (f"the seed ranges do not overlap, but with {a.n} and {b.n} seeds that happens by chance with "
                   f"probability {perm:.2g} (exact permutation test): suggestive, not established; more seeds "
                   "would tell")
    else:
        verdict = (f"the seed ranges overlap (permutation p = {perm:.2g}): at this scale the difference is within "
                   "the seed spread, evidence of neither")
    return Comparison(metric, a_name, b_name, diff, separated, t, p, perm,
                      f"{head}: {b_name} {word} by {f.format(abs(diff))}{ratio}{ptxt}; {verdict}")
