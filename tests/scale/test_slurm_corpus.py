"""ingest and filter on a real Slurm cluster, through the real sbatch, squeue,
scancel and sacct: the page's command gives the local executor's output; a
cancelled array is reported in one line, and a re-run resubmits only the
unfinished tasks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from scale_helpers import (
    CORPUS_STAGES, PHI1, REPO, SHRINK, docs_of, manifest, outcome_counts, phi1_run_args, run_phi1, sacct, squeue,
)

FAST_POLL = ["ingest.executor.slurm.poll_s=1", "filter.executor.slurm.poll_s=1"]
# the six ingest steps: label, log folder, tasks (ingest.executor.tasks = 2, 2 MinHash buckets)
INGEST_STEPS = [("clean", "1-clean", 2), ("exact: find", "2-exact-find", 1), ("exact: filter", "3-exact-filter", 2),
                ("near: buckets", "4-near-buckets", 2), ("near: cluster", "5-near-cluster", 1),
                ("near: filter", "6-near-filter", 2)]


def _jobs(step_dir: Path) -> dict[str, list[str]]:
    """Job ids phi1 recorded for each step of a chain (in the last step's logging folder)."""
    return json.loads((step_dir / "phi1_slurm_jobs.json").read_text())


def _times(job_ids: list[str]) -> list[tuple[datetime, datetime]]:
    r = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "Start,End", "-j", ",".join(job_ids)],
                       capture_output=True, text=True, timeout=30)
    return [tuple(datetime.fromisoformat(x) for x in line.split("|")) for line in r.stdout.split()]


def test_ingest_and_filter_on_slurm_match_local(slurm_cluster, local_reference, embed_cache, tmp_path):
    only, sets = phi1_run_args("slurm-corpus")
    assert only == CORPUS_STAGES
    assert f"ingest.executor.slurm.partition={slurm_cluster}" in sets
    r = run_phi1(tmp_path, "slurm", only, sets, extra=[f"embed.cache_dir={embed_cache}", *FAST_POLL])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "submitted Slurm jobs" in r.stdout
    run = tmp_path / "slurm"

    # the same documents as the local executor, and the same funnel
    for stage in ("ingest", "filter"):
        assert docs_of(run / stage / "docs") == docs_of(local_reference / stage / "docs"), stage
        assert outcome_counts(run, stage) == outcome_counts(local_reference, stage), stage
    assert 0 < manifest(run, "filter")["counts"]["documents_kept"] < manifest(run, "ingest")["counts"]["kept"]

    # six job arrays, every task COMPLETED in Slurm's accounting, each step
    # starting only after the one before it ended (afterok)
    logs = run / "ingest" / "logs"
    by_step = _jobs(logs / INGEST_STEPS[-1][1])
    assert sorted(by_step) == sorted(label for label, _, _ in INGEST_STEPS)
    previous_end = None
    for label, step, width in INGEST_STEPS:
        [array] = by_step[label]
        states = sacct([array])
        assert sorted(states) == [f"{array}_{i}" for i in range(width)], label
        assert set(states.values()) == {"COMPLETED"}, (label, states)
        assert f"#SBATCH --array=0-{width - 1}%" in (logs / step / "launch_script.slurm").read_text()
        # Slurm's own log of every array task, where the page says
        assert sorted(p.name for p in (logs / step / "slurm_logs").glob(f"{array}_*.out")) == \
            [f"{array}_{i}.out" for i in range(width)]
        spans = _times([array])
        if previous_end is not None:
            assert min(s for s, _ in spans) >= previous_end, f"{label} started before the step before it ended"
        previous_end = max(e for _, e in spans)
        assert (logs / step / "stats.json").exists()  # summed by phi1, as the local executor leaves it
    filter_jobs = _jobs(run / "filter" / "logs" / "filter")
    assert sorted(filter_jobs) == ["keep top", "score"]
    for label in ("score", "keep top"):
        assert set(sacct(filter_jobs[label]).values()) == {"COMPLETED"}, label
    [score], [keep] = filter_jobs["score"], filter_jobs["keep top"]
    assert max(e for _, e in _times([score])) <= min(s for s, _ in _times([keep]))
    # phi1 waited for everything: nothing of ours is left in the queue
    assert squeue([j for ids in [*by_step.values(), *filter_jobs.values()] for j in ids]) == []


def _wait_for(cond, what: str, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_interrupt_wait_scancel_and_rerun_resubmits_only_unfinished(slurm_cluster, tmp_path):
    _, sets = phi1_run_args("slurm-corpus")
    # one clean task at a time (array throttle %1), so the cancel lands mid-array
    extra = ["ingest.minhash.enabled=false", "ingest.executor.tasks=3", "ingest.executor.workers=1", *FAST_POLL]
    local = run_phi1(tmp_path, "local", ["ingest"], [], extra=extra[:3])
    assert local.returncode == 0, local.stderr[-3000:]

    args = [PHI1, "run", "configs/demo.toml", "--only", "ingest"]
    for s in [*sets, *SHRINK, *extra, f"run.root={tmp_path}", "run.name=slurm"]:
        args += ["--set", s]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def start() -> subprocess.Popen:
        return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    work = tmp_path / "slurm" / "ingest.partial"
    clean, jobs_file = work / "logs" / "1-clean", work / "logs" / "3-exact-filter" / "phi1_slurm_jobs.json"
    done = lambda: {p.name for p in (clean / "completions").glob("*")} if (clean / "completions").is_dir() else set()  # noqa: E731

    # 1. Ctrl-C while phi1 waits: the jobs keep running ...
    first = start()
    _wait_for(jobs_file.exists, "the first submission")
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=60)
    recorded = _jobs(jobs_file.parent)
    assert squeue([recorded["clean"][0]]), "the Slurm jobs died with the phi1 process"

    # 2. ... and the same command waits for them instead of submitting again
    second = start()
    array = recorded["clean"][0]
    _wait_for(lambda: "COMPLETED" in sacct([array]).values(), "the first clean task to end")
    subprocess.run(["scancel", array], check=True, timeout=30)  # the cluster loses the rest of the array
    out, err = second.communicate(timeout=120)
    assert "waiting for Slurm jobs submitted earlier" in out, out
    assert second.returncode != 0
    finished = sorted(int(r) for r in done())
    unfinished = sorted(set(range(3)) - set(finished))
    assert finished and unfinished, (finished, unfinished)
    error = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(error) == 1, err
    assert f"Slurm step 'clean': {len(unfinished)} of 3 tasks did not finish (" in error[0]
    for r in unfinished:  # Slurm's state of each, from sacct (a task cancelled while pending too)
        assert f"task {r} CANCELLED" in error[0], error[0]
    assert "re-run the same command to resubmit only the unfinished tasks" in error[0]
    assert _jobs(jobs_file.parent) == recorded  # nothing was submitted twice
    # the later steps could never start (afterok): phi1 cancelled them, the queue is clean
    assert squeue([j for ids in recorded.values() for j in ids]) == []
    states = sacct([array])
    # a finished task is COMPLETED, or CANCELLED when scancel caught it after its completion marker was
    # written but before its job ended; either way phi1 counts it as finished (the marker) and never re-runs it
    assert all(states[f"{array}_{r}"] == "COMPLETED" or states[f"{array}_{r}"].startswith("CANCELLED")
               for r in finished), states
    assert any(states[f"{array}_{r}"] == "COMPLETED" for r in finished), states  # the one the test waited for
    assert all(states[f"{array}_{r}"].startswith("CANCELLED") for r in unfinished), states

    # 3. the re-run resubmits exactly the unfinished clean tasks, then the later steps
    third = start()
    out, err = third.communicate(timeout=300)
    assert third.returncode == 0, out[-3000:] + err[-3000:]
    assert "resuming" in out
    logs = tmp_path / "slurm" / "ingest" / "logs"
    again = _jobs(logs / "3-exact-filter")
    new_array = again["clean"][0]
    assert new_array != array
    assert json.loads((logs / "1-clean" / "ranks_to_run.json").read_text()) == unfinished
    assert f"#SBATCH --array=0-{len(unfinished) - 1}%1" in (logs / "1-clean" / "launch_script.slurm").read_text()
    assert sorted(sacct([new_array])) == [f"{new_array}_{i}" for i in range(len(unfinished))]
    assert set(sacct([new_array]).values()) == {"COMPLETED"}
    # and the result is the local executor's
    assert docs_of(tmp_path / "slurm" / "ingest" / "docs") == docs_of(tmp_path / "local" / "ingest" / "docs")
    assert outcome_counts(tmp_path / "slurm", "ingest") == outcome_counts(tmp_path / "local", "ingest")


def test_a_job_sbatch_refuses_is_one_line(slurm_cluster, tmp_path):
    """A wrong partition: sbatch's own message, then one line naming the step and its launch script."""
    from phi1.errors import Phi1Error
    from phi1.executors import build_executor, run_executors
    from phi1.sections import ExecutorConfig, SlurmConfig

    cfg = ExecutorConfig(kind="slurm", tasks=2, slurm=SlurmConfig(partition="no-such-partition"))
    first = build_executor(cfg, [], tmp_path / "a", "t-a")
    second = build_executor(cfg, [], tmp_path / "b", "t-b", depends=first)
    with pytest.raises(Phi1Error) as e:
        run_executors([("first", first), ("second", second)], progress=False)
    assert "sbatch refused Slurm step 'first'" in str(e.value)
    assert str(tmp_path / "a" / "launch_script.slurm") in str(e.value)
    assert json.loads((tmp_path / "b" / "phi1_slurm_jobs.json").read_text()) == {"first": [], "second": []}
