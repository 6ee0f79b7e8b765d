"""`phi1 ablation`, shrunk to 2 arms x 2 seeds of the nano model, end to end
through the CLI: shared stages once, linked everywhere, seeds differing only
in training, equal tokens, the summary, a re-run that does nothing, and a
killed ablation that resumes."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phi1.ablation.plan import arm_runs, arms, split_stages
from phi1.ablation.stats import spread
from phi1.config import load_config
from phi1.documents import read_documents
from phi1.pipeline import RunDirectory

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shrunk import shrunk_args  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PHI1 = str(Path(sys.executable).with_name("phi1"))
ENV = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


def _ablation(root, *extra, timeout=600):
    args = [PHI1, "ablation", "configs/ablation.toml", *shrunk_args(root), *extra]
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=ENV)


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    t0 = time.time()
    r = _ablation(root)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return root, r, time.time() - t0


def _config(root, *extra):
    return load_config(REPO / "configs" / "ablation.toml", [a for a in shrunk_args(root)[1::2]] + list(extra))


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def _logs(root: Path) -> dict[str, str]:
    """Each arm x seed run's log (the workers' output): run name -> text."""
    return {p.stem: p.read_text() for p in sorted((root / "abl" / "logs").glob("*.log"))}


def test_every_shared_stage_runs_once_and_is_linked_everywhere(ablation):
    root, r, _ = ablation
    out, logs = r.stdout, _logs(root)
    assert sorted(logs) == ["filtered-s0", "filtered-s1", "unfiltered-s0", "unfiltered-s1"]
    cfg = _config(root)
    split = split_stages(cfg)
    for stage in split.shared:
        assert out.count(f"[base] {stage}: running") == 1, stage
        assert out.count(f"] {stage}: running") == 1, stage  # in no other run
        assert not any(f"\n{stage}: running" in text for text in logs.values()), stage
    assert out.count("] tokenize: running") == 2  # one per arm
    for name, text in logs.items():
        for stage in ("pretrain", "finetune", "generate", "execute"):
            assert text.count(f"\n{stage}: running") == 1, (name, stage)  # once per arm and seed
        assert "tokenize: running" not in text
    rate = _manifest(root / "abl" / "base" / "filter")["metrics"]["keep_rate_tokens"]
    for arm in arms(cfg, rate):
        if arm.name == "filtered+synthetic":
            continue
        own, seeded = arm_runs(cfg, split, arm)
        for plan in seeded:
            rd = RunDirectory(plan.config)
            for stage, source in plan.links.items():
                path = plan.path / stage
                assert path.is_symlink() and os.readlink(path) == os.path.join("..", source, stage)
                assert rd.status(rd.spec(stage)).state == "done", (plan.name, stage)
            for stage in ("pretrain", "finetune", "generate", "execute"):
                assert not (plan.path / stage).is_symlink()
                assert rd.status(rd.spec(stage)).state == "done", (plan.name, stage)
            assert not list(plan.path.glob("*.partial"))


def test_the_synthetic_arm_is_skipped_with_one_line_saying_how_to_enable_it(ablation):
    root, r, _ = ablation
    lines = [x for x in r.stdout.splitlines() if x.startswith("ablation: arm filtered+synthetic skipped")]
    assert len(lines) == 1
    assert "'synth.textbooks' has no records" in lines[0] and "[synth.llm]" in lines[0]
    summary = json.loads((root / "abl" / "ablation.json").read_text())
    assert set(summary["skipped_arms"]) == {"filtered+synthetic"}
    assert not (root / "abl" / "filtered+synthetic").exists()


def test_seeds_differ_only_in_training(ablation):
    root, _, _ = ablation
    run = root / "abl"
    pre = {name: _manifest(run / name / "pretrain") for name in
           ("unfiltered-s0", "unfiltered-s1", "filtered-s0", "filtered-s1")}
    start = {n: m["metrics"]["humaneval_solution_loss_before_pretraining"] for n, m in pre.items()}
    # the initial weights are the training seed's: equal across arms, different across seeds
    assert start["unfiltered-s0"] == start["filtered-s0"] != start["unfiltered-s1"] == start["filtered-s1"]
    assert pre["unfiltered-s0"]["config_hash"] != pre["unfiltered-s1"]["config_hash"]
    # both seeds of an arm read the very same tokenize (one folder, one run_id)
    for arm in ("unfiltered", "filtered"):
        ids = {pre[f"{arm}-s{s}"]["inputs"]["tokenize"] for s in (0, 1)}
        assert ids == {_manifest(run / arm / "tokenize")["run_id"]}
        assert (run / f"{arm}-s0" / "tokenize").resolve() == (run / arm / "tokenize").resolve()
    # and every run the same exercises
    ft = {_manifest(run / n / "finetune")["inputs"]["mine"] for n in pre}
    assert ft == {_manifest(run / "base" / "mine")["run_id"]}


def test_arms_see_equal_tokens(ablation):
    root, _, _ = ablation
    run = root / "abl"
    tokens = {n: _manifest(run / n / "pretrain")["counts"]["tokens"] for n in
              ("unfiltered-s0", "unfiltered-s1", "filtered-s0", "filtered-s1")}
    assert len(set(tokens.values())) == 1  # the training budget is exactly the same
    filt = _manifest(run / "base" / "filter")
    rate = filt["metrics"]["keep_rate_tokens"]
    tok_a, tok_b = _manifest(run / "unfiltered" / "tokenize"), _manifest(run / "filtered" / "tokenize")
    assert tok_a["datasets"]["inputs"] == [{"ref": "ingest", "kind": "documents", "weight": rate,
                                            "run_id": _manifest(run / "base" / "ingest")["run_id"]}]
    assert [(d["ref"], d["weight"]) for d in tok_b["datasets"]["inputs"]] == [("filter", 1.0)]
    # The corpora: arm (a) samples each document with probability `rate` (the filter's bytes kept /
    # bytes in), so its expected size is arm (b)'s; the realised difference must lie within the
    # sampling noise, sqrt(rate (1 - rate) sum(size^2)), converted to tokens at the corpus's rate.
    sizes = [len(d.text.encode()) for d in read_documents(run / "base" / "ingest" / "docs")]
    total_a = tok_a["counts"]["train_tokens"] + tok_a["counts"]["val_tokens"]
    total_b = tok_b["counts"]["train_tokens"] + tok_b["counts"]["val_tokens"]
    bytes_per_token = filt["counts"]["bytes_kept"] / total_b
    sigma = math.sqrt(rate * (1 - rate) * sum(s * s for s in sizes)) / bytes_per_token
    rows = 2 * 64 * 2  # each split drops its last partial row of 64 tokens, in each arm
    assert abs(total_a - total_b) <= 4 * sigma + rows, (total_a, total_b, sigma)
    summary = json.loads((run / "ablation.json").read_text())
    assert {a["name"]: a["corpus_tokens"] for a in summary["arms"]} == {
        "unfiltered": tok_a["counts"]["train_tokens"], "filtered": tok_b["counts"]["train_tokens"]}


def test_summary_is_the_spread_of_the_runs_own_numbers(ablation):
    root, r, _ = ablation
    run = root / "abl"
    summary = json.loads((run / "ablation.json").read_text())
    assert [a["name"] for a in summary["arms"]] == ["unfiltered", "filtered"]
    assert summary["seeds"] == [0, 1]
    for arm in summary["arms"]:
        ft = [_manifest(run / f"{arm['name']}-s{s}" / "finetune")["metrics"] for s in (0, 1)]
        ex = [_manifest(run / f"{arm['name']}-s{s}" / "execute")["metrics"] for s in (0, 1)]
        for key, values in (("humaneval_solution_loss_after_finetuning",
                             [m["humaneval_solution_loss_after_finetuning"] for m in ft]),
                            ("humaneval_solution_loss_after_pretraining",
                             [m["humaneval_solution_loss_after_pretraining"] for m in ft]),
                            ("pass@1", [m["pass@1"] for m in ex])):
            got = arm["stats"][key]
            want = spread(values)
            assert got["values"] == values
            assert got["mean"] == pytest.approx(want.mean) and got["std"] == pytest.approx(want.std)
            assert (got["min"], got["max"]) == (min(values), max(values))
    kinds = {(c["metric"], c["a"], c["b"]) for c in summary["comparisons"]}
    assert ("HumanEval-solution loss after finetuning", "unfiltered", "filtered") in kinds
    # the printed table and its reading
    out = r.stdout
    assert "ablation summary: 2 arm(s) x 2 seed(s)" in out
    assert "arm x seed runs: 2 at a time, torch threads 1 per process" in out  # the config's defaults
    assert out.count("ablation 4/4: arm filtered, seed 1 done") == 1
    assert "reading (mean ± sample std (min–max) over seeds):" in out
    assert "seed spread" in out
    html = (run / "ablation.html").read_text()
    assert html.count('<img class="chart"') == 1 and html.count("<table") == 1
    assert "Figure 2.1" in html and "filtered+synthetic skipped" in html


def test_a_rerun_computes_nothing(ablation):
    root, _, _ = ablation
    before = json.loads((root / "abl" / "ablation.json").read_text())
    sizes = {name: len(text) for name, text in _logs(root).items()}
    r = _ablation(root)
    assert r.returncode == 0, r.stderr[-3000:]
    assert ": running" not in r.stdout
    assert r.stdout.count("already done") == 4
    for name, text in _logs(root).items():
        assert ": running" not in text[sizes[name]:], name
        assert "pretrain: up to date" in text[sizes[name]:], name
    after = json.loads((root / "abl" / "ablation.json").read_text())
    assert after["arms"] == before["arms"] and after["comparisons"] == before["comparisons"]


def test_a_killed_ablation_resumes(ablation):
    """A third seed of one arm, killed (the whole process group, SIGKILL) as soon as
    its pretraining starts, then the same command again: only that seed's run
    computes, its pretraining resumes the interrupted attempt, the summary has
    three seeds."""
    root, _, _ = ablation
    run = root / "abl"
    more = ["--set", "ablation.seeds=[0, 1, 2]", "--set", "ablation.arms=['filtered']"]
    args = [PHI1, "ablation", "configs/ablation.toml", *shrunk_args(root), *more]
    p = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV,
                         start_new_session=True)
    seen = []
    try:
        for line in p.stdout:  # type: ignore[union-attr]
            seen.append(line)
            if "ablation 3/3: arm filtered, seed 2 ->" in line:
                break
        deadline = time.time() + 300
        while not (run / "filtered-s2" / "pretrain.partial").is_dir() and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        os.killpg(p.pid, signal.SIGKILL)
    finally:
        p.wait(timeout=60)
    assert (run / "filtered-s2" / "pretrain.partial").is_dir(), "".join(seen)[-3000:]
    assert not (run / "filtered-s2" / "pretrain").exists()
    assert not any(": running" in x for x in seen)  # nothing shared was computed again
    logged = len(_logs(root)["filtered-s2"])
    r = _ablation(root, *more)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert ": running" not in r.stdout
    assert "ablation 1/3: arm filtered, seed 0 already done" in r.stdout
    resumed = _logs(root)["filtered-s2"][logged:]
    assert "pretrain: running (never finished) — resuming interrupted attempt" in resumed
    summary = json.loads((run / "ablation.json").read_text())
    assert summary["seeds"] == [0, 1, 2] and [a["name"] for a in summary["arms"]] == ["filtered"]
    assert len(summary["arms"][0]["stats"]["pass@1"]["values"]) == 3
    assert "ablation summary: 1 arm(s) x 3 seed(s)" in r.stdout
    assert not list(run.glob("*/*.partial"))
