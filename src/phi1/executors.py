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
import shlex
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from datatrove.executor import LocalPipelineExecutor, RayPipelineExecutor, SlurmPipelineExecutor
from datatrove.utils.logging import setup_default_logger
from datatrove.utils.stats import PipelineStats
from loguru import logger

from phi1.errors import Phi1Error
from phi1.files import write_atomic, write_json_atomic
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
    (datatrove expects ``ray.init()`` to have been called) and keeps the console quiet.

    datatrove warns, for every executor built, that a local logging folder must
    be shared by all nodes; phi1 builds several per stage, so it says that once,
    and only when the cluster really has more than one node.
    """

    phi1_address = ""
    _run_for_rank = _quiet_run_for_rank(RayPipelineExecutor)

    def run(self):
        try:
            import ray
        except ImportError:
            raise Phi1Error("executor kind 'ray' needs ray: pip install 'phi1[ray]' (or ray>=2.9)") from None
        if not ray.is_initialized():
            where = self.phi1_address or "a new local Ray instance"
            _check_ray_address(self.phi1_address)
            try:
                ray.init(address=self.phi1_address or None, ignore_reinit_error=True)
            except Exception as e:  # ConnectionError, ValueError, RuntimeError, depending on the version
                raise Phi1Error(f"cannot start or reach Ray at {where} ([*.executor.ray] address): "
                                f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
        if self.depends is None and self.logging_dir.is_local():
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            if len(nodes) > 1:
                logger.warning(f"the Ray cluster has {len(nodes)} nodes but {self.logging_dir.path} is on a local "
                               "filesystem: put run.root on storage every node sees")
        return super().run()


def _check_ray_address(address: str, timeout_s: float = 5.0) -> None:
    """Fail in one line when nothing listens at a ``host:port`` Ray address
    (ray.init would retry for minutes without a word)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "" (local), "auto": Ray finds the cluster itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise Phi1Error(f"no Ray cluster at {address} ([*.executor.ray] address): {e.strerror or e}; "
                        "start one with `ray start --head` or fix the address") from None


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
        return PhiSlurmExecutor(
            pipeline,
            tasks=tasks,
            workers=workers,
            time=s.time,
            partition=s.partition,
            cpus_per_task=s.cpus_per_task,
            mem_per_cpu_gb=s.mem_per_cpu_gb,
            qos=s.qos,
            job_name=job_name,
            env_command=s.env_command or default_env_command(),
            sbatch_args=dict(s.sbatch_args) or None,
            max_array_launch_parallel=s.max_array_launch_parallel,
            logging_dir=logging_dir,
            depends=depends,
            poll_s=s.poll_s,
        )
    if cfg.kind == "ray":
        r = cfg.ray
        logger.disable("datatrove.executor.ray")  # its shared-filesystem warning: see PhiRayExecutor
        try:
            ex = PhiRayExecutor(
                pipeline,
                tasks=tasks,
                workers=workers,
                logging_dir=logging_dir,
                depends=depends,
                cpus_per_task=r.cpus_per_task,
                mem_per_cpu_gb=r.mem_per_cpu_gb,
            )
        finally:
            logger.enable("datatrove.executor.ray")
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
    until every task has its completion marker, so the caller can aggregate
    (polling every second at first, then up to `[*.executor.slurm] poll_s`).
    A failing task becomes a one-line `Phi1Error` naming its log folder.
    `first`/`total` number the progress lines when a chain is run in parts.
    """
    if not steps:
        return
    if isinstance(steps[-1][1], SlurmPipelineExecutor):
        _run_slurm(steps, progress, echo, first, total)
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


# --------------------------------------------------------------------------- Slurm


class SubmittedJobs:
    """`job_id_retriever` for datatrove's Slurm executor: reads the job id from
    sbatch's answer as datatrove does by default, and keeps every id submitted
    (a step over `max_array_size` tasks is several arrays), so phi1 can wait
    for, report on and cancel exactly its own jobs."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def __call__(self, sbatch_output: str) -> str:
        job_id = sbatch_output.split()[-1]
        self.ids.append(job_id)
        return job_id


class PhiSlurmExecutor(SlurmPipelineExecutor):
    """datatrove's Slurm executor that records its job ids (`submitted`) and
    carries how often the waiting phi1 process polls (`poll_s`).

    It submits no stats-merging job: phi1 writes ``stats.json`` itself once
    every task is done (`write_stats`). datatrove's merging job would start
    after phi1 has returned and renamed the stage's ``.partial`` folder, and
    fail on the old paths; it also costs a job per step.
    """

    def __init__(self, *args: Any, poll_s: float = 30.0, **kwargs: Any):
        self.submitted = SubmittedJobs()
        super().__init__(*args, job_id_retriever=self.submitted, **kwargs)
        self.poll_s = poll_s

    def launch_merge_stats(self) -> None:
        pass


def default_env_command() -> str:
    """What a Slurm task runs first when `env_command` is empty: put this
    interpreter's bin folder first on PATH, so `launch_pickled_pipeline` is the
    one from the environment phi1 runs in (it must be on storage the nodes see)."""
    return f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH"


@dataclass
class SlurmQueue:
    """Our jobs still in Slurm's queue, one (state, reason) per array task;
    `known` is False when squeue could not answer (then nothing is decided)."""

    tasks: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    known: bool = True

    @property
    def stuck(self) -> list[str]:
        """Jobs that can never start, all of them or none: a job of the chain
        failed or was cancelled (`DependencyNeverSatisfied`; Slurm keeps such
        jobs pending unless the cluster sets kill_invalid_depend) and nothing of
        ours runs or waits for resources, so everything left waits, directly or
        through another pending job, on the one that failed."""
        waiting = {"Dependency", "DependencyNeverSatisfied"}
        tasks = [t for ts in self.tasks.values() for t in ts]
        if any(st != "PENDING" or r not in waiting for st, r in tasks):
            return []
        return sorted(self.tasks) if any(r == "DependencyNeverSatisfied" for _, r in tasks) else []

    @property
    def live(self) -> list[str]:
        return sorted(set(self.tasks) - set(self.stuck))


def slurm_queue(job_ids: Sequence[str]) -> SlurmQueue:
    """`squeue` for the given job ids (array tasks expanded)."""
    if not job_ids:
        return SlurmQueue()
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%F|%T|%r", "-j", ",".join(job_ids)],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return SlurmQueue(known=False)
    if out.returncode != 0:  # every id unknown to Slurm: all finished long ago
        return SlurmQueue() if "Invalid job id" in out.stderr else SlurmQueue(known=False)
    q = SlurmQueue()
    wanted = set(job_ids)
    for line in out.stdout.splitlines():
        job, state, reason = (line.strip().split("|") + ["", ""])[:3]
        if job in wanted:
            q.tasks.setdefault(job, []).append((state, reason))
    return q


def scancel(job_ids: Sequence[str]) -> None:
    if job_ids:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(["scancel", *job_ids], capture_output=True, timeout=60)


def _array_indices(spec: str) -> list[int]:
    """'3' -> [3]; '[0-2,5]' (a cancelled pending range in sacct) -> [0, 1, 2, 5]."""
    out: list[int] = []
    for part in spec.strip("[]").split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit():
            out += range(int(lo), int(hi or lo) + 1)
    return out


def slurm_task_states(job_ids: Sequence[str], ranks_to_run: Sequence[int]) -> dict[int, str]:
    """Rank -> Slurm's final state for the array tasks of `job_ids` ('FAILED
    (exit 1:0)', 'CANCELLED by 0', 'OUT_OF_MEMORY', 'TIMEOUT' ...) from `sacct`;
    array index i ran rank ranks_to_run[i]. Empty where accounting is off."""
    if not job_ids:
        return {}
    try:
        out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State,ExitCode", "-j", ",".join(job_ids)],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    states: dict[int, str] = {}
    for line in out.stdout.splitlines() if out.returncode == 0 else []:
        job, state, code = (line.split("|") + ["", ""])[:3]
        _, _, index = job.partition("_")
        detail = state + (f" (exit {code})" if state == "FAILED" else "")
        for i in _array_indices(index or "0"):
            if i < len(ranks_to_run):
                states[ranks_to_run[i]] = detail
    return states


class _Backoff:
    """Poll every second at first, then less and less often, up to `cap` seconds."""

    def __init__(self, cap: float):
        self.cap = cap
        self.next = min(1.0, cap)

    def sleep(self) -> None:
        time.sleep(self.next)
        self.next = min(self.cap, self.next * 1.5)


def _read_jobs_file(path: Path) -> dict[str, list[str]]:
    with contextlib.suppress(ValueError, OSError, AttributeError):
        data = json.loads(path.read_text())
        if isinstance(data, list):  # older phi1: one list for the whole chain
            return {"": [str(j) for j in data]}
        return {str(k): [str(j) for j in v] for k, v in data.items()}
    return {}


def _missing(ex: Any) -> list[int]:
    return sorted(set(range(ex.world_size)) - completed_ranks(executor_logging_dir(ex)))


def _ranks_run(ex: Any) -> list[int]:
    with contextlib.suppress(ValueError, OSError):
        return [int(r) for r in json.loads((Path(executor_logging_dir(ex)) / "ranks_to_run.json").read_text())]
    return list(range(ex.world_size))


def _run_slurm(steps: Sequence[tuple[str, Any]], progress: bool, echo: Callable[[str], None],
               first: int = 1, total: int | None = None) -> None:
    """Submit the chain (or find the jobs an earlier phi1 process submitted), then
    wait until every task of every step has its completion marker.

    A job that failed or was cancelled leaves the steps after it pending forever
    (Slurm's `DependencyNeverSatisfied`): phi1 cancels those, says which tasks
    did not finish and why (sacct), and a re-run resubmits only those tasks and
    the steps after them.
    """
    steps = [(s[0], s[1]) for s in steps]
    last = steps[-1][1]
    poll_s = float(getattr(last, "poll_s", 30.0))
    jobs_file = Path(executor_logging_dir(last)) / SLURM_JOBS_FILE
    by_step = _read_jobs_file(jobs_file)
    recorded = [j for ids in by_step.values() for j in ids]
    queue = slurm_queue(recorded)
    if queue.stuck:
        scancel(queue.stuck)
        echo(f"cancelled Slurm jobs {', '.join(queue.stuck)} of an earlier attempt: they waited on a job that "
             "failed or was cancelled, so they could never start")
    if queue.live or not queue.known:
        # An earlier (interrupted) phi1 process submitted these: wait, don't resubmit.
        echo(f"waiting for Slurm jobs submitted earlier: {', '.join(queue.live or recorded)}")
    else:
        try:
            with quiet_datatrove_console():
                last.run()  # submits the whole chain through `depends`
        except FileNotFoundError as e:
            raise Phi1Error(f"executor kind 'slurm' needs sbatch on PATH ({e.filename or 'sbatch'} not found): "
                            "run phi1 on a Slurm login node, or try scripts/slurm-up for a local cluster") from e
        except (subprocess.CalledProcessError, OSError) as e:
            label, ex = next(((lb, x) for lb, x in steps if not x.submitted.ids), steps[-1])
            raise Phi1Error(f"sbatch refused Slurm step {label!r} ({e}; sbatch's own message is above): check "
                            f"[*.executor.slurm] (partition, time, memory, sbatch_args); launch script: "
                            f"{executor_logging_dir(ex)}/launch_script.slurm") from e
        finally:  # what was submitted, even when a later sbatch failed: a re-run must not submit it twice
            by_step = {label: list(getattr(ex, "submitted", SubmittedJobs()).ids) for label, ex in steps}
            recorded = [j for ids in by_step.values() for j in ids]
            jobs_file.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(jobs_file, by_step)
        if recorded:
            echo(f"submitted Slurm jobs {', '.join(recorded)}; waiting for them (Ctrl-C is safe: re-run to keep waiting)")
    n = total or len(steps)
    for i, (label, ex) in enumerate(steps, first):
        backoff = _Backoff(poll_s)
        with _Progress(ex, f"{i}/{n} {label}", progress):
            while _missing(ex):
                queue = slurm_queue(recorded)
                if queue.known and not queue.live:
                    _after_queue_emptied(label, ex, queue, by_step.get(label, recorded), poll_s)
                backoff.sleep()
        write_stats(executor_logging_dir(ex))


def _after_queue_emptied(label: str, ex: Any, queue: SlurmQueue, step_jobs: list[str], grace_s: float) -> None:
    """None of our jobs can run any more but `ex` has unfinished tasks: wait a
    little for completion markers (shared filesystems show them late), then
    cancel the jobs that can never start and raise a one-line error."""
    deadline = time.time() + grace_s
    while _missing(ex) and time.time() < deadline:
        time.sleep(min(1.0, grace_s))
    missing = _missing(ex)
    if not missing:
        return
    scancel(queue.stuck)
    states = slurm_task_states(step_jobs, _ranks_run(ex))
    why = ", ".join(f"task {r} {states[r]}" for r in missing[:10] if r in states)
    raise Phi1Error(
        f"Slurm step {label!r}: {len(missing)} of {ex.world_size} tasks did not finish "
        f"({why or 'tasks ' + str(missing[:10])}; logs: {executor_logging_dir(ex)}/slurm_logs/); "
        + (f"cancelled the {len(queue.stuck)} later jobs waiting on it; " if queue.stuck else "")
        + "re-run the same command to resubmit only the unfinished tasks"
    )


def _summed_stats(logging_dir: str | os.PathLike) -> PipelineStats:
    total = PipelineStats()
    for p in sorted((Path(logging_dir) / "stats").glob("*.json")):
        with open(p) as f:
            total = total + PipelineStats.from_json(json.load(f))
    return total


def merged_stats(logging_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Per-step stats of every finished task of an executor, summed.

    Read from ``stats/<rank>.json`` (written by each task), not from the
    run's ``stats.json``: after a resume the latter only covers the tasks run
    by the last attempt. Returns datatrove's JSON form: one dict per pipeline
    step with ``name`` and ``stats`` ({counter: {"total": ...}}).
    """
    total = _summed_stats(logging_dir)
    return json.loads(total.to_json()) if total.stats else []


def write_stats(logging_dir: str | os.PathLike) -> None:
    """``<logging_dir>/stats.json``: every task's stats summed, as datatrove's
    local executor leaves it."""
    write_atomic(Path(logging_dir) / "stats.json", _summed_stats(logging_dir).to_json())


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


def threads_per_task(ex_cfg: Any) -> int:
    """CPU threads one datatrove task may use (torch, rapidfuzz) without
    oversubscribing its machine: the task's CPU allocation on Slurm and Ray,
    locally the cores shared among the tasks that run at once."""
    if ex_cfg.kind == "slurm":
        return ex_cfg.slurm.cpus_per_task
    if ex_cfg.kind == "ray":
        return ex_cfg.ray.cpus_per_task
    parallel = ex_cfg.tasks if ex_cfg.workers == -1 else min(ex_cfg.workers, ex_cfg.tasks)
    return max(1, (os.cpu_count() or 1) // max(1, parallel))
