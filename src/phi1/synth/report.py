"""The diversity report of a synthetic dataset (it goes into the manifest).

* ``distinct_n``: distinct token n-grams / all n-grams (n = 1..4) over a
  seeded sample of the kept records (the ratio falls as a sample grows, so the
  sample size is reported with it);
* ``coverage``: how much of the seed space the kept records (and the seeds
  asked for) cover: leaves, pairs (textbooks: leaf x audience; exercises:
  leaf x scenario), function names, and every other seed dimension;
* ``imports``: how many records import each module;
* ``nearest_neighbour``: for a seeded sample embedded with the ``[embed]``
  backend, each record's cosine similarity to its nearest other record, as a
  histogram over [0, 1] in tenths (and mean, median, share above 0.9).
"""

from __future__ import annotations

import random
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import xxhash

from phi1.synth.dedup import tokens

NGRAMS = (1, 2, 3, 4)
BINS = 10


def sample_indices(n: int, k: int, seed: int) -> list[int]:
    """A seeded sample of ``min(n, k)`` indices, in increasing order."""
    if k >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), k))


def distinct_ngrams(texts: Sequence[str], ns: Iterable[int] = NGRAMS) -> dict[str, Any]:
    out: dict[str, Any] = {"records": len(texts)}
    toks = [tokens(t) for t in texts]
    for n in ns:
        hashes = []
        for tk in toks:
            grams = ["\x1f".join(tk[i:i + n]) for i in range(len(tk) - n + 1)]
            hashes.append(np.fromiter((xxhash.xxh64_intdigest(g.encode("utf-8")) for g in grams),
                                      dtype=np.uint64, count=len(grams)))
        allh = np.concatenate(hashes) if hashes else np.empty(0, dtype=np.uint64)
        out[f"distinct_{n}"] = round(len(np.unique(allh)) / len(allh), 4) if len(allh) else None
    return out


class Coverage:
    """How much of the seed space a stream of seeds (their ``to_json()``) covers:
    covered / total for each field in ``dims`` (field -> size of the space), for
    ``pair`` combinations, and for function names when ``names_total`` is given."""

    def __init__(self, dims: dict[str, int], pair: tuple[str, str], names_total: int | None = None):
        self.dims = dims
        self.pair = pair
        self.names_total = names_total
        self.seen: dict[str, set[Any]] = {f: set() for f in dims}
        self.pairs: set[tuple[Any, Any]] = set()
        self.names: set[str] = set()
        self.seeds = 0

    def add(self, seed: dict[str, Any]) -> None:
        self.seeds += 1
        for f, values in self.seen.items():
            values.add(seed[f])
        self.pairs.add((seed[self.pair[0]], seed[self.pair[1]]))
        if self.names_total is not None:
            self.names.add(seed["name"])

    @staticmethod
    def _share(covered: int, total: int) -> dict[str, Any]:
        return {"covered": covered, "total": total, "share": round(covered / total, 6) if total else None}

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seeds": self.seeds}
        for f, values in self.seen.items():
            out[f] = self._share(len(values), self.dims[f])
        a, b = self.pair
        out[f"{a}_x_{b}"] = self._share(len(self.pairs), self.dims[a] * self.dims[b])
        if self.names_total is not None:
            out["name"] = self._share(len(self.names), self.names_total)
        return out


def coverage_lines(coverage: dict[str, dict[str, Any]]) -> list[str]:
    """One line per kind: leaves, pairs and function names covered."""
    lines = []
    for kind, cov in coverage.items():
        c = cov["concept"]
        pair_key = next(key for key in cov if "_x_" in key)
        pair = cov[pair_key]
        line = (f"{kind} seed coverage: {c['covered']:,}/{c['total']:,} leaves, {pair['covered']:,}/"
                f"{pair['total']:,} ({pair_key.replace('_x_', ' x ')}) pairs")
        if "name" in cov:
            line += f", {cov['name']['covered']:,}/{cov['name']['total']:,} function names"
        lines.append(line)
    return lines


def nearest_neighbour(vectors: np.ndarray) -> dict[str, Any]:
    """Cosine similarity of each row to its nearest other row, as a histogram."""
    n = len(vectors)
    if n < 2:
        return {"records": n, "histogram": None}
    v = vectors.astype(np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    v = v / np.where(norms == 0, 1, norms)
    best = np.full(n, -1.0, dtype=np.float32)
    for s in range(0, n, 1024):  # blocks bound the memory of the similarity matrix
        sims = v[s:s + 1024] @ v.T
        for r in range(sims.shape[0]):
            sims[r, s + r] = -np.inf
        best[s:s + 1024] = sims.max(axis=1)
    clipped = np.clip(best, 0.0, 1.0)
    counts, edges = np.histogram(clipped, bins=BINS, range=(0.0, 1.0))
    return {
        "records": n,
        "histogram": {f"{edges[i]:.1f}-{edges[i + 1]:.1f}": int(counts[i]) for i in range(BINS)},
        "mean": round(float(best.mean()), 4),
        "median": round(float(np.median(best)), 4),
        "above_0.9": round(float((best >= 0.9).mean()), 4),
    }


def embedding_report(texts: Sequence[str], embed: Callable[[Sequence[str]], np.ndarray]) -> dict[str, Any]:
    if len(texts) < 2:
        return {"records": len(texts), "histogram": None}
    return nearest_neighbour(np.asarray(embed(texts)))
