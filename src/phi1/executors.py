"""datatrove executors for corpus-scale stages (ingest, filter, decontam scans).

`build_executor` turns an `ExecutorConfig` into datatrove's
`LocalPipelineExecutor`, `SlurmPipelineExecutor` or `RayPipelineExecutor`, so
the same stage code runs on a laptop and on a cluster. `run_executors` runs a
chain of them (each depending on the previous one) with one progress bar per
step, and waits for Slurm jobs to finish so the stage can aggregate its
results before it returns.

Screen vs files: datatrove logs every task at INFO to the console. Here the
console only shows WARNING and above (set ``PHI1_DATATROVE_LOG=INFO`` to see
everything); the full DEBUG log of task N stays in
``<logging_dir>/logs/task_0000N.log``. A task that raises a `Phi1Error` (bad
input found by a reader) is not echoed with a traceback: the error reaches the
CLI, which prints its one line.

Resume: datatrove writes ``<logging_dir>/completions/<rank>`` when a task
finishes and skips those ranks when the same logging_dir is reused, so a stage
re-run after a crash only redoes unfinished tasks.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from datatrove.executor import LocalPipelineExecutor, RayPipelineExecutor, SlurmPipelineExecutor
from datatrove.utils.logging import setup_default_logger
from datatrove.utils.stats import PipelineStats
from loguru import logger

from phi1.errors import Phi1Error
from phi1.sections import ExecutorConfig

SLURM_JOBS_FILE = "phi1_slurm_jobs.json"


def _console_level() -> str:
    return os.environ.get("PHI1_DATATROVE_LOG", "WARNING").upper()


class _ConsoleGate:
    """A stderr stand-in that drops loguru records below a level.

    loguru hands a stream sink a ``Message`` (a str carrying ``.record``);
    anything else written (tqdm bars, prints) passes through untouched,
    unless ``passthrough=False`` (inside tasks: datatrove's own tqdm bars
    would interleave with the stage's progress).
    Records about a `Phi1Error` are dropped too: the CLI prints that error
    as one line, so a traceback here would only bury it.
    """

    def __init__(self, stream: Any, level: str, passthrough: bool = True):
        self._stream = stream
        self._min = logger.level(level).no
        self._passthrough = passthrough

    def write(self, message: str) -> int:
        record = getattr(message, "record", None)
        if record is None:
            return self._stream.write(message) if self._passthrough else len(message)
        if record["level"].no < self._min:
            return len(message)
        exc = record.get("exception")
        if exc is not None and exc.type is not None and issubclass(exc.type, Phi1Error):
            return len(message)
        # one line per record; a traceback stays in the task's log file
        return self._stream.write(f"{record['level'].name}: {record['message']}\n")

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return bool(getattr(self._stream, "isatty", lambda: False)())

    def fileno(self) -> int:
        return self._stream.fileno()


@contextlib.contextmanager
def quiet_datatrove_console(level: str | None = None, restore: bool = True,
                            passthrough: bool = True) -> Iterator[None]:
    """Show only `level`+ datatrove records on the console for the duration.

    Used around a whole executor run (main process) and around each task
    (worker process): datatrove's `add_task_logger` re-adds a console handler
    bound to whatever ``sys.stderr`` is when the task starts, so gating
    ``sys.stderr`` gates that handler too, while the task's log file keeps
    everything. With ``restore=False`` (inside worker processes) the console
    stays gated afterwards, which also hides the pool's per-task INFO lines.
    """
    level = level or _console_level()
    real = sys.stderr
    gate = _ConsoleGate(real, level, passthrough)
    logger.remove()
    logger.add(gate, level=level, colorize=False, format="{level}: {message}")
    sys.stderr = gate
    try:
        yield
    finally:
        sys.stderr = real
        if restore:
            setup_default_logger()
        else:
            logger.remove()
            logger.add(_ConsoleGate(real, level), level=level, colorize=False, format="{level}: {message}")


def _quiet_run_for_rank(base: type) -> Callable:
    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        with quiet_datatrove_console(restore=False, passthrough="PHI1_DATATROVE_LOG" in os.environ):
            return base._run_for_rank(self, rank, local_rank, node_rank)

    return _run_for_rank


# Modules every worker needs; imported once in the forkserver instead of in each worker.
_PRELOAD = ["phi1.executors", "datatrove.executor.local", "datatrove.pipeline.readers",
            "datatrove.pipeline.writers", "datatrove.pipeline.dedup"]


class PhiLocalExecutor(LocalPipelineExecutor):
    """datatrove's local executor with a quiet console (see module doc).

    Workers start from multiprocess's forkserver. It is told to import the
    pipeline's modules first, so each worker is a fork that already has
    datatrove and phi1 loaded (~1-2 s saved per worker and step on a small
    machine). The forkserver lives as long as the process, so this matters
    only for the first executor run; later ones reuse it.
    """

    _run_for_rank = _quiet_run_for_rank(LocalPipelineExecutor)

    def run(self):
        if self.workers != 1 and self.start_method == "forkserver":
            import multiprocess

            mods = [type(s).__module__ for s in self.pipeline if hasattr(s, "run")]
            preload = list(dict.fromkeys(["__main__", *_PRELOAD, *mods]))
            multiprocess.get_context("forkserver").set_forkserver_preload(preload)
        return super().run()


class PhiRayExecutor(RayPipelineExecutor):
    """Ray executor that connects to the configured cluster before running
    (datatrove expects ``ray.init()`` to have been called) and keeps the console quiet."""

    phi1_address = ""
    _run_for_rank = _quiet_run_for_rank(RayPipelineExecutor)

    def run(self):
        try:
            import ray
        except ImportError:
            raise Phi1Error("executor kind 'ray' needs ray: pip install 'phi1[ray]' (or ray>=2.9)") from None
        if not ray.is_initialized():
            ray.init(address=self.phi1_address or None, ignore_reinit_error=True)
        return super().run()


def build_executor(
    cfg: ExecutorConfig,
    pipeline: list,
    logging_dir: str | os.PathLike,
    job_name: str,
    depends: Any = None,
    tasks: int | None = None,
    workers: int | None = None,
):
    """A datatrove executor for `pipeline` as configured by `cfg`.

    `tasks`/`workers` override the config for steps whose width is fixed by
    the algorithm (e.g. MinHash clustering runs as exactly one task).
    `depends` is the executor that must finish first (same kind).
    """
    tasks = cfg.tasks if tasks is None else tasks
    workers = cfg.workers if workers is None else workers
    workers = min(workers, tasks) if workers != -1 else -1
    logging_dir = str(logging_dir)
    if cfg.kind == "local":
        return PhiLocalExecutor(
            pipeline,
            tasks=tasks,
            workers=workers,
            logging_dir=logging_dir,
            depends=depends,
        )
    if cfg.kind == "slurm":
        s = cfg.slurm
        if not s.partition:
            raise Phi1Error("executor kind 'slurm' needs executor.slurm.partition")
        return SlurmPipelineExecutor(
            pipeline,
            tasks=tasks,
            workers=workers,
            time=s.time,
            partition=s.partition,
            cpus_per_task=s.cpus_per_task,
            mem_per_cpu_gb=s.mem_per_cpu_gb,
            qos=s.qos,
            job_name=job_name,
            env_command=s.env_command or None,
            sbatch_args=dict(s.sbatch_args) or None,
            max_array_launch_parallel=s.max_array_launch_parallel,
            logging_dir=logging_dir,
            depends=depends,
        )
    if cfg.kind == "ray":
        r = cfg.ray
        ex = PhiRayExecutor(
            pipeline,
            tasks=tasks,
            workers=workers,
            logging_dir=logging_dir,
            depends=depends,
            cpus_per_task=r.cpus_per_task,
            mem_per_cpu_gb=r.mem_per_cpu_gb,
        )
        ex.phi1_address = r.address
        return ex
    raise Phi1Error(f"unknown executor kind {cfg.kind!r} (local, slurm, ray)")


# --------------------------------------------------------------------------- running


def completed_ranks(logging_dir: str | os.PathLike) -> set[int]:
    """Ranks whose datatrove completion marker exists (local or shared filesystem)."""
    d = Path(logging_dir) / "completions"
    if not d.is_dir():
        return set()
    return {int(p.name) for p in d.iterdir() if p.name.isdigit()}


def executor_logging_dir(executor: Any) -> str:
    return executor.logging_dir.path


class _Progress:
    """Progress over completed tasks of one executor, polled from the filesystem
    (tasks run in other processes or on other machines): a tqdm bar on a
    terminal, one line per step otherwise (logs stay readable)."""

    def __init__(self, executor: Any, desc: str, enabled: bool,
                 units: Callable[[], tuple[int, int, str]] | None = None):
        self.executor = executor
        self.desc = desc
        self.enabled = enabled
        self.units = units  # finer progress than tasks: () -> (done, total, unit)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar = None
        self._t0 = 0.0

    def _done(self) -> int:
        ranks = completed_ranks(executor_logging_dir(self.executor))
        return len(ranks & set(range(self.executor.world_size)))

    def _measure(self) -> tuple[int, int, str]:
        if self.units is not None:
            return self.units()
        return self._done(), self.executor.world_size, "task"

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            self._bar.n = min(self._measure()[0], self._bar.total)
            self._bar.refresh()

    def __enter__(self) -> "_Progress":
        self._t0 = time.time()
        sys.stdout.flush()  # stage log lines (stdout) before our stderr lines
        if self.enabled and sys.__stderr__.isatty():
            from tqdm import tqdm

            done, total, unit = self._measure()
            self._bar = tqdm(total=total, initial=min(done, total), desc=self.desc,
                             unit=unit, file=sys.__stderr__, dynamic_ncols=True)
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._bar.n = min(self._measure()[0], self._bar.total)
            self._bar.refresh()
            self._bar.close()
        elif self.enabled and exc_type is None:
            print(f"{self.desc}: {self._done()}/{self.executor.world_size} tasks "
                  f"({time.time() - self._t0:.1f}s)", file=sys.__stderr__, flush=True)


def run_executors(
    steps: Sequence[tuple[str, Any]],
    progress: bool = True,
    echo: Callable[[str], None] = print,
    slurm_poll_s: float = 30.0,
    first: int = 1,
    total: int | None = None,
) -> None:
    """Run a chain of executors built with ``depends=`` the previous one.

    `steps` is ``[(label, executor), ...]`` in dependency order; a step may
    carry a third item, ``() -> (done, total, unit)``, for a finer progress
    bar than tasks (e.g. files read). Local and Ray
    steps run one after the other, each with a progress bar; finished tasks of
    an earlier attempt are skipped by datatrove. Slurm steps are submitted at
    once (Slurm orders them through job dependencies) and this call waits
    until every task has its completion marker, so the caller can aggregate.
    A failing task becomes a one-line `Phi1Error` naming its log folder.
    `first`/`total` number the progress lines when a chain is run in parts.
    """
    if not steps:
        return
    if isinstance(steps[-1][1], SlurmPipelineExecutor):
        _run_slurm(steps, progress, echo, slurm_poll_s, first, total)
        return
    n = total or len(steps)
    for i, (label, ex, *units) in enumerate(steps, first):
        desc = f"{i}/{n} {label}"
        with quiet_datatrove_console(), _Progress(ex, desc, progress, units[0] if units else None):
            try:
                ex.run()
            except Phi1Error:
                raise
            except Exception as e:  # a task crashed: its log file has the traceback
                raise Phi1Error(
                    f"datatrove step {label!r} failed: {type(e).__name__}: {e} "
                    f"(task logs: {executor_logging_dir(ex)}/logs/)"
                ) from e
        missing = sorted(set(range(ex.world_size)) - completed_ranks(executor_logging_dir(ex)))
        if missing:
            raise Phi1Error(f"datatrove step {label!r}: tasks {missing[:10]} did not complete "
                            f"(task logs: {executor_logging_dir(ex)}/logs/)")


def _squeue_alive(job_ids: list[str]) -> bool:
    if not job_ids:
        return False
    try:
        out = subprocess.run(["squeue", "-h", "-o", "%A", "-j", ",".join(job_ids)],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return True  # cannot tell: keep waiting rather than resubmit duplicates
    return bool(out.stdout.strip())


def _run_slurm(steps: Sequence[tuple[str, Any]], progress: bool, echo: Callable[[str], None],
               poll_s: float, first: int = 1, total: int | None = None) -> None:
    last = steps[-1][1]
    steps = [(s[0], s[1]) for s in steps]
    jobs_file = Path(executor_logging_dir(last)) / SLURM_JOBS_FILE
    recorded: list[str] = []
    if jobs_file.exists():
        with contextlib.suppress(ValueError, OSError):
            recorded = [str(j) for j in json.loads(jobs_file.read_text())]
    if recorded and _squeue_alive(recorded):
        # An earlier (interrupted) phi1 process submitted these: wait, don't resubmit.
        echo(f"waiting for Slurm jobs submitted earlier: {', '.join(recorded)}")
    else:
        with quiet_datatrove_console():
            try:
                last.run()  # submits the whole chain through `depends`
            except (subprocess.CalledProcessError, OSError) as e:
                raise Phi1Error(f"submitting to Slurm failed: {e} (is sbatch on PATH? launch scripts: "
                                f"<step>/launch_script.slurm under {Path(executor_logging_dir(last)).parent})") from e
        ids = [str(ex.job_id) for _, ex in steps if getattr(ex, "job_id", None) not in (None, -1)]
        jobs_file.parent.mkdir(parents=True, exist_ok=True)
        jobs_file.write_text(json.dumps(ids))
        recorded = ids
        if ids:
            echo(f"submitted Slurm jobs {', '.join(ids)}; waiting for them (Ctrl-C is safe: re-run to keep waiting)")
    n = total or len(steps)
    for i, (label, ex) in enumerate(steps, first):
        with _Progress(ex, f"{i}/{n} {label}", progress):
            while set(range(ex.world_size)) - completed_ranks(executor_logging_dir(ex)):
                if not _squeue_alive(recorded):
                    time.sleep(poll_s)  # markers may lag the queue on shared filesystems
                    left = set(range(ex.world_size)) - completed_ranks(executor_logging_dir(ex))
                    if left:
                        raise Phi1Error(
                            f"Slurm jobs {', '.join(recorded)} ended but step {label!r} has "
                            f"{len(left)} unfinished tasks (logs: {executor_logging_dir(ex)}/slurm_logs/); "
                            "re-run to resubmit them"
                        )
                time.sleep(poll_s)


def merged_stats(logging_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Per-step stats of every finished task of an executor, summed.

    Read from ``stats/<rank>.json`` (written by each task), not from the
    run's ``stats.json``: after a resume the latter only covers the tasks run
    by the last attempt. Returns datatrove's JSON form: one dict per pipeline
    step with ``name`` and ``stats`` ({counter: {"total": ...}}).
    """
    total = PipelineStats()
    for p in sorted((Path(logging_dir) / "stats").glob("*.json")):
        with open(p) as f:
            total = total + PipelineStats.from_json(json.load(f))
    return json.loads(total.to_json()) if total.stats else []


def stat_totals(logging_dir: str | os.PathLike) -> dict[str, float]:
    """Every named counter of an executor, totalled over its steps and finished tasks.

    Counter names shared by several steps (datatrove's generic ``total``,
    ``forwarded``, ``dropped``) are summed too, so give the ones you read
    unique names (``dropped_<reason>``, ``<label>_docs``).
    """
    out: dict[str, float] = {}
    for step in merged_stats(logging_dir):
        for key, val in step.get("stats", {}).items():
            total = val.get("total", 0) if isinstance(val, dict) else val
            if isinstance(total, (int, float)):
                out[key] = out.get(key, 0) + total
    return out
