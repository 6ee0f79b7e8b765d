"""Spread across seeds and the comparison of two arms, on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from phi1.ablation.stats import compare, spread


def test_spread_of_four_values_by_hand():
    s = spread([4.0, 1.0, 3.0, 2.0])
    assert (s.n, s.mean, s.min, s.max) == (4, 2.5, 1.0, 4.0)
    # sample variance: ((1.5² + 1.5² + 0.5² + 0.5²) / 3) = 5/3
    assert s.std == pytest.approx(math.sqrt(5 / 3), rel=1e-12)
    assert s.show() == "2.500 ± 1.291 (1.000–4.000)"
    assert s.values == (4.0, 1.0, 3.0, 2.0)


def test_one_seed_has_no_spread():
    s = spread([0.25])
    assert s.std is None and s.mean == s.min == s.max == 0.25
    assert s.show() == "0.250 (1 seed)"


def test_spread_refuses_nothing_and_non_finite():
    with pytest.raises(ValueError):
        spread([])
    with pytest.raises(ValueError, match="non-finite"):
        spread([1.0, float("nan")])


def _t_sf_df4(t: float) -> float:
    """Student t survival function for 4 degrees of freedom, closed form."""
    x = t / math.sqrt(4 + t * t)
    return 0.5 - (x * (1.5 - 0.5 * x * x)) / 2


def test_three_separated_seeds_are_suggestive_not_established():
    a = spread([3.0, 3.2, 3.1])  # mean 3.1, std 0.1
    b = spread([2.0, 2.1, 2.2])  # mean 2.1, std 0.1
    c = compare("loss", "unfiltered", a, "filtered", b, lower_is_better=True)
    assert c.difference == pytest.approx(-1.0)
    assert c.separated
    # Welch: se = sqrt(0.01/3 + 0.01/3), t = -1 / se = -12.247; df = 4 exactly (equal variances and n)
    se = math.sqrt(0.02 / 3)
    assert c.welch_t == pytest.approx(-1 / se, rel=1e-9)
    assert c.welch_p == pytest.approx(2 * _t_sf_df4(1 / se), rel=1e-6)
    # of the C(6,3) = 20 splits of the pooled seeds, only this one and its mirror are as far apart
    assert c.permutation_p == pytest.approx(2 / 20)
    assert "filtered lower (better) by 1.000" in c.reading
    assert "10.0x the larger seed standard deviation" in c.reading
    assert "happens by chance with probability 0.1" in c.reading and "suggestive, not established" in c.reading
    assert "exceeds" not in c.reading


def test_four_separated_seeds_exceed_the_seed_spread():
    a, b = spread([3.0, 3.1, 3.2, 3.3]), spread([2.0, 2.1, 2.2, 2.3])
    c = compare("loss", "unfiltered", a, "filtered", b, lower_is_better=True)
    assert c.permutation_p == pytest.approx(2 / 70)  # C(8,4) = 70 splits
    assert "the difference exceeds the seed spread" in c.reading


def test_overlapping_arms_are_within_the_spread():
    a = spread([3.0, 3.4, 3.2])
    b = spread([3.1, 3.3, 2.9])
    c = compare("loss", "unfiltered", a, "filtered", b, lower_is_better=True)
    assert not c.separated
    assert c.difference == pytest.approx(-0.1)
    # pooled 2.9 .. 3.4 in steps of 0.1: a split's sums differ by >= 0.3 when the three values chosen for b
    # are 0.1 x {0..5} indices summing to <= 6 (7 subsets) or >= 9 (7 subsets) of the 20
    assert c.permutation_p == pytest.approx(14 / 20)
    assert "within the seed spread" in c.reading
    # higher is better: the same numbers read as worse
    c2 = compare("pass@1", "unfiltered", a, "filtered", b, lower_is_better=False)
    assert "lower (worse)" in c2.reading


def test_all_zero_metric_cannot_tell_the_arms_apart():
    z = spread([0.0, 0.0, 0.0])
    c = compare("pass@1", "unfiltered", z, "filtered", spread([0.0, 0.0, 0.0]), lower_is_better=False)
    assert not c.separated and c.difference == 0 and c.welch_p is None
    assert "cannot tell them apart" in c.reading


def test_constant_but_different_arms_are_separated_without_a_t_test():
    c = compare("pass@1", "unfiltered", spread([0.0, 0.0]), "filtered", spread([0.01, 0.01]), lower_is_better=False)
    assert c.separated and c.welch_t is None
    assert c.permutation_p == pytest.approx(2 / 6)
    assert "higher (better)" in c.reading


def test_many_seeds_use_a_seeded_sample_of_splits(monkeypatch):
    import phi1.ablation.stats as st

    monkeypatch.setattr(st, "PERMUTATIONS", 50)  # C(8,4) = 70 > 50: sampled, reproducibly
    a, b = spread([3.0, 3.1, 3.2, 3.3]), spread([2.0, 2.1, 2.2, 2.3])
    p1, p2 = st.permutation_p(a, b), st.permutation_p(a, b)
    assert p1 == p2 and 0 <= p1 <= 0.2
