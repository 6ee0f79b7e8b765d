"""The ingest stage through the CLI: stdlib subset, re-run, bad input, crash and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from corpus_helpers import PHI1, REPO, error_lines, run_cli, write_config, write_jsonl

from phi1.documents import read_documents

STDLIB = """
[ingest]
max_bytes = 200000
[[ingest.sources]]
kind = "python_tree"
path = ""
limit = {limit}
[ingest.executor]
tasks = {tasks}
workers = {workers}
"""


# One configuration for the uninterrupted reference run and the killed-and-resumed run.
SUBSET = STDLIB.format(limit=100, tasks=6, workers=2)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The stdlib subset ingested through the CLI, uninterrupted (2 workers)."""
    tmp = tmp_path_factory.mktemp("ref")
    cfg = write_config(tmp / "c.toml", tmp / "unused", SUBSET, name="ref")
    r = run_cli("run", str(cfg), "--only", "ingest", "--set", f"run.root={tmp / 'runs'}")
    return cfg, tmp / "runs", r


def test_stdlib_subset_through_cli_then_noop(reference):
    cfg, root, r = reference
    assert r.returncode == 0, r.stderr
    out = root / "ref" / "ingest"
    m = json.loads((out / "manifest.json").read_text())
    c = m["counts"]
    assert c["documents_in"] == 100
    assert c["kept"] + sum(v for k, v in c.items() if k.startswith("dropped_")) == 100
    assert 50 < c["kept"] <= 100
    assert m["metrics"]["tokens_estimate"] == int(m["metrics"]["bytes_kept"] / 3.5)
    docs = list(read_documents(out / "docs"))
    assert len(docs) == c["kept"] and len({d.id for d in docs}) == len(docs)
    assert all(d.id.startswith("stdlib/") and set(d.metadata) >= {"source", "path", "size"} for d in docs)
    assert sorted(p.name for p in (out / "docs").iterdir()) == m["output"]["shards"]
    assert all(name.endswith(".jsonl.gz") for name in m["output"]["shards"])
    assert "documents in" in r.stdout and "kept" in r.stdout and "tokens" in r.stdout
    assert (out / "logs" / "1-clean" / "completions").is_dir()  # datatrove markers live in the stage folder
    assert "INFO" not in r.stderr  # datatrove's INFO chatter stays in the log files

    again = run_cli("run", str(cfg), "--only", "ingest", "--set", f"run.root={root}")
    assert again.returncode == 0 and "up to date" in again.stdout
    assert json.loads((out / "manifest.json").read_text())["run_id"] == m["run_id"]


def _fails_with_one_line(r, *needles):
    assert r.returncode != 0
    errs = error_lines(r.stderr)
    assert len(errs) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in errs[0], errs[0]
    return errs[0]


def test_bad_inputs_one_line_errors(tmp_path):
    def cfg(name, source):
        return write_config(tmp_path / f"{name}.toml", tmp_path / "runs", f"""
            [[ingest.sources]]
            {source}
            [ingest.executor]
            tasks = 2
            workers = 1
            """, name=name)

    missing = tmp_path / "no" / "such" / "dir"
    _fails_with_one_line(run_cli("ingest", "--config", str(cfg("missing", f'path = "{missing}"'))),
                         "path not found", str(missing))

    write_jsonl(tmp_path / "empty.jsonl", [])
    _fails_with_one_line(run_cli("ingest", "--config", str(cfg("empty", f'kind = "jsonl"\npath = "{tmp_path / "empty.jsonl"}"'))),
                         "empty corpus", "0 documents")
    write_jsonl(tmp_path / "allbad.jsonl", ["{x", "{y"])
    _fails_with_one_line(run_cli("ingest", "--config", str(cfg("allbad", f'kind = "jsonl"\npath = "{tmp_path / "allbad.jsonl"}"'))),
                         "empty corpus", "2 records were broken", "line 1")

    write_jsonl(tmp_path / "fields.jsonl", [{"content": "x = 1", "repo": "r"}])
    _fails_with_one_line(run_cli("ingest", "--config", str(cfg("fields", f'kind = "jsonl"\npath = "{tmp_path / "fields.jsonl"}"\ntext_field = "code"'))),
                         "'code'", str(tmp_path / "fields.jsonl"), "content, repo")

    notconf = tmp_path / "notes.toml"
    notconf.write_text("this is = not [valid toml\n")
    _fails_with_one_line(run_cli("ingest", "--config", str(notconf)), str(notconf))
    # nothing was left looking finished
    assert not any((tmp_path / "runs").glob("*/ingest/manifest.json"))


def _read_output(stage_dir):
    return sorted((d.id, d.text) for d in read_documents(stage_dir / "docs"))


def test_kill_mid_stage_and_resume(tmp_path, reference):
    """kill -9 after some datatrove tasks finished; the re-run skips them and matches the reference."""
    crash_cfg = write_config(tmp_path / "crash.toml", tmp_path / "runs", SUBSET, name="crash")
    partial = tmp_path / "runs" / "crash" / "ingest.partial"
    done_dir = partial / "logs" / "1-clean" / "completions"

    proc = subprocess.Popen([PHI1, "run", str(crash_cfg), "--only", "ingest"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and proc.poll() is None:
            if done_dir.is_dir() and len(os.listdir(done_dir)) >= 2:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its datatrove workers
    finally:
        proc.wait(timeout=30)
    assert not (tmp_path / "runs" / "crash" / "ingest").exists()  # nothing looks finished
    finished = sorted(os.listdir(done_dir))
    assert 2 <= len(finished) < 6
    logs = partial / "logs" / "1-clean" / "logs"
    stamps = {r: (logs / f"task_{int(r):05d}.log").stat().st_mtime_ns for r in finished}

    r = run_cli("run", str(crash_cfg), "--only", "ingest")
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stdout
    out = tmp_path / "runs" / "crash" / "ingest"
    m = json.loads((out / "manifest.json").read_text())
    assert m["resumed"] is True
    logs = out / "logs" / "1-clean" / "logs"
    # finished tasks were not redone: their logs were not rewritten
    assert {rk: (logs / f"task_{int(rk):05d}.log").stat().st_mtime_ns for rk in finished} == stamps

    _, ref_root, ref = reference
    assert ref.returncode == 0, ref.stderr
    ref_m = json.loads((ref_root / "ref" / "ingest" / "manifest.json").read_text())
    assert m["counts"] == ref_m["counts"]  # the funnel counts the tasks of both attempts
    assert _read_output(out) == _read_output(ref_root / "ref" / "ingest")
