"""n-gram overlap: which benchmark problems a training text shares an n-gram with.

Normalization (like lm-evaluation-harness's 13-gram "janitor", adapted to
code): lower-case the text and split it into words = runs of letters, digits
and underscores (``[a-z0-9_]+``); punctuation, operators, whitespace and
indentation are dropped, so formatting, quoting and comment markers do not
matter but identifiers, keywords, numbers and docstring words do. An n-gram
is n consecutive words (n = 13 by default, as in the paper).

The index holds every n-gram of every problem's prompt, canonical solution
and tests. Scanning a text never builds its n-grams as strings: each word is
looked up in the benchmark's vocabulary (a word the benchmark never uses
cannot be part of a shared n-gram), the windows made only of benchmark words
get a 64-bit polynomial hash (numpy, vectorised), hashes are looked up in the
sorted index hashes, and every hit is confirmed word by word, so a hash
collision never reports a false hit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

WORD = re.compile(r"[a-z0-9_]+")
_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def words(text: str) -> list[str]:
    """The normalized words of a text."""
    return WORD.findall(text.lower())


def _multipliers(n: int) -> np.ndarray:
    rng = np.random.default_rng(0x5EED_13)  # fixed: every process hashes alike
    return (rng.integers(1, 2**63 - 1, size=n, dtype=np.int64).astype(np.uint64) * np.uint64(2)) + np.uint64(1)


@dataclass
class NgramIndex:
    """n-grams of a set of problems, for scanning training texts."""

    n: int
    vocab: dict[str, int]  # benchmark word -> id (>= 1)
    hashes: np.ndarray  # sorted uint64 hashes of every problem n-gram
    grams: list[tuple[tuple[int, ...], tuple[int, ...]]]  # per hash position: (word ids, problem indices)
    n_problems: int
    problem_ngrams: list[int]  # distinct n-grams per problem

    @classmethod
    def build(cls, texts: Sequence[str], n: int = 13) -> "NgramIndex":
        """Index the n-grams of each problem's text (one text per problem)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        vocab: dict[str, int] = {}
        owners: dict[tuple[int, ...], set[int]] = {}
        per_problem = []
        for p, text in enumerate(texts):
            ids = [vocab.setdefault(w, len(vocab) + 1) for w in words(text)]
            grams = {tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)}
            per_problem.append(len(grams))
            for g in grams:
                owners.setdefault(g, set()).add(p)
        mult = _multipliers(n)
        keys = list(owners)
        if keys:
            arr = np.array(keys, dtype=np.uint64)
            h = _hash_rows(arr, mult)
            order = np.argsort(h, kind="stable")
            hashes = h[order]
            grams = [(keys[i], tuple(sorted(owners[keys[i]]))) for i in order]
        else:
            hashes = np.zeros(0, dtype=np.uint64)
            grams = []
        return cls(n, vocab, hashes, grams, len(texts), per_problem)

    def __post_init__(self) -> None:
        self._mult = _multipliers(self.n)

    def hits(self, text: str) -> tuple[list[int], int]:
        """(problem indices sharing an n-gram with ``text``, sorted; number of
        distinct shared n-grams)."""
        if not self.grams:
            return [], 0
        get = self.vocab.get
        ids = np.fromiter((get(w, 0) for w in words(text)), dtype=np.int64)
        n = self.n
        if len(ids) < n:
            return [], 0
        known = ids > 0
        # windows made only of benchmark words: a run of >= n known words
        run = np.convolve(known.astype(np.int32), np.ones(n, dtype=np.int32), mode="valid")
        starts = np.nonzero(run == n)[0]
        if not len(starts):
            return [], 0
        windows = np.lib.stride_tricks.sliding_window_view(ids.astype(np.uint64), n)[starts]
        h = _hash_rows(windows, self._mult)
        pos = np.searchsorted(self.hashes, h)
        pos[pos >= len(self.hashes)] = 0
        found = np.nonzero(self.hashes[pos] == h)[0]
        problems: set[int] = set()
        shared: set[int] = set()
        for k in found:
            j = int(pos[k])
            gram = tuple(int(x) for x in windows[k])
            # equal hashes are adjacent: check each stored n-gram with this hash
            while j < len(self.hashes) and self.hashes[j] == h[k]:
                if self.grams[j][0] == gram:
                    problems.update(self.grams[j][1])
                    shared.add(j)
                j += 1
        return sorted(problems), len(shared)

    def scan(self, texts: Iterable[str]) -> list[list[int]]:
        return [self.hits(t)[0] for t in texts]


def _hash_rows(rows: np.ndarray, mult: np.ndarray) -> np.ndarray:
    """A 64-bit hash per row of word ids (wrapping multiply-add, then a final mix)."""
    with np.errstate(over="ignore"):
        h = (rows.astype(np.uint64) * mult[None, :]).sum(axis=1, dtype=np.uint64)
        h ^= h >> np.uint64(29)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(32)
    return h
