"""Exact and MinHash near-duplicate removal, references first, first occurrence wins."""

from __future__ import annotations

import random

import numpy as np
import pytest

from phi1.synth.dedup import MinHasher, bands_for, deduplicate, similarity, text_key, tokens
from phi1.synth.mine import dedup_key
from phi1.synth.records import ExerciseRecord

BASE = ("def merge_orders(a, b):\n    \"\"\"Merge two sorted lists of order ids.\"\"\"\n    out = []\n"
        "    i = j = 0\n    while i < len(a) and j < len(b):\n        if a[i] <= b[j]:\n"
        "            out.append(a[i])\n            i += 1\n        else:\n            out.append(b[j])\n"
        "            j += 1\n    out.extend(a[i:])\n    out.extend(b[j:])\n    return out\n")


def words(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota", "kappa",
                                "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma"]) for _ in range(n))


def jaccard(a: str, b: str, n: int = 5) -> float:
    def grams(t: str) -> set:
        tk = tokens(t)
        return {tuple(tk[i:i + n]) for i in range(len(tk) - n + 1)}
    ga, gb = grams(a), grams(b)
    return len(ga & gb) / len(ga | gb)


def test_signature_estimates_jaccard():
    h = MinHasher()
    a = words(400, 1)
    for cut in (20, 80, 200):  # replace a growing tail
        b = a.rsplit(" ", cut)[0] + " " + words(cut, 99)
        assert abs(similarity(h.signature(a), h.signature(b)) - jaccard(a, b)) < 0.12
    assert similarity(h.signature(a), h.signature(a)) == 1.0
    assert h.signature(a).dtype == np.uint32 and h.signature("").shape == (128,)
    # the same on every machine and run: a fixed seed, no Python hash()
    assert MinHasher().signature(a).tolist() == h.signature(a).tolist()


@pytest.mark.parametrize("t", [0.5, 0.7, 0.8, 0.9])
def test_bands_find_pairs_at_the_threshold(t):
    bands, rows = bands_for(t)
    assert bands * rows == 128
    assert 1 - (1 - t ** rows) ** bands > 0.9  # a pair exactly at the threshold is a candidate


def test_exact_keys_ignore_formatting_and_comments():
    a = ExerciseRecord("a", "def f(x):\n    \"\"\"Double x.\"\"\"\n", "    return x * 2\n", "s")
    b = ExerciseRecord("b", "def f(x) :\n    \"\"\"Double x.\"\"\"\n", "    # twice\n    return (x * 2)\n", "s")
    assert dedup_key(a) == dedup_key(b)
    assert text_key("Some  text\n\nhere ") == text_key("Some text here")


def test_dedup_reasons_references_and_order():
    h = MinHasher()
    near = BASE.replace("out.extend(b[j:])", "out.extend(b[j:])  # rest") + "\n# merged\n"
    other = words(300, 5)
    texts = [BASE,            # 0 reference
             other,           # 1 kept
             BASE,            # 2 exact copy of the reference
             near,            # 3 near the reference
             other,           # 4 exact copy of 1
             other + " omega",  # 5 near 1
             words(300, 6)]   # 6 kept
    keys = [text_key(t) for t in texts]
    res = deduplicate(keys, h.signatures(texts), 0.8, references=1)
    assert res.reasons == [None, None, "duplicate_of_reference", "near_duplicate_of_reference", "duplicate",
                           "near_duplicate", None]
    assert res.dropped(1) == {"duplicate_of_reference": 1, "near_duplicate_of_reference": 1, "duplicate": 1,
                              "near_duplicate": 1}
    # without references the first occurrence wins
    res = deduplicate(keys[1:], h.signatures(texts[1:]), 0.8)
    assert res.reasons == [None, None, "near_duplicate", "duplicate", "near_duplicate", None]


def test_a_record_is_compared_with_kept_records_only():
    rng = np.random.default_rng(0)
    sa = rng.integers(0, 2**32, 128, dtype=np.uint64).astype(np.uint32)
    sb = sa.copy()
    sb[:19] += 1  # b agrees with a on 109/128 = 0.85
    sc = sb.copy()
    sc[100:119] += 1  # c agrees with b on 0.85, with a on 90/128 = 0.70
    assert similarity(sb, sc) > 0.8 > similarity(sa, sc)
    res = deduplicate(["a", "b", "c"], np.stack([sa, sb, sc]), 0.8)
    assert res.reasons == [None, "near_duplicate", None]  # b is dropped, so c is judged against a only


def test_unrelated_texts_are_never_near_duplicates():
    # Regression: with multipliers below 2^32 the permutations were monotone in the shingle hash, so two
    # texts sharing a single shingle of small hash got (nearly) identical signatures.
    rng = random.Random(0)
    vocab = ["x", "y", "total", "for", "in", "(", ")", ":", "=", "+", "return", "if", "def"] + \
        [f"v{i}" for i in range(300)]
    texts = [" ".join(rng.choice(vocab) for _ in range(150)) for _ in range(1500)]
    h = MinHasher()
    sigs = h.signatures(texts)
    assert deduplicate([str(i) for i in range(len(texts))], sigs, 0.8).dropped() == {}
    # two texts sharing only a shingle whose hash is tiny
    shared = next(f"aa bb cc dd q{i}" for i in range(10**7) if h.shingles(f"aa bb cc dd q{i}")[0] < 2**16)
    a, b = shared + " " + words(150, 1), shared + " " + words(150, 2)
    assert jaccard(a, b) < 0.05 and similarity(h.signature(a), h.signature(b)) < 0.2
