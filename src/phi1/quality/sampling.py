"""A seeded sample of documents, stratified by size, in one pass.

Every document gets a priority from a hash of (seed, id), so the sample does
not depend on shard order or on how many tasks wrote the shards. One pass
keeps the ``2 * n`` documents of lowest priority (a uniform random pool,
memory ``2 * n * max_chars``); the pool is cut into ``strata`` equal groups by
size (its own quantiles, which estimate the corpus's), and each group gives
its ``n / strata`` lowest-priority documents. Small and large files are thus
represented exactly in proportion, where a plain random sample of a few
hundred would over- or under-draw the tails by chance.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from phi1.documents import Doc, read_documents

POOL_FACTOR = 2


@dataclass
class SampledDoc:
    id: str
    text: str  # the first max_chars characters (what a teacher is shown)
    size: int  # bytes of the whole document
    stratum: int
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Sample:
    docs: list[SampledDoc]
    corpus_documents: int
    size_edges: list[int]  # upper size bound of each stratum (bytes)


def priority(seed: int, doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest(), "big")


def doc_size(doc: Doc) -> int:
    size = doc.metadata.get("size")
    return int(size) if isinstance(size, (int, float)) and size >= 0 else len(doc.text.encode())


def stratified_sample(docs: Iterable[Doc], n: int, strata: int, seed: int, max_chars: int) -> Sample:
    """``n`` documents (or all, if fewer), equally many from each size stratum."""
    pool_size = POOL_FACTOR * n
    heap: list[tuple[int, str, int, str, dict[str, Any]]] = []  # max-heap on priority via negation
    total = 0
    for doc in docs:
        total += 1
        item = (-priority(seed, doc.id), doc.id, doc_size(doc), doc.text[:max_chars], _small_meta(doc.metadata))
        if len(heap) < pool_size:
            heapq.heappush(heap, item)
        elif item[0] > heap[0][0]:
            heapq.heapreplace(heap, item)
    pool = sorted(heap, key=lambda it: (it[2], -it[0]))  # by size, ties by priority
    strata = max(1, min(strata, len(pool)))
    groups = [pool[len(pool) * s // strata: len(pool) * (s + 1) // strata] for s in range(strata)]
    edges = [g[-1][2] if g else 0 for g in groups]
    want = min(n, len(pool))
    quota = [want // strata + (1 if s < want % strata else 0) for s in range(strata)]
    chosen: list[SampledDoc] = []
    leftovers = []
    for s, group in enumerate(groups):
        by_priority = sorted(group, key=lambda it: -it[0])
        take, rest = by_priority[:quota[s]], by_priority[quota[s]:]
        chosen += [SampledDoc(it[1], it[3], it[2], s, it[4]) for it in take]
        leftovers += [(s, it) for it in rest]
    if len(chosen) < want:  # a stratum was short (only with tiny pools): fill by priority
        leftovers.sort(key=lambda si: -si[1][0])
        chosen += [SampledDoc(it[1], it[3], it[2], s, it[4]) for s, it in leftovers[: want - len(chosen)]]
    chosen.sort(key=lambda d: d.id)
    return Sample(chosen, total, edges)


def sample_folder(folder: str | Path, n: int, strata: int, seed: int, max_chars: int) -> Sample:
    return stratified_sample(read_documents(folder), n, strata, seed, max_chars)


def _small_meta(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: meta[k] for k in ("source", "path") if k in meta}
