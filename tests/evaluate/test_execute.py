from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from phi1.cli import main
from phi1.config import load_config
from phi1.evaluate.execute import PROGRESS_NAME, RESULTS_NAME, _sample_key, execute_samples_file, run
from phi1.evaluate.problems import load_problems, write_problems
from phi1.evaluate.results import read_samples
from phi1.pipeline import RunDirectory
from phi1.stage import StageContext

REPO = Path(__file__).resolve().parents[2]
PHI1 = str(Path(sys.executable).with_name("phi1"))
HE = load_problems()
TASKS = ["HumanEval/0", "HumanEval/2", "HumanEval/13"]


def write_samples(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def mixed_samples() -> list[dict]:
    rows = []
    for i, t in enumerate(TASKS):
        rows.append({"task_id": t, "completion": HE[t].canonical_solution, "note": f"good-{i}"})
        rows.append({"task_id": t, "completion": "    return None\n" if i else "    while True:\n        pass\n",
                     "note": f"bad-{i}"})
    return rows


def test_phi1_execute_is_a_drop_in(tmp_path):
    samples = write_samples(tmp_path / "samples.jsonl", mixed_samples())
    r = subprocess.run([PHI1, "execute", str(samples), "--timeout", "1", "--workers", "2", "--k", "1,2,10"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == {"pass@1": 0.5, "pass@2": 1.0}
    screen = "\n".join(lines)
    assert "cover 3 of the 164 problems" in screen and "pass@10" in screen
    results = [json.loads(x) for x in (tmp_path / "samples.jsonl_results.jsonl").read_text().splitlines()]
    assert [x["note"] for x in results] == [x["note"] for x in mixed_samples()]  # order and extra fields kept
    assert [x["passed"] for x in results] == [True, False] * 3
    assert results[1]["result"] == "timed out" and results[3]["result"] == "failed: "
    assert set(results[0]) == {"task_id", "completion", "note", "result", "passed"}


def test_cli_with_own_problems_file(tmp_path, capsys):
    probs = tmp_path / "mine.jsonl"
    write_problems(probs, [HE["HumanEval/0"]])
    samples = write_samples(tmp_path / "s.jsonl", [{"task_id": "HumanEval/0", "completion": "    return True\n"}])
    rc = main(["execute", str(samples), "--problems", str(probs), "--timeout", "2", "--workers", "1"])
    assert rc == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1]) == {"pass@1": 0.0}
    assert "cover" not in "\n".join(out)  # all (one) problems attempted


def test_bad_samples_name_file_and_line(tmp_path, capsys):
    samples = write_samples(tmp_path / "s.jsonl", [{"task_id": "HumanEval/0", "completion": ""},
                                                   {"task_id": "Nope/1", "completion": ""}])
    assert main(["execute", str(samples)]) == 1
    err = capsys.readouterr().err
    assert "s.jsonl:2" in err and "'Nope/1'" in err
    write_samples(samples, [{"task_id": "HumanEval/0"}])
    assert main(["execute", str(samples)]) == 1
    assert "missing field 'completion'" in capsys.readouterr().err
    with pytest.raises(Exception, match="timeout"):
        execute_samples_file(samples, timeout=0)


def _stage_ctx(tmp_path: Path, resumed: bool = False, overrides: tuple[str, ...] = ()) -> StageContext:
    cfg = load_config(REPO / "configs/demo.toml", [f"run.root={tmp_path}", "execute.timeout_s=1.0",
                                                   "execute.workers=2", "execute.contamination=",
                                                   *overrides])  # no decontam stage here: no Table 3
    run_dir = cfg.run_dir
    gen = run_dir / "generate"
    gen.mkdir(parents=True, exist_ok=True)
    (gen / "manifest.json").write_text(json.dumps({"stage": "generate", "status": "done", "run_id": "x"}))
    write_samples(gen / "samples.jsonl", mixed_samples())
    write_problems(gen / "problems.jsonl", [HE[t] for t in TASKS] + [HE["HumanEval/1"]])
    work = run_dir / "execute.partial"
    work.mkdir(exist_ok=True)
    return RunDirectory(cfg).context("execute", work, resumed=resumed, echo=lambda m: None)


def test_execute_stage_writes_results_table_and_metrics(tmp_path):
    ctx = _stage_ctx(tmp_path)
    res = run(ctx)
    results = [json.loads(x) for x in (ctx.work_dir / RESULTS_NAME).read_text().splitlines()]
    assert [x["passed"] for x in results] == [True, False] * 3
    assert res.metrics["pass@1"] == 0.5 and res.metrics["canonical_pass_rate"] == 1.0
    assert res.counts["canonical_passed"] == res.counts["canonical_total"] == 3
    assert res.counts["timed_out"] == 1 and res.counts["problems"] == 3
    assert res.extra["sandbox"]["kind"] in ("bubblewrap", "fallback")
    assert [r["task_id"] for r in res.extra["per_task"]] == TASKS
    table = (ctx.work_dir / "per_task.txt").read_text()
    assert "HumanEval/13" in table and "canonical" in table
    text = "\n".join(res.summary)
    assert "canonical solutions: 3/3 passed (100.0%), beside pass@1 = 0.5000" in text
    assert "cover 3 of the 4 problems" in text
    assert not (ctx.work_dir / PROGRESS_NAME).exists()


def test_execute_stage_resumes_from_progress(tmp_path):
    ctx = _stage_ctx(tmp_path, resumed=True, overrides=("execute.canonical_check=false",))
    samples = read_samples(ctx.run_dir / "generate/samples.jsonl", HE)
    # an interrupted attempt judged samples 1 and 3 already (recorded verdicts are reused as they are)
    progress = [{"i": 1, "key": _sample_key(samples[1]), "passed": True, "result": "passed", "seconds": 0.1},
                {"i": 3, "key": "stale-key", "passed": True, "result": "passed"}]
    (ctx.work_dir / PROGRESS_NAME).write_text("".join(json.dumps(p) + "\n" for p in progress) + '{"i": 5, "ke')
    res = run(ctx)
    results = [json.loads(x) for x in (ctx.work_dir / RESULTS_NAME).read_text().splitlines()]
    assert [x["passed"] for x in results] == [True, True, True, False, True, False]
    assert res.extra["resumed_samples"] == 1 and "canonical_pass_rate" not in res.metrics


def test_any_valid_json_sample_round_trips_and_fails_alone(tmp_path):
    # a lone surrogate is valid JSON (\ud800) but not encodable as UTF-8; a completion of
    # nothing but line breaks of every kind; a NUL byte: each fails its own sample only
    hostile = ["    return '\ud800'\n", "\r\r\n\r", "    return 0\x00\n", "    return x\udfff\n"]
    rows = [{"task_id": "HumanEval/0", "completion": c, "i": i} for i, c in enumerate(hostile)]
    rows.append({"task_id": "HumanEval/0", "completion": HE["HumanEval/0"].canonical_solution, "i": 99})
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))  # ensure_ascii: \ud800 as an escape
    r = subprocess.run([PHI1, "execute", str(samples), "--timeout", "3", "--workers", "1", "--k", "1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = [json.loads(x) for x in (tmp_path / "samples.jsonl_results.jsonl").read_text().splitlines()]
    assert [x["completion"] for x in out] == [x["completion"] for x in rows]  # exactly as read
    assert [x["passed"] for x in out] == [False] * len(hostile) + [True]
    assert out[0]["result"].startswith("failed: 'utf-8' codec can't encode character '\\ud800'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.jsonl", "samples.jsonl_results.jsonl"]
