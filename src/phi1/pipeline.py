"""The run engine: run directory, manifests, staleness, skip/resume, ranks.

A run lives in ``<run.root>/<run.name>/``. Each stage writes into
``<stage>.partial/`` and, when it finishes, writes ``manifest.json`` there and
renames the folder to ``<stage>/``: a crash never leaves a half output that
looks finished. A re-run after a crash with the same *identity* (the hashed
config fields and the upstream run_ids) reuses ``<stage>.partial/``
(``ctx.resumed`` is true), so datatrove's completion markers and training
checkpoints inside it are picked up, whatever the execution fields (workers,
devices, parallelism, logging) say now.

A stage is *done* when its manifest's config hash and input fingerprints match
the current config and the current upstream manifests, and it reported no
failed items; otherwise it is *stale* (or *pending* when it never finished).
Re-running a stage gives it a new ``run_id``, which makes everything
downstream stale.

Under torchrun every rank runs the pipeline; rank 0 alone decides, writes
manifests and renames folders, and the other ranks wait for each stage to be
committed by rank 0 before they look at the next one.

Which stages exist is `phi1.registry`; what each reads is `phi1.dataflow`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from phi1.config import PipelineConfig
from phi1.dataflow import Graph, dataset_ref, external_fingerprint
from phi1.errors import Phi1Error, SkipStage
from phi1.files import write_atomic, write_json_atomic
from phi1.manifest import MANIFEST, library_versions, read_manifest
from phi1.registry import StageSpec, all_stages, get_stage, load_entry
from phi1.report import paper_reference, write_report
from phi1.stage import StageContext, StageResult

ATTEMPT = ".attempt.json"
def _env_number(name: str, default: float, kind: type = float) -> Any:
    """A number from the environment; anything else is one error line naming the variable."""
    raw = os.environ.get(name, "")
    if not raw.strip():
        return kind(default)
    try:
        value = kind(raw)
    except ValueError:
        raise Phi1Error(f"environment variable {name}={raw!r} is not {'an integer' if kind is int else 'a number'}") from None
    if value != value or value < 0 or value == float("inf"):
        raise Phi1Error(f"environment variable {name}={raw!r} must be a finite number >= 0")
    return value


RANK_WAIT_S = 7 * 24 * 3600.0  # a stage may train for days; PHI1_RANK_WAIT_S overrides (read when used)

__all__ = ["ATTEMPT", "MANIFEST", "Pipeline", "RunDirectory", "StageStatus", "read_manifest"]


# --------------------------------------------------------------------------- status


@dataclass
class StageStatus:
    name: str
    state: str  # done | stale | pending | skipped (this config skips it)
    reason: str = ""
    manifest: dict[str, Any] = field(default_factory=dict)
    # finished and usable, but with failed items a re-run retries: stale for
    # itself, yet its outputs may feed the stages after it in this run
    retry: bool = False


class RunDirectory:
    """The folder of one run and the state of its stages."""

    def __init__(self, config: PipelineConfig, stages: tuple[StageSpec, ...] | None = None):
        self.config = config
        self.stages = stages if stages is not None else all_stages()
        self.graph = Graph(config, self.stages)
        self.path = config.run_dir

    def spec(self, name: str) -> StageSpec:
        return get_stage(name, self.stages)

    def stage_dir(self, name: str) -> Path:
        return self.path / name

    def partial_dir(self, name: str) -> Path:
        return self.path / f"{name}.partial"

    def upstream(self, name: str) -> tuple[str, ...]:
        return self.graph.plan(name).upstream

    def identity(self, spec: StageSpec) -> dict[str, Any]:
        """What a finished output of ``spec`` must match to be current: the hash
        of its identity fields and the fingerprints of what it reads."""
        fp: dict[str, str] = {}
        for up in self.upstream(spec.name):
            fp[up] = read_manifest(self.stage_dir(up)).get("run_id", "")
        for e in self.graph.plan(spec.name).externals:
            fp[f"external:{e.key}:{e.ref}"] = external_fingerprint(e.path)
        if spec.fingerprint:
            fp["external"] = load_entry(spec.fingerprint)(self.config)
        return {"config_hash": self.config.section_hash(*spec.sections), "inputs": fp}

    def context(self, name: str, work_dir: Path | None = None, *, resumed: bool = False,
                echo: Callable[[str], None] = print, rank: int = 0, world_size: int = 1) -> StageContext:
        """The `StageContext` stage ``name`` gets in this run: its section, its
        resolved inputs and outputs; ``work_dir`` defaults to ``<stage>.partial``.
        (Also how a test or a notebook calls one stage function directly.)"""
        spec = self.spec(name)
        return StageContext(self.config, name, self.path, work_dir or self.partial_dir(name), resumed, rank,
                            world_size, echo, spec.section_name, self.graph.datasets(name, self.path),
                            {o.name: o for o in spec.outputs(self.config)})

    def statuses(self) -> list[StageStatus]:
        self._recover_unless_running()
        out: dict[str, StageStatus] = {}
        for name in self.graph.order:
            out[name] = self.status(self.spec(name), out)
        return list(out.values())

    def status(self, spec: StageSpec, upstream: dict[str, StageStatus] | None = None) -> StageStatus:
        m = read_manifest(self.stage_dir(spec.name))
        skip = spec.skip_reason(self.config)
        if skip:
            return StageStatus(spec.name, "skipped", skip, m)
        if m.get("status") != "done":
            return StageStatus(spec.name, "pending", "never finished")
        ident = self.identity(spec)
        if m.get("config_hash") != ident["config_hash"]:
            return StageStatus(spec.name, "stale", f"[{', '.join(spec.sections)}] changed", m)
        upstream = upstream or {}
        recorded = m.get("inputs", {})
        for up in self.upstream(spec.name):
            st = upstream.get(up)
            if st is not None and st.state not in ("done",):
                return StageStatus(spec.name, "stale", f"upstream {up!r} is {st.state}", m)
            if recorded.get(up) != ident["inputs"].get(up):
                why = "was re-run" if up in recorded else "is a new input"
                return StageStatus(spec.name, "stale", f"upstream {up!r} {why}", m)
        gone = [k for k in recorded if not k.startswith("external") and k not in ident["inputs"]]
        if gone:
            return StageStatus(spec.name, "stale", f"no longer reads {', '.join(map(repr, gone))}", m)
        for key, now in ident["inputs"].items():
            if key.startswith("external") and recorded.get(key) != now:
                return StageStatus(spec.name, "stale", "its input files changed", m)
        gone = [f"{ref} ({o.get('path')})" for ref, o in (m.get("outputs") or {}).items()
                if isinstance(o, dict) and o.get("exists") and not (self.stage_dir(spec.name) / str(o.get("path"))).exists()]
        if gone:
            return StageStatus(spec.name, "stale", f"its output {', '.join(gone)} is missing", m)
        failed = int(m.get("failed", 0) or 0)
        if failed:
            return StageStatus(spec.name, "stale", f"{failed} failed item(s): a re-run retries exactly those", m,
                               retry=True)
        return StageStatus(spec.name, "done", "", m)

    def preflight(self, names: list[str] | tuple[str, ...] | None = None) -> None:
        """Inputs outside the run that a stage would otherwise find missing or
        broken only when it starts, after the stages before it ran (hours of
        training before `generate` reads its problems): checked before any work,
        as a config error naming the key."""
        from phi1.config import ConfigError
        from phi1.errors import InputError
        from phi1.evaluate.problems import load_problems

        checked: set[str] = set()
        for name in names if names is not None else self.graph.order:
            spec = self.spec(name)
            if spec.skip_reason(self.config):
                continue
            section = self.config.section(spec.section_name)
            problems = getattr(section, "problems", None)
            if isinstance(problems, str) and problems not in checked:
                try:
                    load_problems(problems)
                except InputError as e:
                    err = ConfigError(f"{spec.section_name}.problems = {problems!r}: {e}")
                    err.key = f"{spec.section_name}.problems"
                    raise err from None
                checked.add(problems)
            # datasets one stage reads together must be about one problem set (execute's Table 3
            # joins generate's task ids with decontam's: HumanEval samples vs MBPP flags join nothing)
            sets: dict[str, str] = {}
            for up in self.graph.plan(name).upstream:
                spec_up = self.spec(up)
                up_problems = getattr(self.config.section(spec_up.section_name), "problems", None)
                if isinstance(up_problems, str):
                    sets[f"{spec_up.section_name}.problems"] = _problem_set(up_problems)
            if len(set(sets.values())) > 1:
                (k1, v1), (k2, v2) = list(sets.items())[:2]
                raise _keyed(k2, f"{name} reads datasets about different problem sets: {k1} = {v1!r}, "
                                 f"{k2} = {v2!r}; give both the same")
            for e in self.graph.plan(name).externals:
                local = e.ref.startswith(("/", "./", "../", "~")) or e.ref in (".", "..")
                path = Path(e.path).expanduser()
                if local and not path.exists():
                    raise _keyed(f"{spec.section_name}.{e.key}", f"{spec.section_name}.{e.key}: {e.ref!r} does not exist (give a folder "
                                      f"that does, a dataset of this run, or a hub name such as microsoft/phi-1)")
                if e.kind == "model" and path.is_dir() and not (path / "config.json").is_file():
                    raise _keyed(f"{spec.section_name}.{e.key}", f"{spec.section_name}.{e.key}: {e.ref!r} is a folder but not a model folder "
                                      "(no config.json): give a Hugging Face model folder, a dataset of this run, "
                                      "or a hub name")

    def _recover_unless_running(self) -> None:
        """`recover`, but only when no phi1 process holds the run (`phi1 stages`
        during a run must not finish that run's swap under it)."""
        lock = self.path / ".lock"
        if not lock.is_file():
            self.recover()
            return
        try:
            fh = open(lock, "a")
        except OSError:
            return  # read-only run folder: nothing to repair from here
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            self.recover()

    def recover(self) -> None:
        """Finish a swap interrupted between its two renames; drop stale leftovers."""
        if not self.path.exists():
            return
        for spec in self.stages:
            final, partial = self.stage_dir(spec.name), self.partial_dir(spec.name)
            if read_manifest(partial).get("status") != "done":
                continue
            # a committed attempt (its manifest written) is the newest output of the stage, whether the
            # crash came before the first rename (the previous output still in place) or between the two
            if final.exists():
                os.replace(final, self.path / f"{spec.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(partial, final)
            (final / ATTEMPT).unlink(missing_ok=True)
        for old in self.path.glob("*.old-*"):
            shutil.rmtree(old, ignore_errors=True)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fh = open(self.path / ".lock", "a+")  # not "w": the holder's pid in it stays readable
        except FileExistsError:
            raise Phi1Error(f"run folder {self.path} exists and is not a folder (or its parent is a file): "
                            "choose another run.root / run.name") from None
        except OSError as e:
            what = "write in" if self.path.is_dir() else "create"
            raise Phi1Error(f"cannot {what} the run folder {self.path}: {e.strerror or e}") from None
        try:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Phi1Error(f"another phi1 process is running in {self.path}{_lock_holders(fh)}") from None
            with contextlib.suppress(OSError):
                fh.truncate(0)
                fh.write(f"{os.getpid()}\n")
                fh.flush()
            yield
        finally:
            fh.close()


def _problem_set(spec: str) -> str:
    """A problems spec in one spelling: 'humaneval', or 'mbpp:' / '' + the resolved path."""
    text = spec.strip()
    if text.lower() == "humaneval":
        return "humaneval"
    prefix = "mbpp:" if text.lower().startswith("mbpp:") else ""
    return prefix + str(Path(text[len(prefix):]).expanduser().resolve())


def _lock_holders(fh: Any) -> str:
    """Who holds a run's lock, for the error line: the pid the holder wrote, and
    (Linux) every process with the lock file open — a worker left running after
    its phi1 was killed (SIGKILL, the OOM killer) keeps the lock, and the user
    needs its pid to stop it."""
    pids: list[int] = []
    with contextlib.suppress(OSError, ValueError):
        fh.seek(0)
        pids.append(int(fh.read().split()[0]))
    target = os.path.realpath(fh.name)
    with contextlib.suppress(OSError):
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid() or int(proc.name) in pids:
                continue
            with contextlib.suppress(OSError):
                if any(os.readlink(fd) == target for fd in (proc / "fd").iterdir()):
                    pids.append(int(proc.name))
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        alive.append(pid)
    if not alive:
        return ""
    listed = " ".join(map(str, alive))
    return (f" (pid {listed}); wait for it to finish, or if its phi1 was killed and it is left over, stop it: "
            f"kill {listed}")


def _keyed(key: str, message: str) -> Exception:
    from phi1.config import ConfigError

    err = ConfigError(message)
    err.key = key
    return err


def describe_attempt(partial: Path) -> str:
    """What an interrupted attempt holds, for the line that says it is discarded."""
    files = [p for p in partial.rglob("*") if p.is_file() and p.name != ATTEMPT]
    size = sum(p.stat().st_size for p in files)
    ckpts = sorted({p.name for p in partial.rglob("step-*") if p.is_dir()})
    what = f"{len(files)} files, {size / 1e6:.1f} MB"
    if ckpts:
        what += f", {len(ckpts)} checkpoint(s) up to {ckpts[-1]}"
    return what


# --------------------------------------------------------------------------- running


def _dist_env() -> tuple[int, int]:
    rank, world = _env_number("RANK", 0, int), _env_number("WORLD_SIZE", 1, int)
    if not (world >= 1 and rank < world):
        raise Phi1Error(f"environment variables RANK={rank} and WORLD_SIZE={world} do not fit (0 <= RANK < WORLD_SIZE)")
    return rank, world


class Pipeline:
    """Runs stages in data-flow order, skipping the current ones."""

    def __init__(self, config: PipelineConfig, echo: Callable[[str], None] = print,
                 stages: tuple[StageSpec, ...] | None = None):
        self.config = config
        self.rundir = RunDirectory(config, stages)
        self.stages = self.rundir.stages
        self.graph = self.rundir.graph
        self.echo = echo
        self.rank, self.world_size = _dist_env()
        self.ranks: RankLog | None = None

    def _say(self, msg: str) -> None:
        if self.rank == 0:
            self.echo(msg)

    def select(self, only: list[str] | None, start: str | None) -> list[StageSpec]:
        names = [get_stage(n, self.stages).name for n in (only or [])]
        order = self.graph.order
        if start:
            start = get_stage(start, self.stages).name
        if names:
            return [self.rundir.spec(n) for n in order if n in names]
        if start:
            return [self.rundir.spec(n) for n in order[order.index(start):]]
        return [self.rundir.spec(n) for n in order]

    def run(self, only: list[str] | None = None, start: str | None = None, force: bool = False) -> dict[str, str]:
        """Run the selected stages; returns {stage: outcome}."""
        selected = self.select(only, start)
        forced = {s.name for s in selected} if force else set()
        if start:
            forced.add(get_stage(start, self.stages).name)
        outcomes: dict[str, str] = {}
        t0 = time.time()
        lock = self.rundir.lock() if self.rank == 0 else contextlib.nullcontext()
        self.ranks = RankLog(self.rundir.path, self.rank) if self.world_size > 1 else None
        if self.rank == 0:
            self.rundir.preflight([s.name for s in selected])
        with lock:
            if self.rank == 0:
                self.rundir.recover()
                if self.ranks:
                    self.ranks.start()
            self._say(f"run {self.config.run.name}: {self.rundir.path}  (config {self.config.source})")
            skipped: set[str] = set()
            ok = False
            try:
                for spec in selected:
                    if self.rank == 0:
                        outcomes[spec.name] = self._run_one(spec, spec.name in forced, skipped)
                    else:
                        outcomes[spec.name] = self._follow(spec)
                ok = True
            finally:
                if self.ranks:
                    self.ranks.finish(self.world_size, wait=ok)
        self._print_summary(outcomes, time.time() - t0)
        return outcomes

    def _decided(self, spec: StageSpec, outcome: str, message: str) -> str:
        """Rank 0: say what happens to ``spec`` (and tell the other ranks)."""
        self._say(message)
        if self.ranks:
            self.ranks.post(stage=spec.name, decision=outcome)
        return outcome

    def _run_one(self, spec: StageSpec, forced: bool, skipped: set[str]) -> str:
        upstream = self.rundir.upstream(spec.name)
        blocked = [u for u in upstream if u in skipped]
        if blocked:
            skipped.add(spec.name)
            return self._decided(spec, "skipped", f"{spec.name}: skipped (needs {', '.join(blocked)})")
        reason = spec.skip_reason(self.config)
        if reason:
            skipped.add(spec.name)
            return self._decided(spec, "skipped", f"{spec.name}: skipped: {reason}")
        bad = []
        for u in upstream:
            st_up = self.rundir.status(self.rundir.spec(u))
            if st_up.state != "done" and not st_up.retry:
                bad.append(u)
        if bad:
            message = (f"stage {spec.name!r} needs {', '.join(bad)} to be done first "
                       f"(run `phi1 run {self.config.source} --from {bad[0]}`)")
            if self.ranks:
                self.ranks.post(stage=spec.name, decision="error", message=message)
            raise Phi1Error(message)
        st = self.rundir.status(spec)
        if st.state == "done" and not forced:
            secs = st.manifest.get("timings", {}).get("seconds", 0)
            return self._decided(spec, "current", f"{spec.name}: up to date (finished "
                                 f"{st.manifest.get('finished_at', '?')}, {secs:.1f}s), skipping")
        why = "forced" if forced and st.state == "done" else st.reason
        try:
            self.run_stage(spec, why, forced=forced)
        except SkipStage as e:
            partial = self.rundir.partial_dir(spec.name)
            if partial.exists() and [p.name for p in partial.iterdir()] == [ATTEMPT]:
                shutil.rmtree(partial)  # nothing to resume: leave no trace
            skipped.add(spec.name)
            self._say(f"{spec.name}: skipped: {e}")
            if self.ranks:
                self.ranks.post(stage=spec.name, outcome="skipped")
            return "skipped"
        return "ran"

    def _follow(self, spec: StageSpec) -> str:
        """Ranks other than 0: do what rank 0 decided, when rank 0 decided it."""
        assert self.ranks is not None
        entry = self.ranks.wait(spec.name, "decision")
        if entry["decision"] == "error":
            raise Phi1Error(entry.get("message", f"rank 0 could not run {spec.name!r}"))
        if entry["decision"] != "run":
            return entry["decision"]
        rd = self.rundir
        ctx = rd.context(spec.name, rd.partial_dir(spec.name), resumed=bool(entry.get("resumed")), echo=self.echo,
                         rank=self.rank, world_size=self.world_size)
        try:
            spec.load()(ctx)
        except SkipStage:
            pass  # rank 0 says whether the stage was skipped
        self.ranks.returned(spec.name)
        # Wait until rank 0 has committed the stage, so the next stage's inputs are there.
        done = self.ranks.wait(spec.name, "outcome")
        return "ran" if done["outcome"] == "committed" else done["outcome"]

    def _print_summary(self, outcomes: dict[str, str], seconds: float) -> None:
        if self.rank != 0:
            return
        self._say("")
        self._say(f"summary — run {self.config.run.name} ({seconds:.1f}s)")
        for name, outcome in outcomes.items():
            m = read_manifest(self.rundir.stage_dir(name))
            secs = m.get("timings", {}).get("seconds")
            when = "this run" if outcome == "ran" else ("earlier" if outcome == "current" else outcome)
            head = f"  {name:<10} {when:<8}" + (f" {secs:8.1f}s" if secs is not None and outcome != "skipped" else "")
            self._say(head)
            if outcome in ("ran", "current"):
                for line in m.get("summary", []):
                    self._say(f"      {line}")
                ref = paper_reference(name, m)  # the paper's figure beside ours: what scale this run is at
                if ref:
                    self._say(f"      {ref}")
        self._say(f"outputs: {self.rundir.path}/<stage>/  (manifest.json in each)")
        if self.config.run.report and any(o in ("ran", "current") for o in outcomes.values()):
            try:
                self._say(f"report: {write_report(self.rundir.path)}")
            except Exception as e:  # the report is a view of finished work: it never fails the run
                self._say(f"report: not written ({type(e).__name__}: {e}); `phi1 report {self.rundir.path}` "
                          "tries again")

    # ------------------------------------------------------------------ one stage

    def _prepare(self, spec: StageSpec, attempt: dict[str, Any], why: str, forced: bool) -> bool:
        """Rank 0: reuse a matching interrupted attempt or discard it (saying so)."""
        partial = self.rundir.partial_dir(spec.name)
        previous = _read_json(partial / ATTEMPT) if partial.exists() else None
        same = previous is not None and {k: previous.get(k) for k in ("config_hash", "inputs")} == {
            k: attempt[k] for k in ("config_hash", "inputs")}
        if partial.exists() and same and not forced:
            attempt["resumed"] = True
            write_json_atomic(partial / ATTEMPT, attempt)
            return True
        if partial.exists():
            held = describe_attempt(partial)
            cause = "--force" if forced else _what_changed(spec, previous, attempt)
            if held.startswith("0 files"):
                shutil.rmtree(partial)
            else:
                self._say(f"{spec.name}: discarding the interrupted attempt in {partial} ({held}) because {cause}")
                shutil.rmtree(partial)
        partial.mkdir(parents=True, exist_ok=True)
        attempt["resumed"] = False
        write_json_atomic(partial / ATTEMPT, attempt)
        return False

    def run_stage(self, spec: StageSpec, why: str = "", forced: bool = False) -> StageResult:
        """Rank 0: run one stage into ``<stage>.partial`` and commit it."""
        rd = self.rundir
        partial = rd.partial_dir(spec.name)
        final = rd.stage_dir(spec.name)
        if final.is_dir() and not (final / MANIFEST).exists():
            # phi1 only ever renames a folder with a manifest into place: this one is someone else's,
            # and committing the stage would replace (delete) it
            raise Phi1Error(f"{final} exists but holds no {MANIFEST}: it is not a finished phi1 stage; move it out "
                            "of the run folder (phi1 does not delete what it did not write)")
        attempt = {**rd.identity(spec), "attempt_id": uuid.uuid4().hex}
        resumed = self._prepare(spec, attempt, why, forced)
        self._say(f"{spec.name}: running ({why or 'pending'}){' — resuming interrupted attempt' if resumed else ''}")
        if self.ranks:
            self.ranks.post(stage=spec.name, decision="run", resumed=resumed)
        fn = spec.load()
        ctx = rd.context(spec.name, partial, resumed=resumed, echo=self.echo, rank=self.rank,
                         world_size=self.world_size)
        started = time.time()
        result = fn(ctx)
        if result is None:
            result = StageResult()
        seconds = time.time() - started
        if self.ranks:  # every rank's stage function has returned: nothing writes into the folder any more
            self.ranks.wait_returned(spec.name, self.world_size)
        self._commit(spec, attempt, result, started, seconds, resumed)
        if self.ranks:
            self.ranks.post(stage=spec.name, outcome="committed")
        return result

    def _commit(self, spec: StageSpec, attempt: dict[str, Any], result: StageResult, started: float,
                seconds: float, resumed: bool) -> None:
        rd = self.rundir
        final, partial = rd.stage_dir(spec.name), rd.partial_dir(spec.name)
        manifest = {
            "stage": spec.name,
            "status": "done",
            "run_id": uuid.uuid4().hex,
            "attempt_id": attempt["attempt_id"],
            "config_hash": attempt["config_hash"],
            "sections": list(spec.sections),
            "inputs": attempt["inputs"],
            "datasets": {key: [{"ref": d.ref, "kind": d.kind, "weight": d.weight, "run_id": d.run_id}
                               for d in ds] for key, ds in self.graph.datasets(spec.name, rd.path).items()},
            # "exists": what the stage wrote; a dataset removed later makes the stage stale (never read half)
            "outputs": {dataset_ref(spec.name, o): {"kind": o.kind, "path": o.path, "exists": (partial / o.path).exists()}
                        for o in spec.outputs(self.config)},
            "counts": result.counts,
            "metrics": result.metrics,
            "summary": result.summary,
            "failed": int(result.failed),
            "timings": {"started": _iso(started), "seconds": round(seconds, 3)},
            "finished_at": _iso(time.time()),
            "resumed": resumed,
            "versions": library_versions(),
            "host": platform.node(),
            "argv": sys.argv,
            **result.extra,
        }
        # The attempt record stays until the folder is in place: if the manifest cannot be written
        # (a full disk), the next run resumes this finished work instead of discarding it.
        write_json_atomic(partial / MANIFEST, manifest)
        if final.exists():
            old = rd.path / f"{spec.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
            os.replace(partial, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(partial, final)
        (final / ATTEMPT).unlink(missing_ok=True)
        for line in result.summary:
            self._say(f"  {spec.name}: {line}")
        if result.failed:
            self._say(f"{spec.name}: {result.failed} item(s) failed; re-run the same command to retry exactly those")
        self._say(f"{spec.name}: done in {seconds:.1f}s -> {final}")


def _what_changed(spec: StageSpec, previous: Any, attempt: dict[str, Any]) -> str:
    if not isinstance(previous, dict):
        return "it has no readable attempt record"
    if previous.get("config_hash") != attempt["config_hash"]:
        return f"[{', '.join(spec.sections)}] changed"
    before, now = previous.get("inputs") or {}, attempt["inputs"]
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    return f"its inputs changed ({', '.join(changed)})"


def launch_key() -> str:
    """Who launched this process group: the same for every rank of one
    torchrun/srun launch, different for the next launch (torchrun gives each
    launch its own TORCHELASTIC_RUN_ID; pass ``--rdzv-id=$SLURM_JOB_ID`` on
    multi-node jobs), so a rank never follows a log left by an earlier launch."""
    keys = ("TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT", "MASTER_ADDR", "MASTER_PORT",
            "SLURM_JOB_ID", "SLURM_STEP_ID", "WORLD_SIZE")
    return "|".join(os.environ.get(k, "") for k in keys)


class RankLog:
    """Rank 0's decisions, for the other ranks of a torchrun job to follow.

    Every rank runs `Pipeline.run`; only rank 0 looks at manifests and decides
    (run, current, skipped, error). It appends each decision, and each commit,
    to ``<run>/.ranks/<launch>.jsonl``; the other ranks read the log in order,
    run the stage function when rank 0 runs it (training needs every rank),
    and go on to the next stage only once rank 0 has committed this one — so
    they never look for inputs that are not written yet, nor decide on a
    stale view of the run folder.
    """

    def __init__(self, run_dir: Path, rank: int):
        import hashlib

        key = launch_key()
        self.path = run_dir / ".ranks" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.jsonl"
        self.key = key
        self.rank = rank

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.path.parent.glob(f"{self.path.name}.rank*"):  # left by a crashed launch
            stale.unlink()
        write_atomic(self.path, json.dumps({"launch": self.key}) + "\n")  # the header line

    def post(self, **entry: Any) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _entries(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines()[1:]:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line being written: read it next time
        return out

    def wait(self, stage: str, field: str) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for e in self._entries():
                if e.get("stage") == stage and (field in e or e.get("decision") == "error"):
                    return e
            return None

        return _wait_for(found, what=f"rank 0's {field} for stage {stage!r} in {self.path}", timeout=_env_number("PHI1_RANK_WAIT_S", RANK_WAIT_S))

    def _rank_file(self, rank: int) -> Path:
        return self.path.with_name(f"{self.path.name}.rank{rank}")

    def _said(self, rank: int) -> set[str]:
        try:
            return set(self._rank_file(rank).read_text().split())
        except FileNotFoundError:
            return set()

    def _say(self, word: str) -> None:
        with open(self._rank_file(self.rank), "a") as fh:
            fh.write(word + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def returned(self, stage: str) -> None:
        """A follower's stage function has returned (it writes nothing more there)."""
        self._say(f"returned:{stage}")

    def wait_returned(self, stage: str, world_size: int) -> None:
        """Rank 0, before committing ``stage``: every follower's function has returned."""
        _wait_for(lambda: all(f"returned:{stage}" in self._said(r) for r in range(1, world_size)),
                  what=f"the other ranks to finish stage {stage!r}", timeout=_env_number("PHI1_RANK_WAIT_S", RANK_WAIT_S))

    def finish(self, world_size: int, wait: bool = True) -> None:
        """Each follower says it is done; rank 0 removes the logs once all have
        (they must not vanish while a follower still reads its last entries)."""
        if self.rank != 0:
            self._say("finished")
            return
        if wait:
            _wait_for(lambda: all("finished" in self._said(r) for r in range(1, world_size)),
                      what="the other ranks to finish", timeout=120)
        for p in (self.path, *(self._rank_file(r) for r in range(1, world_size))):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def _wait_for(cond: Callable[[], Any], what: str, timeout: float = 600) -> Any:
    deadline = time.time() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.time() > deadline:
            raise Phi1Error(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")
