"""Item 8: planted copies of HumanEval problems among real standard-library
code are found at the expected τ by the expected signal; real code is not."""

from __future__ import annotations

import dataclasses
import functools

import pytest

import decontam_fixtures as fx
from phi1.decontam.ast_match import AstOptions
from phi1.decontam.embedding import build_normalized_embedder
from phi1.decontam.scan import ProblemIndex, Scanner, ScanOptions
from phi1.decontam.snippets import document_record, exercise_record

OPTIONS = ScanOptions(evidence_per_problem=2)


@functools.lru_cache(maxsize=1)
def embedder():
    return build_normalized_embedder(fx.minilm_config(), threads=2)


@functools.lru_cache(maxsize=None)
def index(keep_names: bool = False) -> ProblemIndex:
    # The problems are embedded once; keep_names only changes the ASTs (no embedding needed).
    options = dataclasses.replace(OPTIONS, ast=AstOptions(keep_names=keep_names),
                                  signals=OPTIONS.signals if not keep_names else ("ngram", "ast"))
    return ProblemIndex.build(fx.humaneval().values(), options, embedder() if not keep_names else None)


@functools.lru_cache(maxsize=None)
def scan(kind: str, keep_names: bool = False):
    idx = index(keep_names)
    options = dataclasses.replace(OPTIONS, ast=AstOptions(keep_names=keep_names),
                                  signals=OPTIONS.signals if not keep_names else ("ngram", "ast"))
    scanner = Scanner(idx, options, embedder() if not keep_names else None)
    if kind == "exercises":
        recs = [exercise_record(r["id"], r["prompt"], r["solution"])
                for r in fx.real_exercises()[:40] + fx.planted_exercises()]
    else:
        recs = [document_record(d["id"], d["text"]) for d in fx.documents_with_plants()]
    rows = scanner.scan(recs)
    return {r["id"]: r for r in rows}, scanner


def test_real_stdlib_code_is_not_flagged_at_any_tau():
    options = ScanOptions(signals=("ngram", "ast"))
    real = fx.many_real_exercises()
    assert len(real) > 400
    scanner = Scanner(ProblemIndex.build(fx.humaneval().values(), options), options)
    rows = scanner.scan([exercise_record(r["id"], r["prompt"], r["solution"]) for r in real])
    assert [r["id"] for r in rows if r["similar_at"] is not None] == []
    assert [r["id"] for r in rows if r["ngram_hits"]] == []
    # the nearest problem in embedding space is far for real code, unlike any planted copy
    emb_rows, _ = scan("exercises")
    assert min(r["embedding_distance"] for i, r in emb_rows.items() if not i.startswith("planted:")) > 0.5


@pytest.mark.parametrize("task_id, variant", fx.PLANTS)
def test_planted_exercise_is_found_at_the_strictest_tau(task_id, variant):
    rows, _ = scan("exercises")
    r = rows[f"planted:{variant}:{task_id}"]
    # AST: identifiers abstracted, docstrings and layout ignored -> every variant is a full match
    assert r["ast_nearest"] == task_id and r["ast_match_rate"] == 1.0
    assert r["similar_at"] == 0.95
    if variant in ("exact", "reformatted"):
        # the same words: 13-grams shared, and the nearest embedding is the problem, almost at distance 0
        assert task_id in r["ngram_hits"] and r["ngram_shared"] > 20
        assert r["embedding_nearest"] == task_id and r["embedding_distance"] < 0.1
    if variant == "renamed":
        assert task_id in r["ngram_hits"]  # the docstring's words are still there


def test_keep_names_makes_renaming_cost():
    rows, _ = scan("exercises", keep_names=True)
    assert rows["planted:exact:HumanEval/0"]["ast_match_rate"] == 1.0
    renamed = rows["planted:renamed:HumanEval/26"]
    assert renamed["ast_match_rate"] is None or renamed["ast_match_rate"] < 0.95


def test_copies_planted_inside_documents_are_found_in_their_function():
    rows, scanner = scan("documents")
    hit = {i: r for i, r in rows.items() if r["similar_at"] is not None}
    assert sorted(hit) == ["heapq.py+reformatted:HumanEval/12", "shlex.py+renamed:HumanEval/26"]
    r = hit["shlex.py+renamed:HumanEval/26"]
    assert r["ast_nearest"] == "HumanEval/26" and r["ast_match_rate"] == 1.0 and r["snippets"] > 5
    assert r["ast_snippet"].startswith("q")  # the renamed function, found among shlex's own
    assert "HumanEval/12" in hit["heapq.py+reformatted:HumanEval/12"]["ngram_hits"]
    # per problem: the tally knows which record is each problem's best match
    tids = scanner.problems.task_ids
    t = scanner.tally
    assert t.ast_best_id[tids.index("HumanEval/26")] == "shlex.py+renamed:HumanEval/26"
    assert sorted(tids[p] for p in (t.ast_best >= 0.95).nonzero()[0]) == ["HumanEval/12", "HumanEval/26"]


def test_tiny_problems_are_reported_not_matched():
    _, scanner = scan("exercises")
    sizes = scanner.problems.sizes()
    small = [t for t, s in zip(scanner.problems.task_ids, sizes) if s < OPTIONS.ast.min_nodes]
    assert "HumanEval/23" in small  # strlen: `return len(string)`
    assert all(scanner.tally.ast_best[scanner.problems.task_ids.index(t)] == 0 for t in small)
