"""Run directory, manifests, skip/resume, staleness, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import toy_stages
from phi1.config import load_config
from phi1.errors import Phi1Error
from phi1.pipeline import Pipeline, RunDirectory, read_manifest

TESTS = Path(__file__).resolve().parent


def make_cfg(tmp_path, *overrides, stages=toy_stages.TOY_SKIP_IF + toy_stages.TOY_SKIP[2:]):
    return load_config(None, [f"run.root={tmp_path}", "run.name=t", *overrides], stages=stages)


def run(cfg, stages=toy_stages.TOY, **kw):
    lines = []
    outcomes = Pipeline(cfg, echo=lines.append, stages=stages).run(**kw)
    return outcomes, "\n".join(lines)


def test_first_run_writes_outputs_and_manifest(tmp_path):
    cfg = make_cfg(tmp_path)
    outcomes, _ = run(cfg)
    assert outcomes == {"count": "ran", "double": "ran"}
    m = read_manifest(tmp_path / "t" / "count")
    assert m["status"] == "done"
    assert m["config_hash"] == cfg.section_hash("count")
    assert m["counts"] == {"items": 5, "computed": 5}
    assert {"python", "phi1"} <= set(m["versions"])
    assert m["timings"]["seconds"] >= 0
    d = read_manifest(tmp_path / "t" / "double")
    assert d["inputs"] == {"count": m["run_id"]}
    assert json.loads((tmp_path / "t" / "double" / "double.json").read_text()) == {"double": 10}
    assert not list((tmp_path / "t").glob("*.partial"))


def test_rerun_is_a_noop_that_says_so(tmp_path):
    cfg = make_cfg(tmp_path)
    run(cfg)
    before = read_manifest(tmp_path / "t" / "count")["run_id"]
    outcomes, text = run(cfg)
    assert outcomes == {"count": "current", "double": "current"}
    assert "count: up to date" in text and "skipping" in text
    assert read_manifest(tmp_path / "t" / "count")["run_id"] == before


def test_changed_section_reruns_stage_and_downstream(tmp_path):
    run(make_cfg(tmp_path))
    changed = make_cfg(tmp_path, "count.items=7")
    statuses = {s.name: s.state for s in RunDirectory(changed, toy_stages.TOY).statuses()}
    assert statuses == {"count": "stale", "double": "stale"}
    outcomes, _ = run(changed)
    assert outcomes == {"count": "ran", "double": "ran"}


def test_changed_downstream_section_reruns_only_downstream(tmp_path):
    run(make_cfg(tmp_path))
    outcomes, _ = run(make_cfg(tmp_path, "double.factor=3"))
    assert outcomes == {"count": "current", "double": "ran"}


def test_force_and_from(tmp_path):
    cfg = make_cfg(tmp_path)
    run(cfg)
    assert run(cfg, force=True, only=["double"])[0] == {"double": "ran"}
    assert run(cfg, start="count")[0] == {"count": "ran", "double": "ran"}


def test_only_requires_finished_upstream(tmp_path):
    with pytest.raises(Phi1Error, match="needs count"):
        run(make_cfg(tmp_path), only=["double"])


def test_failed_stage_leaves_nothing_that_looks_finished(tmp_path):
    cfg = make_cfg(tmp_path)
    with pytest.raises(RuntimeError, match="boom"):
        run(cfg, stages=toy_stages.TOY_FAIL)
    assert not (tmp_path / "t" / "count").exists()
    assert (tmp_path / "t" / "count.partial" / "half.txt").exists()
    assert RunDirectory(cfg, toy_stages.TOY).statuses()[0].state == "pending"


def test_failed_rerun_keeps_previous_good_output(tmp_path):
    cfg = make_cfg(tmp_path)
    run(cfg)
    good = read_manifest(tmp_path / "t" / "count")
    with pytest.raises(RuntimeError):
        run(make_cfg(tmp_path, "count.items=3"), stages=toy_stages.TOY_FAIL)
    assert read_manifest(tmp_path / "t" / "count") == good
    assert len(list((tmp_path / "t" / "count" / "items").glob("*.txt"))) == 5


def test_skip_stage_notice_and_dependents_skipped(tmp_path):
    outcomes, text = run(make_cfg(tmp_path), stages=toy_stages.TOY_SKIP)
    assert outcomes["skipper"] == "skipped" and outcomes["after"] == "skipped"
    assert "skipper: skipped: no endpoint configured" in text
    assert not (tmp_path / "t" / "skipper").exists()


def test_interrupted_swap_is_recovered(tmp_path):
    cfg = make_cfg(tmp_path)
    run(cfg)
    # Simulate a crash between the two renames of a re-run: final moved away,
    # the finished partial not yet renamed into place.
    t = tmp_path / "t"
    os.replace(t / "count", t / "count.partial")
    os.makedirs(t / "count.old-deadbeef")
    outcomes, _ = run(cfg)
    assert outcomes["count"] == "current"
    assert (t / "count" / "manifest.json").exists()
    assert not (t / "count.old-deadbeef").exists()


def test_second_process_on_same_run_is_refused(tmp_path):
    cfg = make_cfg(tmp_path)
    rd = RunDirectory(cfg, toy_stages.TOY)
    with rd.lock():
        with pytest.raises(Phi1Error, match="another phi1 process"):
            run(cfg)


_DRIVER = """
import sys, toy_stages
from phi1.config import load_config
from phi1.pipeline import Pipeline
cfg = load_config(None, ["run.root=" + sys.argv[1], "run.name=t", *sys.argv[2:]], stages=toy_stages.TOY)
Pipeline(cfg, stages=toy_stages.TOY).run()
"""


def _driver(tmp_path, items, delay, *extra):
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    return subprocess.Popen([sys.executable, "-c", _DRIVER, str(tmp_path), f"count.items={items}",
                             f"count.delay={delay}", *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_kill_mid_stage_then_resume_without_redoing_work(tmp_path, sig):
    proc = _driver(tmp_path, items=40, delay=0.05)
    log = tmp_path / "t" / "count.partial" / "work.log"
    deadline = time.time() + 30
    while time.time() < deadline and (not log.exists() or len(log.read_text().split()) < 5):
        time.sleep(0.02)
    proc.send_signal(sig)
    proc.wait(timeout=30)
    assert not (tmp_path / "t" / "count").exists(), "an interrupted stage must not look finished"
    done_before = len(log.read_text().split())
    assert 5 <= done_before < 40

    # the resume changes execution fields (delay, workers): the attempt is still resumed
    proc = _driver(tmp_path, 40, 0.0, "count.workers=4")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "resuming interrupted attempt" in out
    m = read_manifest(tmp_path / "t" / "count")
    assert m["resumed"] is True
    assert m["counts"]["computed"] == 40 - done_before  # finished items were not redone
    assert len(list((tmp_path / "t" / "count" / "items").glob("*.txt"))) == 40
    assert read_manifest(tmp_path / "t" / "double")["counts"] == {"double": 80}


def test_changed_config_discards_interrupted_attempt(tmp_path):
    cfg = make_cfg(tmp_path)
    with pytest.raises(RuntimeError):
        run(cfg, stages=toy_stages.TOY_FAIL)
    assert (tmp_path / "t" / "count.partial" / "half.txt").exists()
    outcomes, text = run(make_cfg(tmp_path, "count.items=9"))
    assert outcomes["count"] == "ran" and "resuming" not in text
    assert not (tmp_path / "t" / "count" / "half.txt").exists()
    # never silently: one line names what was discarded and why
    notice = [x for x in text.splitlines() if "discarding" in x]
    assert len(notice) == 1 and "count.partial" in notice[0] and "1 files" in notice[0], text
    assert "[count] changed" in notice[0]


def test_config_skip_is_one_line_before_the_stage_starts(tmp_path):
    outcomes, text = run(make_cfg(tmp_path), stages=toy_stages.TOY_SKIP_IF)
    assert outcomes["maybe"] == "skipped"
    lines = [x for x in text.splitlines() if x.startswith("maybe:")]
    assert lines == ["maybe: skipped: maybe.when is not 7"]
    assert not (tmp_path / "t" / "maybe.partial").exists()
    outcomes, _ = run(make_cfg(tmp_path, "maybe.when=7"), stages=toy_stages.TOY_SKIP_IF)
    assert outcomes["maybe"] == "ran"


# --------------------------------------------------------------------------- hostile run folders (input red team)


def test_a_deleted_output_dataset_makes_its_stage_stale_not_read_half(tmp_path):
    cfg = make_cfg(tmp_path)
    run(cfg)
    import shutil

    shutil.rmtree(tmp_path / "t" / "count" / "items")
    states = {s.name: (s.state, s.reason) for s in RunDirectory(cfg, toy_stages.TOY).statuses()}
    assert states["count"] == ("stale", "its output count (items) is missing")
    assert states["double"][0] == "stale"
    outcomes, _ = run(cfg)
    assert outcomes == {"count": "ran", "double": "ran"}
    assert len(list((tmp_path / "t" / "count" / "items").glob("*.txt"))) == 5


@pytest.mark.parametrize("edit, words", [
    ({"failed": "lots"}, "'failed' must be an integer"),
    ({"inputs": [1]}, "'inputs' must be an object of strings"),
    ({"timings": {"seconds": "x"}}, "'timings' must be an object"),
    ({"summary": "abc"}, "'summary' must be a list of strings"),
    ({"run_id": 5}, "'run_id' must be a string"),
])
def test_a_hand_edited_manifest_is_one_line_naming_the_field(tmp_path, edit, words):
    cfg = make_cfg(tmp_path)
    run(cfg)
    path = tmp_path / "t" / "count" / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))
    with pytest.raises(Phi1Error) as e:
        run(cfg)
    assert str(path) in str(e.value) and words in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["count", "count.partial"])
def test_a_file_where_a_stage_folder_belongs_is_refused_and_kept(tmp_path, name):
    cfg = make_cfg(tmp_path)
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / name).write_text("mine, not phi1's")
    with pytest.raises(Phi1Error, match=f"{name} is a file, not a stage folder"):
        run(cfg)
    assert (tmp_path / "t" / name).read_text() == "mine, not phi1's"


def test_a_run_folder_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "t").write_text("x")
    with pytest.raises(Phi1Error, match="exists and is not a folder"):
        run(make_cfg(tmp_path))


def test_stages_during_a_run_does_not_touch_its_folders(tmp_path):
    # `phi1 stages` while `phi1 run` holds the run: a swap half done by the run is left to the run
    cfg = make_cfg(tmp_path)
    run(cfg)
    t = tmp_path / "t"
    os.replace(t / "count", t / "count.partial")  # the run is between its two renames
    rd = RunDirectory(cfg, toy_stages.TOY)
    with rd.lock():
        RunDirectory(cfg, toy_stages.TOY).statuses()
        assert (t / "count.partial").exists() and not (t / "count").exists()
    assert RunDirectory(cfg, toy_stages.TOY).statuses()[0].state == "done"  # no run: repaired


def test_a_manifest_that_cannot_be_written_keeps_the_finished_work_for_the_next_run(tmp_path, monkeypatch):
    # disk full at the very end: the attempt record was removed first, so the next run discarded it all
    import errno

    import phi1.pipeline as pipeline

    cfg = make_cfg(tmp_path)
    real = pipeline.write_json_atomic

    def full(path, data):
        if Path(path).name == "manifest.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(pipeline, "write_json_atomic", full)
    with pytest.raises(OSError):
        run(cfg)
    monkeypatch.setattr(pipeline, "write_json_atomic", real)
    outcomes, text = run(cfg)
    assert "resuming interrupted attempt" in text and "discarding" not in text
    assert read_manifest(tmp_path / "t" / "count")["counts"]["computed"] == 0  # nothing redone
    assert not (tmp_path / "t" / "count" / ".attempt.json").exists()


def test_a_commit_interrupted_before_its_first_rename_is_completed(tmp_path):
    # re-run of a finished stage, killed after writing the new manifest but before swapping folders
    cfg = make_cfg(tmp_path)
    run(cfg)
    t = tmp_path / "t"
    import shutil

    shutil.copytree(t / "count", t / "count.partial")
    m = json.loads((t / "count.partial" / "manifest.json").read_text())
    (t / "count.partial" / "manifest.json").write_text(json.dumps({**m, "run_id": "newer"}))
    RunDirectory(cfg, toy_stages.TOY).recover()
    assert read_manifest(t / "count")["run_id"] == "newer"
    assert not (t / "count.partial").exists() and not list(t.glob("count.old-*"))


@pytest.mark.parametrize("env, words", [
    ({"RANK": "x"}, "RANK='x' is not an integer"),
    ({"RANK": "3", "WORLD_SIZE": "2"}, "do not fit"),
])
def test_a_broken_launcher_environment_is_one_line(tmp_path, monkeypatch, env, words):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(Phi1Error, match=words):
        Pipeline(make_cfg(tmp_path), stages=toy_stages.TOY)


def test_a_left_over_process_holding_the_lock_is_named_by_pid(tmp_path):
    # a worker that outlived its SIGKILLed phi1 keeps the lock (inherited): the user needs its pid
    cfg = make_cfg(tmp_path)
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / ".lock").write_text("999999999\n")  # the killed holder's pid: gone
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
                               str(tmp_path / "t" / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(Phi1Error) as e:
            run(cfg)
        assert f"(pid {holder.pid}); wait for it" in str(e.value) and f"kill {holder.pid}" in str(e.value)
        assert "999999999" not in str(e.value)
    finally:
        holder.kill()
        holder.wait()
    assert run(cfg)[0] == {"count": "ran", "double": "ran"}
    assert (tmp_path / "t" / ".lock").read_text().strip() == str(os.getpid())


def test_a_folder_without_manifest_where_a_stage_goes_is_not_replaced(tmp_path):
    # phi1 renames only folders holding a manifest into place: this one is the user's
    cfg = make_cfg(tmp_path)
    (tmp_path / "t" / "count").mkdir(parents=True)
    (tmp_path / "t" / "count" / "notes.txt").write_text("mine")
    with pytest.raises(Phi1Error, match="holds no manifest.json: it is not a finished phi1 stage"):
        run(cfg)
    assert (tmp_path / "t" / "count" / "notes.txt").read_text() == "mine"
