"""Check training records against benchmark problems with the three signals.

`ProblemIndex` prepares the problems once (n-gram index, linearized ASTs,
unit vectors); `Scanner` takes batches of `TrainingRecord`s and returns one
similarity row per record, while it folds what each problem has seen into
a `ProblemTally` (best AST rate, n-gram hits, nearest embedding, counts per
threshold, and the best pairs for the evidence file). Tallies of separate
scans (datatrove tasks) merge with `ProblemTally.merge`.

A similarity row::

    {"id", "where", "snippets",
     "ngram_hits": [task ids], "ngram_shared": distinct shared n-grams,
     "ast_nearest": task id | null, "ast_match_rate": 0-1 | null, "ast_nodes": int | null,
     "ast_snippet": where in the record the best snippet is,
     "embedding_nearest": task id | null, "embedding_distance": float | null,
     "similar_at": the largest threshold at which the record is flagged | null}

``ast_match_rate`` is null when no problem reaches ``ast_min_rate`` (the
smallest τ by default: rates below it are never computed), when the record
has no snippet of ``min_nodes`` nodes, or when none parses. A record is
*flagged at τ* when its AST match rate is >= τ, or it shares an n-gram with
a problem and ``ngram_flags`` is on, or its embedding distance is <=
``embedding_max_distance`` (> 0); so ``similar_at >= τ`` is "flagged at τ".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from phi1.decontam.ast_match import AstIndex, AstOptions, linearize
from phi1.decontam.embedding import EmbeddingIndex, embed_texts
from phi1.decontam.ngram import NgramIndex
from phi1.decontam.snippets import Snippet, TrainingRecord

SIGNALS = ("ngram", "ast", "embedding")
PAPER_TAUS = (0.95, 0.9, 0.85, 0.8)
_EPS = 1e-9


@dataclass(frozen=True)
class ScanOptions:
    taus: tuple[float, ...] = PAPER_TAUS
    prune_tau: float = 0.95
    signals: tuple[str, ...] = SIGNALS
    ngram_n: int = 13
    ngram_flags: bool = False
    ast: AstOptions = AstOptions()
    ast_min_rate: float = 0.0  # 0 = the smallest threshold
    embedding_max_distance: float = 0.0  # 0 = record the distance, never flag by it
    evidence_per_problem: int = 3
    ann_min_problems: int = 50_000
    workers: int = 1  # rapidfuzz threads

    def __post_init__(self) -> None:
        unknown = [s for s in self.signals if s not in SIGNALS]
        if unknown:
            raise ValueError(f"unknown signal(s) {unknown}; signals: {', '.join(SIGNALS)}")
        for t in (*self.taus, self.prune_tau):
            if not 0 < t <= 1:
                raise ValueError(f"thresholds must be in (0, 1], got {t}")

    @property
    def thresholds(self) -> tuple[float, ...]:
        """Every τ reported, plus the pruning τ, ascending."""
        return tuple(sorted({round(float(t), 6) for t in (*self.taus, self.prune_tau)}))

    @property
    def cutoff(self) -> float:
        return self.ast_min_rate if self.ast_min_rate > 0 else min(self.thresholds)

    def uses(self, signal: str) -> bool:
        return signal in self.signals


# --------------------------------------------------------------------------- problems


@dataclass
class ProblemIndex:
    """The benchmark problems as every signal needs them."""

    task_ids: list[str]
    programs: list[str]  # prompt + canonical solution (AST, embedding, evidence)
    texts: list[str]  # prompt + canonical solution + tests (n-grams)
    linearized: list[str | None]
    ngrams: NgramIndex | None
    vectors: np.ndarray | None = None

    @classmethod
    def build(cls, problems: Iterable[Any], options: ScanOptions, embedder: Any = None,
              vectors: np.ndarray | None = None) -> "ProblemIndex":
        """``vectors``: the problems' embeddings computed before (a scan task gets
        them from the stage instead of embedding the problems again)."""
        probs = list(problems)
        programs = [p.prompt + p.canonical_solution for p in probs]
        texts = [p.prompt + p.canonical_solution + "\n" + p.test for p in probs]
        lin = [linearize(t, options.ast) for t in programs] if options.uses("ast") else [None] * len(probs)
        ngrams = NgramIndex.build(texts, options.ngram_n) if options.uses("ngram") else None
        if vectors is not None and len(vectors) != len(probs):
            raise ValueError(f"{len(vectors)} problem vectors for {len(probs)} problems")
        if vectors is None and options.uses("embedding") and embedder is not None:
            vectors = embed_texts(embedder, programs)
        return cls([p.task_id for p in probs], programs, texts, lin, ngrams, vectors)

    def __len__(self) -> int:
        return len(self.task_ids)

    def sizes(self) -> list[int | None]:
        return [len(s) if s is not None else None for s in self.linearized]


# --------------------------------------------------------------------------- tally


@dataclass
class Pair:
    """A candidate evidence pair: a record's snippet and the problem it resembles."""

    problem: int
    record_id: str
    snippet: str
    label: str
    where: str
    signal: str  # what put it here: "ast" | "ngram" | "embedding"
    score: float  # that signal's score (rate, shared n-grams, distance)

    def key(self) -> float:
        return -self.score if self.signal == "embedding" else self.score

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ProblemTally:
    """What a scan saw per problem; merges across tasks."""

    n_problems: int
    thresholds: tuple[float, ...]
    ast_best: np.ndarray = field(default=None)  # type: ignore[assignment]
    ast_best_id: list[str | None] = field(default=None)  # type: ignore[assignment]
    ast_counts: np.ndarray = field(default=None)  # type: ignore[assignment]  # (problems, thresholds) snippets
    ngram_records: np.ndarray = field(default=None)  # type: ignore[assignment]
    ngram_example: list[str | None] = field(default=None)  # type: ignore[assignment]
    emb_best: np.ndarray = field(default=None)  # type: ignore[assignment]
    emb_best_id: list[str | None] = field(default=None)  # type: ignore[assignment]
    emb_within: np.ndarray = field(default=None)  # type: ignore[assignment]
    records: int = 0
    snippets: int = 0
    ast_pairs: int = 0
    ast_compared: int = 0
    ast_seconds: float = 0.0  # linearizing + matching (summed over tasks)
    flagged: dict[str, int] = field(default_factory=dict)  # str(threshold) -> records flagged
    evidence: dict[int, list[Pair]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        p, t = self.n_problems, len(self.thresholds)
        if self.ast_best is None:
            self.ast_best = np.zeros(p)
            self.ast_best_id = [None] * p
            self.ast_counts = np.zeros((p, t), dtype=np.int64)
            self.ngram_records = np.zeros(p, dtype=np.int64)
            self.ngram_example = [None] * p
            self.emb_best = np.full(p, np.inf)
            self.emb_best_id = [None] * p
            self.emb_within = np.zeros(p, dtype=np.int64)
        for th in self.thresholds:
            self.flagged.setdefault(_tkey(th), 0)

    def add_pair(self, pair: Pair, k: int) -> None:
        if k <= 0:
            return
        heap = self.evidence.setdefault(pair.problem, [])
        for i, q in enumerate(heap):  # the same pair again (a problem's best is often a record's nearest)
            if (q.record_id, q.label, q.signal) == (pair.record_id, pair.label, pair.signal):
                if pair.key() > q.key():
                    heap[i] = pair
                return
        same = [i for i, q in enumerate(heap) if q.signal == pair.signal]
        if len(same) < k:
            heap.append(pair)
            return
        worst = min(same, key=lambda i: heap[i].key())
        if pair.key() > heap[worst].key():
            heap[worst] = pair

    def merge(self, other: "ProblemTally", k: int) -> "ProblemTally":
        if other.n_problems != self.n_problems or other.thresholds != self.thresholds:
            raise ValueError("cannot merge tallies of different problem sets or thresholds")
        better = other.ast_best > self.ast_best
        self.ast_best = np.where(better, other.ast_best, self.ast_best)
        self.ast_best_id = [o if b else s for s, o, b in zip(self.ast_best_id, other.ast_best_id, better)]
        self.ast_counts = self.ast_counts + other.ast_counts
        self.ngram_example = [s if s is not None else o for s, o in zip(self.ngram_example, other.ngram_example)]
        self.ngram_records = self.ngram_records + other.ngram_records
        closer = other.emb_best < self.emb_best
        self.emb_best = np.where(closer, other.emb_best, self.emb_best)
        self.emb_best_id = [o if c else s for s, o, c in zip(self.emb_best_id, other.emb_best_id, closer)]
        self.emb_within = self.emb_within + other.emb_within
        self.records += other.records
        self.snippets += other.snippets
        self.ast_pairs += other.ast_pairs
        self.ast_compared += other.ast_compared
        self.ast_seconds += other.ast_seconds
        for key, v in other.flagged.items():
            self.flagged[key] = self.flagged.get(key, 0) + v
        for pairs in other.evidence.values():
            for pair in pairs:
                self.add_pair(pair, k)
        return self

    def similar(self, tau: float, options: ScanOptions) -> np.ndarray:
        """Per problem: has at least one training record flagged as similar at ``tau``."""
        out = self.ast_best >= tau - _EPS
        if options.ngram_flags:
            out |= self.ngram_records > 0
        if options.embedding_max_distance > 0:
            out |= self.emb_best <= options.embedding_max_distance + _EPS
        return out

    def to_json(self) -> dict[str, Any]:
        def fin(x: np.ndarray) -> list[float | None]:
            return [float(v) if np.isfinite(v) else None for v in x]

        return {
            "n_problems": self.n_problems, "thresholds": list(self.thresholds),
            "ast_best": fin(self.ast_best), "ast_best_id": self.ast_best_id,
            "ast_counts": self.ast_counts.tolist(), "ngram_records": self.ngram_records.tolist(),
            "ngram_example": self.ngram_example, "emb_best": fin(self.emb_best), "emb_best_id": self.emb_best_id,
            "emb_within": self.emb_within.tolist(), "records": self.records, "snippets": self.snippets,
            "ast_pairs": self.ast_pairs, "ast_compared": self.ast_compared, "ast_seconds": self.ast_seconds,
            "flagged": self.flagged,
            "evidence": [p.to_json() for pairs in self.evidence.values() for p in pairs],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ProblemTally":
        def arr(x: list, fill: float) -> np.ndarray:
            return np.array([fill if v is None else v for v in x], dtype=np.float64)

        t = cls(int(d["n_problems"]), tuple(float(x) for x in d["thresholds"]),
                ast_best=arr(d["ast_best"], 0.0), ast_best_id=list(d["ast_best_id"]),
                ast_counts=np.array(d["ast_counts"], dtype=np.int64).reshape(int(d["n_problems"]), -1),
                ngram_records=np.array(d["ngram_records"], dtype=np.int64), ngram_example=list(d["ngram_example"]),
                emb_best=arr(d["emb_best"], np.inf), emb_best_id=list(d["emb_best_id"]),
                emb_within=np.array(d["emb_within"], dtype=np.int64), records=int(d["records"]),
                snippets=int(d["snippets"]), ast_pairs=int(d["ast_pairs"]), ast_compared=int(d["ast_compared"]),
                ast_seconds=float(d.get("ast_seconds", 0.0)),
                flagged={str(k): int(v) for k, v in d["flagged"].items()})
        for p in d.get("evidence", []):
            t.evidence.setdefault(int(p["problem"]), []).append(Pair(**p))
        return t


def _tkey(t: float) -> str:
    return f"{t:g}"


# --------------------------------------------------------------------------- scanning


class Scanner:
    """One pass over training records; rows out, per-problem tally kept."""

    def __init__(self, problems: ProblemIndex, options: ScanOptions, embedder: Any = None):
        self.problems = problems
        self.options = options
        self.embedder = embedder
        self.thresholds = options.thresholds
        self.tally = ProblemTally(len(problems), self.thresholds)
        self.ast = None
        if options.uses("ast"):
            self.ast = AstIndex(problems.linearized, options.cutoff, self.thresholds,
                                min_nodes=options.ast.min_nodes, workers=options.workers)
        self.emb = None
        if options.uses("embedding"):
            if embedder is None or problems.vectors is None:
                raise ValueError("the embedding signal needs an embedder and the problems' vectors")
            self.emb = EmbeddingIndex(problems.vectors, options.ann_min_problems)

    def scan(self, records: Sequence[TrainingRecord]) -> list[dict[str, Any]]:
        opt, tally, tids = self.options, self.tally, self.problems.task_ids
        n = len(records)
        owner = [i for i, r in enumerate(records) for _ in r.snippets]
        snippets = [s for r in records for s in r.snippets]
        tally.records += n
        tally.snippets += len(snippets)
        k = opt.evidence_per_problem

        # n-grams: whole texts
        ngram_hits: list[list[int]] = [[] for _ in range(n)]
        ngram_shared = [0] * n
        if self.problems.ngrams is not None:
            for i, r in enumerate(records):
                hits, shared = self.problems.ngrams.hits(r.text)
                ngram_hits[i], ngram_shared[i] = hits, shared
                for p in hits:
                    tally.ngram_records[p] += 1
                    if tally.ngram_example[p] is None:
                        tally.ngram_example[p] = r.id
                    s = _best_snippet_for(r, self.problems.ngrams, p)
                    tally.add_pair(Pair(p, r.id, s.text, s.label, r.where, "ngram", float(shared)), k)

        # AST: snippets, folded to records (max rate)
        ast_rate = [None] * n
        ast_near: list[int | None] = [None] * n
        ast_nodes: list[int | None] = [None] * n
        ast_label = [""] * n
        if self.ast is not None:
            t0 = time.perf_counter()
            lin = [linearize(s.text, opt.ast) for s in snippets]
            m = self.ast.match(lin)
            tally.ast_seconds += time.perf_counter() - t0
            tally.ast_pairs += m.pairs
            tally.ast_compared += m.compared
            for j, (i, s) in enumerate(zip(owner, lin)):
                size = len(s) if s is not None else None
                if size is not None and (ast_nodes[i] is None or (ast_rate[i] is None and size > ast_nodes[i])):
                    ast_nodes[i] = size  # no match yet: report the largest snippet
                if m.nearest[j] >= 0 and (ast_rate[i] is None or m.rate[j] > ast_rate[i]):
                    ast_rate[i], ast_near[i] = float(m.rate[j]), int(m.nearest[j])
                    ast_nodes[i], ast_label[i] = size, snippets[j].label
            better = m.problem_best > tally.ast_best
            for p in np.nonzero(better)[0]:
                tally.ast_best[p] = m.problem_best[p]
                tally.ast_best_id[p] = records[owner[m.problem_best_record[p]]].id
            tally.ast_counts += m.problem_counts
            for j in np.nonzero(m.nearest >= 0)[0]:
                i, p = owner[j], int(m.nearest[j])
                r = records[i]
                tally.add_pair(Pair(p, r.id, snippets[j].text, snippets[j].label, r.where, "ast", float(m.rate[j])), k)
            for p in np.nonzero(m.problem_best_record >= 0)[0]:  # a problem's best, even if nearer to another
                j = int(m.problem_best_record[p])
                r = records[owner[j]]
                tally.add_pair(Pair(int(p), r.id, snippets[j].text, snippets[j].label, r.where, "ast",
                                    float(m.problem_best[p])), k)

        # embeddings: snippets, folded to records (min distance)
        emb_dist: list[float | None] = [None] * n
        emb_near: list[int | None] = [None] * n
        if self.emb is not None and snippets:
            vecs = embed_texts(self.embedder, [s.text for s in snippets])
            m2 = self.emb.match(vecs, opt.embedding_max_distance)
            for j, i in enumerate(owner):
                d = float(m2.distance[j])
                if emb_dist[i] is None or d < emb_dist[i]:
                    emb_dist[i], emb_near[i] = d, int(m2.nearest[j])
            closer = m2.problem_best < tally.emb_best
            for p in np.nonzero(closer)[0]:
                tally.emb_best[p] = m2.problem_best[p]
                tally.emb_best_id[p] = records[owner[m2.problem_best_record[p]]].id
            tally.emb_within += m2.problem_counts
            if opt.embedding_max_distance > 0:
                for j in np.nonzero(m2.distance <= opt.embedding_max_distance + _EPS)[0]:
                    r = records[owner[j]]
                    tally.add_pair(Pair(int(m2.nearest[j]), r.id, snippets[j].text, snippets[j].label, r.where,
                                        "embedding", float(m2.distance[j])), k)

        rows = []
        for i, r in enumerate(records):
            top = self._similar_at(ast_rate[i], bool(ngram_hits[i]), emb_dist[i])
            if top is not None:
                for th in self.thresholds:
                    if th <= top + _EPS:
                        tally.flagged[_tkey(th)] += 1
            rows.append({
                "id": r.id, "where": r.where, "snippets": len(r.snippets),
                "ngram_hits": [tids[p] for p in ngram_hits[i]], "ngram_shared": ngram_shared[i],
                "ast_nearest": tids[ast_near[i]] if ast_near[i] is not None else None,
                "ast_match_rate": round(ast_rate[i], 6) if ast_rate[i] is not None else None,
                "ast_nodes": ast_nodes[i], "ast_snippet": ast_label[i],
                "embedding_nearest": tids[emb_near[i]] if emb_near[i] is not None else None,
                "embedding_distance": round(emb_dist[i], 6) if emb_dist[i] is not None else None,
                "similar_at": top,
            })
        return rows

    def _similar_at(self, rate: float | None, ngram_hit: bool, dist: float | None) -> float | None:
        """The largest threshold at which the record is flagged (None = at none)."""
        opt = self.options
        if (opt.ngram_flags and ngram_hit) or (
                opt.embedding_max_distance > 0 and dist is not None and dist <= opt.embedding_max_distance + _EPS):
            return self.thresholds[-1]
        if rate is None:
            return None
        passed = [t for t in self.thresholds if rate >= t - _EPS]
        return passed[-1] if passed else None


def _best_snippet_for(record: TrainingRecord, ngrams: NgramIndex, problem: int) -> Any:
    """The snippet that shares most with the problem (a document's n-gram hit may
    sit in one of its functions); the first snippet when none alone does, the
    text itself (cut at 4,000 characters) when the record has no code."""
    if not record.snippets:
        return Snippet(record.text[:4000], "text")
    if len(record.snippets) == 1:
        return record.snippets[0]
    best, best_n = record.snippets[0], -1
    for s in record.snippets:
        hits, shared = ngrams.hits(s.text)
        if problem in hits and shared > best_n:
            best, best_n = s, shared
    return best


def flagged_at(row: dict[str, Any], tau: float) -> bool:
    """Whether a similarity row is flagged at ``tau``."""
    top = row.get("similar_at")
    return top is not None and top >= tau - _EPS


# --------------------------------------------------------------------------- summaries


def options_from_config(cfg: Any, workers: int = 1) -> ScanOptions:
    """`ScanOptions` of a `DecontamConfig` section."""
    return ScanOptions(
        taus=tuple(float(t) for t in cfg.taus), prune_tau=float(cfg.prune_tau), signals=tuple(cfg.signals),
        ngram_n=cfg.ngram_n, ngram_flags=cfg.ngram_flags,
        ast=AstOptions(keep_names=cfg.ast_keep_names, keep_literals=cfg.ast_keep_literals,
                       min_nodes=cfg.ast_min_nodes),
        ast_min_rate=cfg.ast_min_rate, embedding_max_distance=cfg.embedding_max_distance,
        evidence_per_problem=cfg.evidence_per_problem, ann_min_problems=cfg.ann_min_problems, workers=workers)


def problem_rows(tally: ProblemTally, problems: ProblemIndex, options: ScanOptions) -> list[dict[str, Any]]:
    """One row per problem: its best match per signal, counts, and ``similar_at``
    (the largest threshold at which some record is flagged as similar to it)."""
    sizes = problems.sizes()
    ths = tally.thresholds
    sim = np.stack([tally.similar(t, options) for t in ths], axis=1) if ths else np.zeros((len(problems), 0))
    rows = []
    for p, tid in enumerate(problems.task_ids):
        hit = [t for t, s in zip(ths, sim[p]) if s]
        rows.append({
            "task_id": tid, "ast_nodes": sizes[p],
            "ast_matchable": options.uses("ast") and sizes[p] is not None and sizes[p] >= options.ast.min_nodes,
            "ast_best": round(float(tally.ast_best[p]), 6) if tally.ast_best_id[p] is not None else None,
            "ast_best_record": tally.ast_best_id[p],
            "ast_matches": {_tkey(t): int(c) for t, c in zip(ths, tally.ast_counts[p])},
            "ngram_records": int(tally.ngram_records[p]), "ngram_example": tally.ngram_example[p],
            "embedding_best": round(float(tally.emb_best[p]), 6) if np.isfinite(tally.emb_best[p]) else None,
            "embedding_best_record": tally.emb_best_id[p], "embedding_within": int(tally.emb_within[p]),
            "similar_at": max(hit) if hit else None,
        })
    return rows


def summary_lines(tally: ProblemTally, problems: ProblemIndex, options: ScanOptions) -> list[str]:
    """The per-τ summary printed by `phi1 contamination` and the stage."""
    n, p = tally.records, len(problems)
    lines = [f"{n:,} records ({tally.snippets:,} snippets) checked against {p} problems"]
    lines.append(f"  {'tau':<6}{'records flagged':>26}   problems with a similar record")
    for t in sorted(tally.thresholds, reverse=True):
        f = tally.flagged.get(_tkey(t), 0)
        share = f"{f / n:.2%}" if n else "-"
        mark = "  <- prune_tau" if abs(t - options.prune_tau) < _EPS else ""
        lines.append(f"  {t:<6g}{f'{f:,} of {n:,} ({share})':>26}   {int(tally.similar(t, options).sum())} of {p}{mark}")
    if options.uses("ngram"):
        hit = int((tally.ngram_records > 0).sum())
        flag = "flags records" if options.ngram_flags else "reported, not flagging"
        lines.append(f"n-gram ({options.ngram_n}): {hit} problems share an n-gram with a record ({flag})")
    if options.uses("ast"):
        small = [problems.task_ids[i] for i, s in enumerate(problems.sizes()) if s is not None
                 and s < options.ast.min_nodes]
        rate = f" ({tally.ast_pairs / tally.ast_seconds:,.0f}/s)" if tally.ast_seconds > 0 else ""
        lines.append(f"AST: {tally.ast_pairs:,} snippet x problem pairs in {tally.ast_seconds:.1f}s{rate}, "
                     f"{tally.ast_compared:,} inside the length bands")
        if small:
            shown = ", ".join(small[:6]) + (f" and {len(small) - 6} more" if len(small) > 6 else "")
            lines.append(f"AST: {len(small)} problems have < {options.ast.min_nodes} nodes and are not AST-matched "
                         f"(ast_min_nodes): {shown}")
    if options.uses("embedding"):
        best = tally.emb_best[np.isfinite(tally.emb_best)]
        if len(best):
            lines.append(f"embedding: nearest record per problem at L2 distance min {best.min():.3f}, median "
                         f"{np.median(best):.3f}" + (f"; flagging at <= {options.embedding_max_distance:g}"
                                                     if options.embedding_max_distance > 0 else " (not flagging)"))
    return lines
