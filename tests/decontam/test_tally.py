"""The per-problem tally: split scans (datatrove tasks) merge to the single-scan result."""

from __future__ import annotations

import json

import decontam_fixtures as fx
from phi1.decontam.scan import ProblemIndex, ProblemTally, Scanner, ScanOptions, problem_rows
from phi1.decontam.snippets import exercise_record

OPTIONS = ScanOptions(signals=("ngram", "ast"), evidence_per_problem=2)


def test_two_tasks_merged_equal_one_scan():
    index = ProblemIndex.build(fx.humaneval().values(), OPTIONS)
    recs = [exercise_record(r["id"], r["prompt"], r["solution"]) for r in fx.real_exercises() + fx.planted_exercises()]
    whole = Scanner(index, OPTIONS)
    rows = whole.scan(recs)
    parts = []
    for half in (recs[0::2], recs[1::2]):
        s = Scanner(index, OPTIONS)
        s.scan(half[: len(half) // 2])
        s.scan(half[len(half) // 2:])  # several batches per task too
        parts.append(ProblemTally.from_json(json.loads(json.dumps(s.tally.to_json()))))  # through the task file
    merged = parts[0].merge(parts[1], OPTIONS.evidence_per_problem)
    assert problem_rows(merged, index, OPTIONS) == problem_rows(whole.tally, index, OPTIONS)
    assert merged.flagged == whole.tally.flagged and merged.records == len(recs) == len(rows)
    assert merged.ast_pairs == whole.tally.ast_pairs
    key = lambda t: sorted((p.problem, p.record_id, p.signal) for ps in t.evidence.values() for p in ps)  # noqa: E731
    assert key(merged) == key(whole.tally)


def test_evidence_keeps_the_best_k_distinct_pairs_per_problem_and_signal():
    from phi1.decontam.scan import Pair, ProblemTally

    t = ProblemTally(2, (0.8,))
    for rid, score in [("a", 0.81), ("b", 0.99), ("a", 0.81), ("c", 0.9), ("b", 0.99), ("d", 0.85)]:
        t.add_pair(Pair(0, rid, "x", "", "", "ast", score), k=2)
    t.add_pair(Pair(0, "e", "x", "", "", "embedding", 0.1), k=2)
    t.add_pair(Pair(0, "f", "x", "", "", "embedding", 0.05), k=2)
    t.add_pair(Pair(0, "g", "x", "", "", "embedding", 0.3), k=2)  # farther: not kept
    kept = sorted((p.signal, p.record_id) for p in t.evidence[0])
    assert kept == [("ast", "b"), ("ast", "c"), ("embedding", "e"), ("embedding", "f")]
    other = ProblemTally(2, (0.8,))
    other.add_pair(Pair(0, "z", "x", "", "", "ast", 1.0), k=2)
    merged = t.merge(other, k=2)
    assert sorted(p.record_id for p in merged.evidence[0] if p.signal == "ast") == ["b", "z"]


def test_prose_sharing_a_docstring_is_an_ngram_hit_with_evidence():
    """A textbook page with no code that quotes a problem's docstring."""
    from phi1.decontam.snippets import document_record

    doc = fx.humaneval()["HumanEval/0"].prompt.split('"""')[1]
    rec = document_record("page", "Chapter 3. A classic exercise reads: " + doc + " Try it yourself!")
    assert rec.snippets == []
    s = Scanner(ProblemIndex.build(fx.humaneval().values(), OPTIONS), OPTIONS)
    row = s.scan([rec])[0]
    assert row["ngram_hits"] == ["HumanEval/0"] and row["ast_match_rate"] is None and row["similar_at"] is None
    pair = s.tally.evidence[0][0]
    assert pair.signal == "ngram" and pair.label == "text" and "classic exercise" in pair.snippet
