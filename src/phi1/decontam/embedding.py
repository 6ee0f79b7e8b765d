"""Embedding distance: the nearest problem of each training snippet by L2
between unit-length embeddings (the paper: normalized CodeGen-Mono-350M
embeddings; here whatever the ``[embed]`` section configures).

Vectors come from phi1's embedders (`phi1.quality.embedders.build_embedder`)
with ``normalize`` forced on, so the distance lies in [0, 2] and equals
sqrt(2 - 2 cos). The problems are the index: exact search (one matrix
product per batch) while they are few, which they are for HumanEval (164)
and MBPP (974); above ``ann_min_problems`` a faiss HNSW index is used when
faiss is installed (``pip install faiss-cpu``), exact search otherwise.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from phi1.errors import Phi1Error

ANN_MIN_PROBLEMS = 50_000


def build_normalized_embedder(embed_cfg: Any, rank: int = 0, threads: int | None = None) -> Any:
    """The `[embed]` embedder with unit-length output (distances comparable across texts)."""
    from phi1.quality.embedders import build_embedder

    return build_embedder(dataclasses.replace(embed_cfg, normalize=True), rank=rank, threads=threads)


def normalize_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class EmbeddingIndex:
    """Nearest problem by L2 distance for batches of training vectors."""

    def __init__(self, problem_vectors: np.ndarray, ann_min_problems: int = ANN_MIN_PROBLEMS):
        vecs = normalize_rows(problem_vectors)
        if vecs.ndim != 2 or not len(vecs):
            raise Phi1Error("embedding index: no problem vectors")
        self.vectors = vecs
        self.dim = vecs.shape[1]
        self.method = "exact"
        self._faiss: Any = None
        if len(vecs) >= ann_min_problems:
            try:
                import faiss
            except ImportError:
                faiss = None
            if faiss is not None:
                index = faiss.IndexHNSWFlat(self.dim, 32)
                index.hnsw.efSearch = 64
                index.add(vecs)
                self._faiss = index
                self.method = "faiss-hnsw"

    def match(self, vectors: np.ndarray, max_distance: float = 0.0) -> "EmbeddingMatches":
        """Nearest problem of each row, and each problem's nearest row.

        Exact search computes every distance (in slices of rows), so the
        per-problem minimum and the count of rows within ``max_distance`` are
        exact; with the ANN index they come from each row's nearest problem.
        """
        q = normalize_rows(vectors)
        p = len(self.vectors)
        n = q.shape[0] if q.ndim == 2 else 0
        out = EmbeddingMatches(np.full(n, -1, dtype=np.int64), np.full(n, np.inf), np.full(p, np.inf),
                               np.full(p, -1, dtype=np.int64), np.zeros(p, dtype=np.int64))
        if n == 0:
            return out
        if q.shape[1] != self.dim:
            raise Phi1Error(f"embedding index: vectors of dim {q.shape[1]} against problems of dim {self.dim}")
        if self._faiss is not None:
            d2, idx = self._faiss.search(q, 1)  # squared L2
            out.nearest[:] = idx[:, 0]
            out.distance[:] = np.sqrt(np.maximum(d2[:, 0].astype(np.float64), 0.0))
            for r in np.argsort(out.distance, kind="stable")[::-1]:  # smallest last: it wins
                j = out.nearest[r]
                if j >= 0 and out.distance[r] <= out.problem_best[j]:
                    out.problem_best[j], out.problem_best_record[j] = out.distance[r], r
                if j >= 0 and max_distance > 0 and out.distance[r] <= max_distance:
                    out.problem_counts[j] += 1
            return out
        step = max(1, 4_000_000 // p)
        for s in range(0, n, step):
            # unit vectors: |a-b|^2 = 2 - 2 a.b
            d = np.sqrt(np.maximum(2.0 - 2.0 * (q[s:s + step] @ self.vectors.T).astype(np.float64), 0.0))
            rows = np.arange(d.shape[0])
            j = d.argmin(axis=1)
            out.nearest[s:s + step] = j
            out.distance[s:s + step] = d[rows, j]
            col = d.argmin(axis=0)
            col_d = d[col, np.arange(p)]
            better = col_d < out.problem_best
            out.problem_best[better] = col_d[better]
            out.problem_best_record[better] = col[better] + s
            if max_distance > 0:
                out.problem_counts += (d <= max_distance).sum(axis=0)
        return out


@dataclasses.dataclass
class EmbeddingMatches:
    nearest: np.ndarray  # per row: problem index
    distance: np.ndarray  # per row: L2 distance to it
    problem_best: np.ndarray  # per problem: smallest distance (inf = none)
    problem_best_record: np.ndarray  # per problem: the row holding it (-1 = none)
    problem_counts: np.ndarray  # per problem: rows within max_distance


def embed_texts(embedder: Any, texts: Sequence[str]) -> np.ndarray:
    """Unit-length vectors of texts (empty input -> an empty (0, dim) array)."""
    if not texts:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    # A lone surrogate (valid in JSON, e.g. in a problem's text) is not text a tokenizer takes.
    clean = [t if t.isascii() else t.encode("utf-8", "replace").decode("utf-8") for t in texts]
    return normalize_rows(embedder.embed(clean))
