"""The spread across seeds, and whether a difference between arms exceeds it.

With three seeds an arm's standard deviation is itself rough; the reading
therefore rests on the plainest test there is — do the arms' seed ranges
overlap? — and gives Welch's t-test beside it for those who want a number.
"""

from __future__ import annotations

import math
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


def compare(metric: str, a_name: str, a: Spread, b_name: str, b: Spread, lower_is_better: bool,
            digits: int = 3) -> Comparison:
    """Whether ``b`` differs from ``a`` by more than the seeds' spread, in words."""
    diff = b.mean - a.mean
    separated = b.max < a.min or a.max < b.min
    t, p = welch(a, b)
    f = f"{{:.{digits}f}}"
    head = f"{metric}: {b_name} {b.show(digits)} vs {a_name} {a.show(digits)}"
    if diff == 0 and a.min == a.max == b.min == b.max:
        return Comparison(metric, a_name, b_name, 0.0, False, t, p,
                          f"{head}: {f.format(a.mean)} on every seed of both arms; this metric cannot tell "
                          "them apart at this scale")
    better = (diff < 0) == lower_is_better
    word = ("lower" if diff < 0 else "higher") + (" (better)" if better else " (worse)")
    stds = [s.std for s in (a, b) if s.std is not None]
    ratio = (f", {abs(diff) / max(stds):.1f}x the larger seed standard deviation" if stds and max(stds) > 0
             else "")
    ptxt = f"; Welch t = {t:.2f}, p = {p:.3g}" if t is not None and p is not None else ""
    if min(a.n, b.n) < 2:
        verdict = "one seed per arm shows no spread: no reading either way"
    elif separated:
        verdict = ("the seed ranges do not overlap: the difference exceeds the seed spread at this scale"
                   + (f" (with {min(a.n, b.n)} seeds per arm)" if min(a.n, b.n) < 5 else ""))
    else:
        verdict = ("the seed ranges overlap: at this scale the difference is within the seed spread, "
                   "evidence of neither")
    return Comparison(metric, a_name, b_name, diff, separated, t, p,
                      f"{head}: {b_name} {word} by {f.format(abs(diff))}{ratio}{ptxt}; {verdict}")
