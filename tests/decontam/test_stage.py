"""The `decontam` stage in a real pipeline: scan (datatrove), per-τ counts,
pruned datasets read downstream, problems table, evidence, Table 3."""

from __future__ import annotations

import gzip
import json

import pytest

import decontam_fixtures as fx
import decontam_toy_stages as toy
from phi1.config import load_config
from phi1.registry import STAGES as BUILT_IN, get_stage
from phi1.decontam.table3 import table3_from_folders
from phi1.documents import read_jsonl
from phi1.manifest import read_manifest
from phi1.pipeline import Pipeline

DECONTAM = get_stage("decontam", BUILT_IN)
STAGES = (toy.MINE, toy.FILTER, DECONTAM, toy.CONSUME)
PLANTED = {r["id"] for r in fx.planted_exercises()}


def config(tmp_path, *overrides):
    path = tmp_path / "run.toml"
    problems = fx.problem_subset(tmp_path / "problems.jsonl")
    path.write_text(f"""
[run]
root = "{tmp_path / 'runs'}"
name = "dc"

[decontam]
inputs = ["mine", "filter"]
problems = "{problems}"
evidence = "markdown"

[decontam.executor]
tasks = 2
workers = 1

[embed]
max_tokens = 96
""")
    return load_config(path, list(overrides), stages=STAGES)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stage")
    cfg = config(tmp)
    outcomes = Pipeline(cfg, stages=STAGES).run()
    return cfg, outcomes


def test_pipeline_runs_decontam_between_producers_and_consumer(run):
    cfg, outcomes = run
    assert list(outcomes) == ["mine", "filter", "decontam", "consume"]
    # the consumer read decontam.mine: every real record, no planted copy
    ids = json.loads((cfg.run_dir / "consume" / "ids.json").read_text())
    assert sorted(ids) == sorted(r["id"] for r in fx.real_exercises())


def test_manifest_counts_per_tau_and_pruned_outputs(run):
    cfg, _ = run
    d = cfg.run_dir / "decontam"
    m = read_manifest(d)
    n_ex, n_docs = len(fx.real_exercises()) + len(PLANTED), len(fx.documents_with_plants())
    assert m["counts"]["records"] == n_ex + n_docs
    for tau in ("0.95", "0.9", "0.85", "0.8"):
        assert m["counts"][f"flagged@{tau}"] == len(PLANTED) + 2  # planted exercises + the two planted documents
    s = json.loads((d / "summary.json").read_text())
    assert s["inputs"]["mine"]["flagged"]["0.95"] == {"records": len(PLANTED),
                                                      "fraction": round(len(PLANTED) / n_ex, 6)}
    assert s["pruned"]["mine"]["dropped"] == len(PLANTED)
    assert s["pruned"]["filter"] == {"dropped_ids": 2, "kept": n_docs - 2, "dropped": 2}
    # pruned documents: a documents dataset without the planted modules
    kept = [r["id"] for p in sorted((d / "pruned" / "filter").glob("*.jsonl.gz")) for r in read_jsonl(p)]
    assert sorted(kept) == sorted(x["id"] for x in fx.documents_with_plants() if "+" not in x["id"])
    # pruned exercises keep the train/val files, every field of every kept record
    train = list(read_jsonl(d / "pruned" / "mine" / "train.jsonl.gz"))
    assert not PLANTED & {r["id"] for r in train}
    assert set(train[0]) == {"id", "prompt", "solution", "source", "metadata"}


def test_similarity_table_problems_and_evidence(run):
    cfg, _ = run
    d = cfg.run_dir / "decontam"
    rows = [json.loads(line) for p in sorted((d / "similarity" / "mine").glob("*.jsonl.gz"))
            for line in gzip.open(p, "rt")]
    assert len(rows) == len(fx.real_exercises()) + len(PLANTED)
    assert {r["id"] for r in rows if r["similar_at"] is not None} == PLANTED
    assert all(r["embedding_nearest"] for r in rows)  # the embedding signal ran inside the datatrove tasks
    probs = {r["task_id"]: r for r in read_jsonl(d / "problems.jsonl")}
    assert list(probs) == [p["task_id"] for p in read_jsonl(cfg.section("decontam").problems)]
    similar = sorted(t for t, r in probs.items() if r["similar_at"] is not None)
    assert similar == sorted({t for t, _ in fx.PLANTS})
    assert probs["HumanEval/23"]["ast_matchable"] is False
    ev = (d / "evidence.md").read_text()
    for t in similar:
        assert f"## {t}" in ev
    assert "AST match rate 1.000" in ev and "<pre>" in ev


def test_table3_from_the_decontam_folder_and_execute_results(run, tmp_path):
    cfg, _ = run
    d = cfg.run_dir / "decontam"
    similar = {t for t, _ in fx.PLANTS}
    checked = [r["task_id"] for r in read_jsonl(d / "problems.jsonl")]
    # a model that solves exactly the problems it saw copies of, and one other
    rows = [{"task_id": t, "n": 1, "correct": int(t in similar or t == "HumanEval/1")} for t in checked]
    results = tmp_path / "per_task.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    t3 = table3_from_folders(d, results)
    by_tau = {r.tau: r for r in t3.rows}
    assert list(by_tau) == [0.95, 0.9, 0.85, 0.8]
    rest = len(checked) - len(similar)
    for r in by_tau.values():
        assert (r.similar.problems, r.similar.pass_at_1) == (len(similar), 1.0)
        assert (r.non_similar.problems, r.non_similar.pass_at_1) == (rest, 1 / rest)


def test_second_run_is_current_even_with_other_execution_settings(run, tmp_path):
    cfg, _ = run
    assert set(Pipeline(cfg, stages=STAGES).run().values()) == {"current"}
    src = cfg.source
    other = load_config(src, ["decontam.batch_size=7", "decontam.executor.workers=2"], stages=STAGES)
    assert set(Pipeline(other, stages=STAGES).run().values()) == {"current"}


def test_a_broken_exercise_record_names_its_file_and_line():
    from types import SimpleNamespace

    from phi1.decontam.steps import exercise_adapter
    from phi1.errors import InputError

    reader = SimpleNamespace(data_folder=SimpleNamespace(path="/runs/x/mine"))
    with pytest.raises(InputError, match=r"^/runs/x/mine/train.jsonl.gz:2: not an exercise record"):
        exercise_adapter(reader, {"a": 1}, "train.jsonl.gz", 1)
