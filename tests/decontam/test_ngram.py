"""n-gram overlap: normalization, and hits equal to a brute-force set intersection."""

from __future__ import annotations

import random

import decontam_fixtures as fx
from phi1.decontam.ngram import NgramIndex, words


def _grams(text, n):
    w = words(text)
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def test_words_ignore_case_punctuation_and_layout():
    assert words("def Add(a,b):\n    return a+b  # Sum!") == ["def", "add", "a", "b", "return", "a", "b", "sum"]
    assert words('"""x_1 == 2"""') == ["x_1", "2"]


def test_hits_equal_brute_force_on_real_and_planted_text():
    probs = list(fx.humaneval().values())
    texts = [p.prompt + p.canonical_solution + "\n" + p.test for p in probs]
    rng = random.Random(3)
    samples = [r["prompt"] + r["solution"] for r in fx.real_exercises()[:40]]
    for p in rng.sample(probs, 10):  # copies with words shuffled around a kept 13-word window
        w = words(p.prompt + p.canonical_solution)
        k = rng.randrange(0, max(1, len(w) - 13))
        samples.append(" ".join(rng.sample(w, len(w)) + ["|"] + w[k:k + 13]))
        samples.append(" ".join(w[k:k + 12]))  # 12 words: no 13-gram
    for n in (13, 5):
        idx = NgramIndex.build(texts, n)
        truth = [_grams(t, n) for t in texts]
        for s in samples:
            g = _grams(s, n)
            expect = sorted(i for i, tg in enumerate(truth) if g & tg)
            got, shared = idx.hits(s)
            assert got == expect
            assert shared == len(g & set().union(*truth))


def test_a_hash_collision_is_never_a_hit():
    idx = NgramIndex.build(["a b c"], 3)
    # force every window to share the stored hash: only a word-by-word equal window may hit
    import numpy as np

    idx._mult = np.zeros(3, dtype=np.uint64)
    idx.hashes = np.zeros(1, dtype=np.uint64)
    assert idx.hits("a b c")[0] == [0]
    assert idx.hits("a c b")[0] == []


def test_empty_and_short_inputs():
    idx = NgramIndex.build(["one two three"], 13)
    assert idx.hits("one two three")[0] == [] and idx.n_problems == 1
    assert NgramIndex.build([], 13).hits("anything")[0] == []
