"""Embedding distance: exact search against brute force, the faiss ANN path,
and real MiniLM vectors (all-MiniLM-L6-v2, offline)."""

from __future__ import annotations

import numpy as np
import pytest

import decontam_fixtures as fx
from phi1.decontam.embedding import EmbeddingIndex, build_normalized_embedder, embed_texts


def _random(n, d, seed):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_search_equals_brute_force_in_slices():
    problems, records = _random(300, 16, 0), _random(20_000, 16, 1)  # > one slice of 4M entries
    m = EmbeddingIndex(problems).match(records, max_distance=0.6)
    d = np.linalg.norm(records[:, None, :] - problems[None, :, :], axis=2)
    np.testing.assert_array_equal(m.nearest, d.argmin(axis=1))
    np.testing.assert_allclose(m.distance, d.min(axis=1), atol=1e-5)
    np.testing.assert_allclose(m.problem_best, d.min(axis=0), atol=1e-5)
    np.testing.assert_array_equal(m.problem_best_record, d.argmin(axis=0))
    np.testing.assert_array_equal(m.problem_counts, (d <= 0.6).sum(axis=0))


def test_unnormalized_vectors_are_normalized():
    p = _random(5, 8, 2)
    m = EmbeddingIndex(p * 7.0).match(p[[3]] * 0.1)
    assert m.nearest[0] == 3 and m.distance[0] < 1e-3


def test_faiss_ann_index_above_the_threshold():
    pytest.importorskip("faiss")
    problems = _random(2000, 32, 4)
    queries = problems[:200] + 0.01 * _random(200, 32, 5)
    idx = EmbeddingIndex(problems, ann_min_problems=1000)
    assert idx.method == "faiss-hnsw"
    m = idx.match(queries, max_distance=0.1)
    assert (m.nearest == np.arange(200)).mean() > 0.95  # approximate, but near-copies are found
    assert (m.problem_counts[:200] >= 1).mean() > 0.95 and m.problem_counts[200:].sum() == 0
    assert EmbeddingIndex(problems[:500], ann_min_problems=1000).method == "exact"


def test_minilm_puts_a_copy_next_to_its_problem():
    e = build_normalized_embedder(fx.minilm_config(), threads=2)
    tids = ["HumanEval/0", "HumanEval/12", "HumanEval/31"]
    pv = embed_texts(e, [fx.program(t) for t in tids])
    assert np.allclose(np.linalg.norm(pv, axis=1), 1.0, atol=1e-5)
    texts = [fx.program("HumanEval/12"), fx.reformatted(fx.program("HumanEval/31")),
             fx.real_exercises()[0]["prompt"] + fx.real_exercises()[0]["solution"]]
    m = EmbeddingIndex(pv).match(embed_texts(e, texts))
    assert list(m.nearest[:2]) == [1, 2] and m.distance[0] < 1e-3 and m.distance[1] < 0.1
    assert m.distance[2] > 0.5
