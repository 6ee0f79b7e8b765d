"""Exact and near-duplicate removal for synthetic records (in memory, numpy).

Exact: records with the same key are duplicates; for exercises the key is
mine's (`phi1.synth.mine.dedup_key`: the program after ``ast.unparse``, so
formatting and comments do not count), for textbooks the text with
whitespace runs collapsed.

Near: MinHash over shingles of 5 tokens (identifiers, numbers and single
punctuation characters), 128 permutations stored as 32-bit values, banded
LSH for candidates, then the signature agreement (the Jaccard estimate)
decides: a record whose estimate against an earlier kept record is at least
``threshold`` is dropped. The band width is chosen from the threshold so that
a pair at the threshold is a candidate at least 90% of the time (more similar
pairs: nearly always).

Reference records (e.g. `mine`'s exercises) go first: they are never dropped
and never written, but a synthetic record that duplicates one is dropped with
its own reason. The first occurrence wins, so the result depends only on the
order of the records, which is the order of their seeds.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import xxhash

from phi1.synth.validate import DUPLICATE, DUPLICATE_OF_REFERENCE, NEAR_DUPLICATE, NEAR_DUPLICATE_OF_REFERENCE

NUM_PERM = 128
SHINGLE = 5
_TOKEN = re.compile(r"\w+|[^\w\s]")
_PRIME = np.uint64((1 << 61) - 1)
_MAX_CANDIDATES = 64  # earlier members of one LSH bucket compared with a record


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def text_key(text: str) -> str:
    """Exact-duplicate key of a text: whitespace runs collapsed."""
    return hashlib.sha1(" ".join(text.split()).encode("utf-8")).hexdigest()


class MinHasher:
    """``signature(text)`` -> ``NUM_PERM`` uint32 values (the same for any process and run)."""

    def __init__(self, num_perm: int = NUM_PERM, shingle: int = SHINGLE, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.num_perm = num_perm
        self.shingle = shingle
        # a, b below the Mersenne prime, as in datasketch: a * h wraps mod 2^64 before the mod P, so the
        # permutations are not monotone in h (with a, b < 2^32 a shingle of small hash would be the
        # minimum of every permutation, and two texts sharing it would look identical)
        self._a = rng.integers(1, int(_PRIME), num_perm, dtype=np.uint64)
        self._b = rng.integers(0, int(_PRIME), num_perm, dtype=np.uint64)

    def shingles(self, text: str) -> np.ndarray:
        toks = tokens(text)
        n = self.shingle
        grams = ["\x1f".join(toks[i:i + n]) for i in range(max(1, len(toks) - n + 1))] if toks else []
        return np.fromiter((xxhash.xxh32_intdigest(g.encode("utf-8")) for g in grams), dtype=np.uint64,
                           count=len(grams))

    def signature(self, text: str) -> np.ndarray:
        h = self.shingles(text)
        if not len(h):
            return np.full(self.num_perm, 0xFFFFFFFF, dtype=np.uint32)
        with np.errstate(over="ignore"):
            values = (h[:, None] * self._a[None, :] + self._b[None, :]) % _PRIME
        return (values.min(axis=0) & np.uint64(0xFFFFFFFF)).astype(np.uint32)

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), self.num_perm), dtype=np.uint32)
        for i, t in enumerate(texts):
            out[i] = self.signature(t)
        return out


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """The Jaccard estimate of two signatures: the share of equal values."""
    return float(np.mean(a == b))


def bands_for(threshold: float, num_perm: int = NUM_PERM) -> tuple[int, int]:
    """(bands, rows): the widest bands (fewest chance candidates) with which a
    pair exactly at ``threshold`` still becomes a candidate 90% of the time."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        if num_perm % rows:
            continue
        bands = num_perm // rows
        if 1 - (1 - threshold ** rows) ** bands >= 0.9:
            best = (bands, rows)
    return best


@dataclass
class DedupResult:
    reasons: list[str | None]  # per record (references included): None = kept
    compared: int  # signature pairs compared

    def dropped(self, start: int = 0) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for r in self.reasons[start:]:
            if r is not None:
                out[r] += 1
        return dict(out)


def deduplicate(keys: Sequence[str], signatures: np.ndarray, threshold: float, references: int = 0
                ) -> DedupResult:
    """Which records to drop and why; the first ``references`` are references."""
    n = len(keys)
    if signatures.shape[0] != n:
        raise ValueError(f"{n} keys but {signatures.shape[0]} signatures")
    reasons: list[str | None] = [None] * n
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k in first:
            if i >= references:
                reasons[i] = DUPLICATE_OF_REFERENCE if first[k] < references else DUPLICATE
        else:
            first[k] = i
    alive = np.array([i for i in range(n) if reasons[i] is None], dtype=np.int64)
    if len(alive) < 2:
        return DedupResult(reasons, 0)
    bands, rows = bands_for(threshold, signatures.shape[1])
    mixers = np.random.default_rng(12345).integers(1, 1 << 63, rows, dtype=np.uint64) | np.uint64(1)
    candidates: dict[int, set[int]] = defaultdict(set)
    sig = signatures[alive].astype(np.uint64)
    for b in range(bands):
        block = sig[:, b * rows:(b + 1) * rows]
        bucket = (block * mixers[None, :]).sum(axis=1, dtype=np.uint64)  # wraps mod 2^64: a hash
        order = np.argsort(bucket, kind="stable")  # stable: members stay in record order
        sorted_b = bucket[order]
        starts = np.flatnonzero(np.r_[True, sorted_b[1:] != sorted_b[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for s, e in zip(starts[ends - starts > 1], ends[ends - starts > 1]):
            members = alive[order[s:e]]
            for pos in range(1, len(members)):
                candidates[int(members[pos])].update(int(m) for m in members[max(0, pos - _MAX_CANDIDATES):pos])
    compared = 0
    for j in sorted(candidates):
        if j < references:
            continue
        for i in sorted(candidates[j]):
            if reasons[i] is not None:
                continue
            compared += 1
            if similarity(signatures[i], signatures[j]) >= threshold:
                reasons[j] = NEAR_DUPLICATE_OF_REFERENCE if i < references else NEAR_DUPLICATE
                break
    return DedupResult(reasons, compared)
