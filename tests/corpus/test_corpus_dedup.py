"""Exact and near-duplicate removal across datatrove tasks (the ingest stage in-process)."""

from __future__ import annotations

import json

from corpus_helpers import snippet, write_config, write_jsonl

from phi1.config import load_config
from phi1.corpus.ingest import build_plan
from phi1.corpus.sources import resolve_sources
from phi1.documents import read_documents
from phi1.pipeline import Pipeline


def run_ingest(tmp_path, ingest_toml: str, name: str = "t", screen: list | None = None):
    cfg_path = write_config(tmp_path / f"{name}.toml", tmp_path / "runs", ingest_toml, name=name)
    config = load_config(str(cfg_path), [])
    Pipeline(config, echo=(screen.append if screen is not None else lambda _: None)).run(only=["ingest"])
    out = tmp_path / "runs" / name / "ingest"
    return out, json.loads((out / "manifest.json").read_text())


def near_copy(text: str) -> str:
    lines = text.split("\n")
    return "\n".join(lines[:5] + ["# an extra comment line"] + lines[5:])


def corpus(tmp_path):
    """Two files, one per task: rank 0 reads a.jsonl, rank 1 reads b.jsonl."""
    a, b, c, d = snippet(1), snippet(2), snippet(3), snippet(4)
    write_jsonl(tmp_path / "data" / "a.jsonl", [{"text": a}, {"text": b}, {"text": c}])
    write_jsonl(tmp_path / "data" / "b.jsonl", [{"text": a}, {"text": near_copy(b)}, {"text": d}, {"text": d}])
    return a, b, c, d


INGEST = """
[ingest]
min_bytes = 10
{extra}
[[ingest.sources]]
kind = "jsonl"
path = "{data}"
[ingest.executor]
tasks = 2
workers = 1
"""


def test_exact_and_near_duplicates_across_two_tasks(tmp_path, quiet_loguru):
    a, b, c, d = corpus(tmp_path)
    out, m = run_ingest(tmp_path, INGEST.format(extra="", data=tmp_path / "data"))
    docs = list(read_documents(out / "docs"))
    texts = [x.text for x in docs]
    assert m["counts"]["documents_in"] == 7
    assert m["counts"]["dropped_exact_duplicate"] == 2  # a (across tasks) and d (within a task)
    assert m["counts"]["dropped_near_duplicate"] == 1  # b vs near_copy(b), across tasks
    assert m["counts"]["kept"] == len(docs) == 4
    assert sorted(texts.count(t) for t in (a, c, d)) == [1, 1, 1]
    assert (b in texts) != (near_copy(b) in texts)  # exactly one of the pair survives
    kept_a = next(x for x in docs if x.text == a)
    assert kept_a.metadata["path"] == "a.jsonl:1"  # the first occurrence (rank 0) is kept
    assert kept_a.metadata["duplicate_count"] == 1
    assert len({x.id for x in docs}) == len(docs)
    assert not (out / "tmp").exists()  # intermediate shards and signatures are removed
    assert m["metrics"]["bytes_kept"] == sum(len(x.text.encode()) for x in docs)


def test_dedup_off_and_parquet_output(tmp_path, quiet_loguru):
    corpus(tmp_path)
    extra = 'exact_dedup = false\noutput_format = "parquet"\n[ingest.minhash]\nenabled = false\n'
    out, m = run_ingest(tmp_path, INGEST.format(extra=extra, data=tmp_path / "data"))
    assert m["counts"]["kept"] == 7
    assert "dropped_exact_duplicate" not in m["counts"]
    assert len(m["output"]["shards"]) == 2 and all(s.endswith(".parquet") for s in m["output"]["shards"])
    docs = list(read_documents(out / "docs"))
    assert [d.id for d in docs][:3] == ["data/a.jsonl:1", "data/a.jsonl:2", "data/a.jsonl:3"]
    assert docs[0].metadata["source"] == "data" and docs[0].metadata["path"] == "a.jsonl:1"


def test_broken_jsonl_lines_skipped_counted_and_reported(tmp_path, quiet_loguru):
    write_jsonl(tmp_path / "d.jsonl.gz", [{"text": snippet(0)}, "{oops", {"text": snippet(1)}, "nope", "[]"])
    screen: list[str] = []
    ingest = INGEST.format(extra="", data=tmp_path / "d.jsonl.gz")
    out, m = run_ingest(tmp_path, ingest, screen=screen)
    line = next(x for x in screen if "broken records" in x)
    assert "skipped 3 broken records" in line and "line 2, line 4, line 5" in line
    assert m["counts"]["broken_records"] == 3 and m["counts"]["kept"] == 2
    assert [p["at"] for p in m["problems"]["d.jsonl.gz"]["first"]] == ["line 2", "line 4", "line 5"]
    assert any(x.strip().startswith("documents in") for x in screen)  # the funnel table


def test_near_only_still_removes_exact_copies(tmp_path, quiet_loguru):
    """Without the exact step, MinHash alone drops identical copies too (as near duplicates)."""
    a, b, c, d = corpus(tmp_path)
    extra = "exact_dedup = false\n"
    out, m = run_ingest(tmp_path, INGEST.format(extra=extra, data=tmp_path / "data"))
    texts = [x.text for x in read_documents(out / "docs")]
    assert m["counts"]["dropped_near_duplicate"] == 3
    assert sorted(texts.count(t) for t in (a, c, d)) == [1, 1, 1]


def test_plan_shapes(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"text": snippet(0)}])
    cfg = load_config(str(write_config(tmp_path / "c.toml", tmp_path, INGEST.format(extra="", data=tmp_path))), [])
    sources = resolve_sources(cfg.ingest.sources, tmp_path / "paths")

    def labels():
        return [label for label, _ in build_plan(cfg.ingest, sources, tmp_path / "w", "job").steps]

    assert labels() == ["clean", "exact: find", "exact: filter", "near: buckets", "near: cluster", "near: filter"]
    plan = build_plan(cfg.ingest, sources, tmp_path / "w", "job")
    assert [e.world_size for _, e in plan.steps] == [2, 1, 2, 14, 1, 2]
    assert all(e.depends is plan.steps[i][1] for i, (_, e) in enumerate(plan.steps[1:]))
    cfg.ingest.minhash.enabled = False
    assert labels() == ["clean", "exact: find", "exact: filter"]
    cfg.ingest.exact_dedup = False
    assert labels() == ["clean"]
