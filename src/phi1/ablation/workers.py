"""The arm x seed runs side by side: a few worker processes, each running one
`Pipeline` at a time with its output in a log file.

On a 2-core machine two runs of one torch thread each keep both cores busy
without the two threads of one run waiting on each other at every small op
(docs/ablation.md has the measurements). A worker dies with the driver
(``PR_SET_PDEATHSIG``), so a killed ablation leaves no run behind holding its
lock; the same command then resumes every run through the pipeline.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from phi1.errors import Phi1Error


@dataclass(frozen=True)
class Job:
    """One pipeline run for a worker: its config, the stages it computes, its log."""

    config: Any  # PipelineConfig (picklable dataclasses)
    only: tuple[str, ...]
    log: Path


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() == 1:  # the driver is gone already
        os._exit(1)


def _init(threads: int) -> None:
    _die_with_parent()
    if threads:
        import torch

        torch.set_num_threads(threads)


def run_logged(job: Job, stages: Any) -> dict[str, str]:
    """Run ``job`` in this process with stdout and stderr (file descriptors, so
    child processes and progress bars too) appended to its log."""
    from phi1.pipeline import Pipeline

    job.log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(job.log, "a", encoding="utf-8") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            when = datetime.now(timezone.utc).isoformat(timespec="seconds")
            print(f"=== {when} phi1 ablation: run {job.config.run.name}, stages {', '.join(job.only)}", flush=True)
            return Pipeline(job.config, echo=lambda m: print(m, flush=True), stages=stages).run(only=list(job.only))
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_jobs(jobs: Sequence[Job], parallel: int, threads: int, stages: Any,
             started: Callable[[int], None], finished: Callable[[int, dict[str, str], float], None]) -> None:
    """Run ``jobs`` in order, ``parallel`` at a time; ``started(i)`` and
    ``finished(i, outcomes, seconds)`` report each. The first failure stops new
    starts, lets the running jobs finish, and is raised naming the job's log."""
    ctx = multiprocessing.get_context("spawn")  # never fork a process that holds torch's thread pools
    pending = list(range(len(jobs)))
    running: dict[Future, tuple[int, float]] = {}
    failure: tuple[int, BaseException] | None = None
    with ProcessPoolExecutor(max_workers=max(1, min(parallel, len(jobs))), mp_context=ctx, initializer=_init,
                             initargs=(threads,)) as pool:
        try:
            while pending or running:
                while pending and len(running) < parallel and failure is None:
                    i = pending.pop(0)
                    started(i)
                    running[pool.submit(run_logged, jobs[i], stages)] = (i, time.time())
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    i, t0 = running.pop(fut)
                    err = fut.exception()
                    if err is not None:
                        failure = failure or (i, err)
                        continue
                    finished(i, fut.result(), time.time() - t0)
        except BaseException:
            for fut in running:
                fut.cancel()
            raise
    if failure is not None:
        i, err = failure
        msg = str(err) if isinstance(err, Phi1Error) else f"{type(err).__name__}: {err}"
        raise Phi1Error(f"ablation: run {jobs[i].config.run.name} failed: {msg} (its log: {jobs[i].log}); "
                        "fix it and re-run: finished runs stay done") from err
