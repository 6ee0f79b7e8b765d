"""The demo config, shrunk, end to end through `phi1 run`: every stage offline
on a slice of the standard library, then a re-run that does nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PHI1 = str(Path(sys.executable).with_name("phi1"))

SHRINK = [
    'ingest.sources=[{kind = "python_tree", path = "", limit = 220}]',
    "ingest.executor.tasks=2",
    "annotate.samples=150",
    "classifier.n_estimators=50",
    "filter.threshold=0.3",
    "tokenizer.vocab_size=1024",
    "tokenize.seq_len=128",
    "model.preset=nano",
    "pretrain.max_steps=12",
    "pretrain.batch_size=8",
    "pretrain.micro_batch_size=8",
    "pretrain.warmup_steps=2",
    "pretrain.checkpoint_every=6",
    "pretrain.eval_every=6",
    "pretrain.eval_samples=16",
    "finetune.max_steps=6",
    "finetune.batch_size=8",
    "finetune.micro_batch_size=8",
    "finetune.warmup_steps=1",
    "finetune.checkpoint_every=3",
    "finetune.eval_every=3",
    "finetune.eval_samples=16",
    "synth.textbooks=20",
    "synth.exercises=20",
    "generate.limit=12",
    "generate.max_new_tokens=12",
]

STAGES_RUN = ["ingest", "annotate", "embed", "classifier", "filter", "mine", "synth", "decontam", "tokenizer",
              "tokenize", "pretrain", "finetune", "generate", "execute"]


AUDIT = Path(__file__).with_name("audit")


def _phi1(tmp_path, *extra, timeout=900, audit: Path | None = None):
    args = [PHI1, "run", "configs/demo.toml", "--set", f"run.root={tmp_path}", "--set", "run.name=e2e"]
    for s in SHRINK:
        args += ["--set", s]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if audit is not None:  # the same command, every file opened under the run dir recorded per stage
        args[0:1] = [sys.executable, str(AUDIT / "phi1_audited.py")]
        env.update(PHI1_AUDIT_FILE=str(audit), PHI1_AUDIT_RUN=str((tmp_path / "e2e").resolve()),
                   PHI1_AUDIT_STAGE_FILE=str(audit.with_suffix(".stage")),
                   PYTHONPATH=os.pathsep.join([str(AUDIT), env.get("PYTHONPATH", "")]))
    return subprocess.run(args + list(extra), cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    t0 = time.time()
    r = _phi1(root, audit=root / "opened.tsv")
    return root, r, time.time() - t0


def test_every_file_a_stage_opens_is_its_own_or_a_declared_input(demo_run):
    """Data flows only through the datasets the config names: a stage opens files
    in its own folder, the run's caches, and the datasets (and their manifests)
    of the inputs its manifest records — nothing else under the run directory."""
    root, r, _ = demo_run
    assert r.returncode == 0, r.stderr[-3000:]
    run = (root / "e2e").resolve()
    opened = [line.split("\t") for line in (root / "opened.tsv").read_text().splitlines()]
    assert {stage for stage, _, _ in opened} >= {"annotate", "embed", "tokenize", "finetune", "execute"}
    allowed: dict[str, list[Path]] = {}
    for stage in {s for s, _, _ in opened}:
        m = json.loads((run / stage / "manifest.json").read_text())
        ok = [run / f"{stage}.partial", run / "cache"]
        for datasets in m.get("datasets", {}).values():
            for d in datasets:
                producer = d["ref"].split(".")[0]
                outputs = json.loads((run / producer / "manifest.json").read_text())["outputs"]
                rel = outputs[d["ref"]]["path"]
                ok += [run / producer / "manifest.json", (run / producer / rel) if rel != "." else run / producer]
        allowed[stage] = ok
    strays = sorted({(stage, path) for stage, _, path in opened
                     if not any(Path(path) == a or a in Path(path).parents for a in allowed[stage])})
    assert not strays, "\n".join(f"{s}: {p}" for s, p in strays[:20])


def test_demo_runs_every_stage_offline(demo_run):
    root, r, _ = demo_run
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    run = root / "e2e"
    for stage in STAGES_RUN:
        m = json.loads((run / stage / "manifest.json").read_text())
        assert m["status"] == "done", stage
    # grade has no endpoint offline: skipped with a one-line notice, no output
    assert "grade: skipped" in r.stdout
    assert not (run / "grade").exists()
    assert not list(run.glob("*.partial"))


def test_demo_reports_the_papers_numbers(demo_run):
    root, r, _ = demo_run
    run = root / "e2e"
    out = r.stdout
    ingest = json.loads((run / "ingest" / "manifest.json").read_text())
    assert ingest["counts"]["documents_in"] == 220
    assert "documents in" in out and "kept" in out
    clf = json.loads((run / "classifier" / "manifest.json").read_text())
    assert 0.0 <= clf["metrics"]["f1"] <= 1.0
    assert "F1" in out
    execute = json.loads((run / "execute" / "manifest.json").read_text())
    assert "pass@1" in json.dumps(execute["metrics"])
    assert "canonical" in out
    results = (run / "execute" / "samples.jsonl_results.jsonl").read_text().splitlines()
    assert len(results) == 12
    assert all({"task_id", "completion", "result", "passed"} <= set(json.loads(x)) for x in results)
    pretrain = json.loads((run / "pretrain" / "manifest.json").read_text())
    assert any("humaneval" in k for k in pretrain["metrics"])
    assert (run / "finetune" / "model" / "config.json").exists()
    assert "summary" in out


def test_demo_rerun_is_a_fast_noop(demo_run, tmp_path):
    root, first, _ = demo_run
    assert first.returncode == 0
    r = _phi1(root)
    assert r.returncode == 0, r.stderr[-3000:]
    for stage in STAGES_RUN:
        assert f"{stage}: up to date" in r.stdout
    assert "running" not in r.stdout.replace("grade: running", "")


def test_demo_ends_with_a_report_that_renders_in_a_real_browser(demo_run):
    """`phi1 run` writes report.html and prints its path; headless Chromium loads it
    with no console error and no network request, with a section per stage that
    ran and every plot decoded."""
    from phi1.report.browser import check_report, find_chromium

    root, r, _ = demo_run
    report = root / "e2e" / "report.html"
    assert f"report: {report}" in r.stdout
    assert "paper: HumanEval pass@1 50.6%" in r.stdout  # the paper's figure beside ours
    if find_chromium() is None:
        pytest.skip("no Chromium installed (make setup installs Debian's chromium as root)")
    page = check_report(report)
    assert page.console_errors == [] and page.requests == []
    assert {f"stage-{s}" for s in STAGES_RUN} <= set(page.sections), page.sections
    assert page.images and all(i["width"] > 0 and i["height"] > 0 and not i.get("error") for i in page.images)
