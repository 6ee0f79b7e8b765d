"""The stages that call an endpoint (annotate with the llm teacher, grade), run
through the CLI against a broken endpoint: a wrong key, an endpoint that goes
dead mid-run, a teacher that replies with a lone surrogate, and Ctrl-C or
SIGTERM with many requests in flight."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.openai_server import Fault, openai_server_factory  # noqa: F401 (fixture)
from helpers.llm_cases import KEY, doc_index, module_docs
from helpers.stages import mark_done
from phi1.cli import main
from phi1.config import load_config
from phi1.documents import read_jsonl, write_jsonl

PHI1 = str(Path(sys.executable).with_name("phi1"))


def _teacher(req) -> str:
    return f"Fine.\nEducational score: {doc_index(req) % 6}"


def _annotate_run(tmp_path: Path, url: str, n: int, annotate: str = "", **llm) -> Path:
    opts = {"base_urls": [url], "model": "teacher-model", "api_key_env": "", "concurrency": 4, "timeout_s": 2.0,
            "backoff_base_s": 0.01, "backoff_max_s": 0.05, **llm}
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in opts.items())
    cfg_path = tmp_path / "run.toml"
    cfg_path.write_text(f'[run]\nroot = "{tmp_path / "runs"}"\nname = "t"\n\n[annotate]\nteacher = "llm"\n'
                        f'samples = {n}\nsize_strata = 1\n{annotate}\n[annotate.llm]\n{body}\n')
    cfg = load_config(cfg_path)
    docs = module_docs(n)
    write_jsonl(cfg.run_dir / "ingest" / "docs" / "00000.jsonl.gz", docs)
    mark_done(cfg, "ingest", counts={"documents": len(docs)})
    return cfg_path


def _manifest(cfg_path: Path) -> dict:
    return json.loads((load_config(cfg_path).run_dir / "annotate" / "manifest.json").read_text())


def _labels(cfg_path: Path) -> list[dict]:
    return list(read_jsonl(load_config(cfg_path).run_dir / "annotate" / "labels.jsonl"))


def test_annotate_with_a_wrong_key_stops_after_a_few_requests_in_one_line(openai_server_factory, tmp_path,
                                                                          monkeypatch, capsys):
    monkeypatch.setenv("PHI1_TEST_TEACHER_KEY", KEY[::-1])  # not the key the server wants
    srv = openai_server_factory(responder=_teacher, api_key=KEY)
    cfg = _annotate_run(tmp_path, srv.base_url, 60, api_key_env="PHI1_TEST_TEACHER_KEY")
    assert main(["run", str(cfg), "--only", "annotate"]) == 1
    out, err = capsys.readouterr()
    assert len(srv.requests) <= 3 + 4  # three refusals in a row, at most `concurrency` in flight
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "60 of 60 annotation requests failed" in errors[0] and "HTTP 401" in errors[0]
    assert "Traceback" not in err and KEY[::-1][:12] not in out + err


@pytest.mark.timeout(60)
def test_annotate_against_an_endpoint_that_goes_dead_ends_in_bounded_time_and_a_rerun_resends_the_rest(
        openai_server_factory, tmp_path, capsys):
    answered = 6
    dead = [True]
    srv = openai_server_factory(responder=_teacher,
                                rules=[(lambda r: dead[0] and r.seq >= answered, Fault.slow(30))])
    cfg = _annotate_run(tmp_path, srv.base_url, 20, "max_failed_fraction = 1.0", timeout_s=0.5,
                        give_up_after_s=1.0, max_retries=1000)
    t = time.monotonic()
    assert main(["run", str(cfg), "--only", "annotate"]) == 0
    took = time.monotonic() - t
    out = capsys.readouterr().out
    assert took < 1.0 + 0.5 + 4, took  # give_up_after_s + timeout_s after the last reply, plus start-up
    m = _manifest(cfg)
    labels = _labels(cfg)
    failed = {r["id"] for r in labels if "error" in r}
    assert m["failed"] == len(failed) == 20 - answered and "giving up: no endpoint has answered for 1s" in out
    assert all(r["valid"] for r in labels if "error" not in r)
    # The endpoint is back: a plain re-run sends exactly the unanswered requests.
    dead[0] = False
    srv.reset_log()
    assert main(["run", str(cfg), "--only", "annotate"]) == 0
    assert {f"gen/m{doc_index(r):03d}.py" for r in srv.requests} == failed and len(srv.requests) == len(failed)
    assert _manifest(cfg)["failed"] == 0


def test_a_lone_surrogate_in_a_teachers_reply_reaches_the_labels_file(openai_server_factory, tmp_path):
    srv = openai_server_factory(responder=lambda r: f"Fine \ud800 code.\nEducational score: {doc_index(r) % 6}")
    cfg = _annotate_run(tmp_path, srv.base_url, 6)
    assert main(["run", str(cfg), "--only", "annotate"]) == 0
    labels = _labels(cfg)
    assert len(labels) == 6 and all(r["valid"] for r in labels)
    srv.reset_log()
    assert main(["run", str(cfg), "--only", "annotate", "--force"]) == 0  # and from the cache
    assert srv.requests == [] and len(_labels(cfg)) == 6


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_with_many_requests_in_flight_is_one_line_and_the_rerun_sends_only_the_rest(
        openai_server_factory, tmp_path, sig):
    srv = openai_server_factory(responder=_teacher, latency=0.3)
    cfg = _annotate_run(tmp_path, srv.base_url, 60, concurrency=20, timeout_s=10)
    p = subprocess.Popen([PHI1, "run", str(cfg), "--only", "annotate"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while len(srv.requests) < 30 and time.monotonic() < deadline:  # 20 answered, 10+ in flight
        time.sleep(0.02)
    p.send_signal(sig)
    _, err = p.communicate(timeout=30)
    assert p.returncode == (130 if sig == signal.SIGINT else 143)
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("interrupted: re-run the same command to resume" if sig == signal.SIGINT
                                            else "terminated (SIGTERM): re-run the same command to resume")
    with sqlite3.connect(load_config(cfg).run_dir / "cache" / "llm.sqlite") as db:
        (cached,) = db.execute("SELECT COUNT(*) FROM responses").fetchone()
        (check,) = db.execute("PRAGMA integrity_check").fetchone()
    assert check == "ok" and 0 < cached < 60
    srv.reset_log()
    srv.latency = 0.0
    assert main(["run", str(cfg), "--only", "annotate"]) == 0
    assert len(srv.requests) == 60 - cached and len(_labels(cfg)) == 60


# --------------------------------------------------------------------------- grade


PROBLEMS = [{"task_id": f"Toy/{i}", "prompt": f"def add{i}(a, b):\n", "canonical_solution": "    return a + b\n",
             "test": "", "entry_point": f"add{i}"} for i in range(6)]


def _grade_run(tmp_path: Path, url: str, **llm) -> Path:
    opts = {"base_urls": [url], "model": "grader", "api_key_env": "PHI1_TEST_GRADER_KEY", "concurrency": 2,
            "timeout_s": 2.0, "backoff_base_s": 0.01, "backoff_max_s": 0.05, **llm}
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in opts.items())
    config = tmp_path / "run.toml"
    config.write_text(f'[run]\nroot = "{tmp_path / "runs"}"\nname = "g"\n\n[grade]\n\n[grade.llm]\n{body}\n')
    cfg = load_config(config)
    mark_done(cfg, "finetune")
    gen = cfg.run_dir / "generate"
    gen.mkdir(parents=True)
    write_jsonl(gen / "problems.jsonl", PROBLEMS)
    write_jsonl(gen / "samples.jsonl", [{"task_id": p["task_id"], "completion": "    return a + b\n"}
                                        for p in PROBLEMS])
    mark_done(cfg, "generate", generation={"model": "runs/g/finetune/model"})
    return config


def test_grade_with_a_wrong_key_is_one_error_line_not_a_stage_of_failed_grades(openai_server_factory, tmp_path,
                                                                               monkeypatch, capsys):
    monkeypatch.setenv("PHI1_TEST_GRADER_KEY", KEY[::-1])
    srv = openai_server_factory(responder=lambda r: "Evaluation: fine.\nGrade: 9", api_key=KEY)
    cfg = _grade_run(tmp_path, srv.base_url)
    assert main(["run", str(cfg), "--only", "grade"]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "grade: all 6 grading requests failed" in errors[0] and "HTTP 401" in errors[0]
    assert len(srv.requests) <= 3 + 2
    monkeypatch.setenv("PHI1_TEST_GRADER_KEY", KEY)  # fixed: the same command grades everything
    assert main(["run", str(cfg), "--only", "grade"]) == 0
