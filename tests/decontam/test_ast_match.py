"""AST match rate: the definition, and that the fast all-pairs matcher
(length bands + score cutoff) finds exactly what brute force finds."""

from __future__ import annotations

import random

import numpy as np
import pytest
from rapidfuzz.distance import Levenshtein

import decontam_fixtures as fx
from phi1.decontam.ast_match import AstIndex, AstOptions, linearize, match_rate, snippet_match_rate

SRC = '''import math
from typing import List


def area(r: float) -> float:
    """Area of a circle."""
    # a comment
    return math.pi * r * r
'''


def test_linearization_ignores_docstrings_imports_comments_names_and_layout():
    other = "def f(x):\n    return math.pi*x   *  x  # other comment\n"
    assert linearize(SRC) == linearize("def surface(radius: float) -> float:\n    return math.pi * radius * radius\n")
    # annotations are syntax: dropping them is an edit
    assert linearize(SRC) != linearize(other)
    assert snippet_match_rate(SRC, other) < 1.0
    # literals abstracted to their type: 2 vs 3 is no edit, 2 vs "2" is
    assert linearize("x = 2") == linearize("y = 3") != linearize("x = '2'")


def test_keep_names_and_literals_make_them_count():
    a, b = "def f(a):\n    return a + 1\n", "def g(b):\n    return b + 2\n"
    assert snippet_match_rate(a, b) == 1.0
    assert snippet_match_rate(a, b, AstOptions(keep_names=True)) < 1.0
    assert snippet_match_rate(a, b.replace("g(b)", "f(a)").replace("b +", "a +"), AstOptions(keep_names=True)) == 1.0
    assert snippet_match_rate(a, a.replace("1", "2"), AstOptions(keep_literals=True)) < 1.0


def test_rate_is_one_minus_normalized_levenshtein():
    a, b = linearize(fx.program("HumanEval/0")), linearize(fx.program("HumanEval/26"))
    d = Levenshtein.distance(a, b)
    assert match_rate(a, b) == pytest.approx(1 - d / max(len(a), len(b)))
    assert match_rate(a, b) == match_rate(b, a)
    assert match_rate(a, a) == 1.0 and match_rate("", "") == 1.0


@pytest.mark.parametrize("src", ["def f(:\n", "", "print 'python 2'\n", "x = (" * 200 + ")" * 200])
def test_unparseable_or_hostile_snippets_have_no_linearization(src):
    out = linearize(src)
    assert out is None or len(out) == 1  # empty input: the bare Module node, below any min_nodes


def _brute(problems, records, cutoff, thresholds, min_nodes):
    n, p = len(records), len(problems)
    M = np.zeros((n, p))
    for i, r in enumerate(records):
        for j, q in enumerate(problems):
            if r is None or q is None or len(r) < min_nodes or len(q) < min_nodes:
                continue
            s = Levenshtein.normalized_similarity(r, q)
            M[i, j] = s if s >= cutoff else 0.0
    return M


def test_banded_matcher_equals_brute_force():
    """Near copies of the problems (random edits) among real code: the fast
    matcher's nearest, best-per-problem and counts equal the all-pairs truth."""
    rng = random.Random(7)
    problems = [linearize(p.prompt + p.canonical_solution) for p in fx.humaneval().values()][:60]
    records = [linearize(r["prompt"] + r["solution"]) for r in fx.real_exercises()[:60]] + [None]
    alphabet = sorted(set("".join(s for s in problems if s)))
    for q in problems[:40]:  # mutate: 0..25% of the symbols edited
        s = list(q)
        for _ in range(rng.randint(0, max(1, len(s) // 4))):
            k = rng.randrange(len(s))
            op = rng.choice("sid")
            if op == "s":
                s[k] = rng.choice(alphabet)
            elif op == "i":
                s.insert(k, rng.choice(alphabet))
            elif len(s) > 1:
                del s[k]
        records.append("".join(s))
    thresholds = (0.8, 0.85, 0.9, 0.95)
    for min_nodes in (1, 16):
        idx = AstIndex(problems, 0.8, thresholds, min_nodes=min_nodes, workers=2)
        m = idx.match(records)
        M = _brute(problems, records, 0.8, thresholds, min_nodes)
        best = M.max(axis=1)
        np.testing.assert_allclose(m.rate, best)
        has = best > 0
        assert (m.nearest[~has] == -1).all()
        # a tie may pick either problem: the chosen one must reach the best rate
        assert np.allclose(M[np.nonzero(has)[0], m.nearest[has]], best[has])
        np.testing.assert_allclose(m.problem_best, M.max(axis=0))
        for k, t in enumerate(thresholds):
            np.testing.assert_array_equal(m.problem_counts[:, k], (M >= t - 1e-9).sum(axis=0))
        assert m.pairs == len(records) * len(problems) and m.compared < m.pairs  # the bands skipped some
        assert (has.sum() > 20) and len(idx.too_small) == (0 if min_nodes == 1 else
                                                           sum(len(p) < 16 for p in problems))


def test_rate_exactly_at_a_threshold_counts():
    # 19 of 20 symbols equal: rate exactly 0.95
    a = "0123456789" * 2
    b = a[:-1] + "x"
    idx = AstIndex([a], 0.95, (0.95,), min_nodes=1)
    m = idx.match([b])
    assert m.rate[0] == pytest.approx(0.95) and m.problem_counts[0, 0] == 1
