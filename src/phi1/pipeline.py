"""Stage registry, run directory, manifests, skip/resume.

A run lives in ``<run.root>/<run.name>/``. Each stage writes into
``<stage>.partial/`` and, when it finishes, writes ``manifest.json`` there and
renames the folder to ``<stage>/``: a crash never leaves a half output that
looks finished. A re-run after a crash with the same config reuses
``<stage>.partial/`` (``ctx.resumed`` is true), so datatrove's completion
markers and training checkpoints inside it are picked up.

A stage is *done* when its manifest's config hash and input fingerprints match
the current config and the current upstream manifests; otherwise it is
*stale* (or *pending* when it never finished). Re-running a stage gives it a
new ``run_id``, which makes everything downstream stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import platform
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

from phi1.config import PipelineConfig
from phi1.errors import Phi1Error, SkipStage

MANIFEST = "manifest.json"
ATTEMPT = ".attempt.json"


@dataclass(frozen=True)
class StageSpec:
    """One stage: its name, where its code lives, what it hashes and reads."""

    name: str
    entry: str  # "module:function", imported lazily so the CLI stays fast
    sections: tuple[str, ...]  # config sections whose change makes it stale
    inputs: tuple[str, ...]  # upstream stages whose outputs it reads
    help: str
    fingerprint: str | None = None  # "module:function(config) -> str" for external inputs
    # "module:function(config) -> tuple[str, ...]": the inputs this config really
    # reads, when that depends on the config (e.g. generate from an endpoint needs
    # no finetuned model). Must live in a light module (a config module).
    needs: str | None = None
    # "module:function(config) -> str | None": a reason to skip the stage in
    # this config, checked before it starts (light module, like `needs`).
    skip_if: str | None = None

    def skip_reason(self, config: PipelineConfig) -> str | None:
        return _import(self.skip_if)(config) if self.skip_if else None

    def inputs_for(self, config: PipelineConfig) -> tuple[str, ...]:
        if self.needs:
            return tuple(_import(self.needs)(config))
        return self.inputs

    def load(self) -> Callable[["StageContext"], "StageResult"]:
        return _import(self.entry)


def _import(entry: str) -> Any:
    module, _, attr = entry.partition(":")
    return getattr(importlib.import_module(module), attr)


# The paper's pipeline, in order. `phi1 run` walks this list.
STAGES: tuple[StageSpec, ...] = (
    StageSpec("ingest", "phi1.corpus.ingest:run", ("ingest",), (),
              "read sources, clean, dedup -> documents",
              fingerprint="phi1.corpus.ingest:fingerprint_sources"),
    StageSpec("annotate", "phi1.quality.annotate:run", ("annotate",), ("ingest",),
              "teacher rates the educational value of a sample"),
    StageSpec("embed", "phi1.quality.embed:run", ("embed",), ("ingest", "annotate"),
              "embed documents (CodeGen / sentence-transformers)"),
    StageSpec("classifier", "phi1.quality.classifier:run", ("classifier",), ("annotate", "embed"),
              "random forest on embeddings -> quality model"),
    StageSpec("filter", "phi1.quality.filter:run", ("filter", "embed"), ("ingest", "embed", "classifier"),
              "keep textbook-quality documents"),
    StageSpec("tokenizer", "phi1.model.tokenizer:run", ("tokenizer",), ("filter",),
              "load or train the tokenizer"),
    StageSpec("tokenize", "phi1.train.tokenize:run", ("tokenize",), ("tokenizer", "filter"),
              "tokenize and pack into fixed-length shards", needs="phi1.train.config:tokenize_inputs"),
    StageSpec("mine", "phi1.synth.mine:run", ("mine",), ("filter",),
              "mine CodeExercises-format records from the filtered corpus"),
    StageSpec("pretrain", "phi1.train.pretrain:run", ("pretrain", "model"), ("tokenizer", "tokenize"),
              "pretrain the model (phi-1-base)"),
    StageSpec("finetune", "phi1.train.finetune:run", ("finetune",), ("tokenizer", "mine", "pretrain"),
              "finetune on CodeExercises and export the best checkpoint"),
    StageSpec("generate", "phi1.evaluate.generate:run", ("generate",), ("finetune",),
              "generate HumanEval completions", needs="phi1.evaluate.config:generate_inputs"),
    StageSpec("execute", "phi1.evaluate.execute:run", ("execute",), ("generate",),
              "run completions in the sandbox, pass@k"),
    StageSpec("grade", "phi1.evaluate.grade:run", ("grade",), ("generate",),
              "LLM grader: verbal evaluation + 0-10 grade", skip_if="phi1.evaluate.config:grade_skip_reason"),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def get_stage(name: str, stages: tuple[StageSpec, ...] = STAGES) -> StageSpec:
    for s in stages:
        if s.name == name:
            return s
    import difflib

    names = [s.name for s in stages]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise Phi1Error(f"unknown stage {name!r}{hint}; stages: {', '.join(names)}")


# --------------------------------------------------------------------------- context


@dataclass
class StageResult:
    """What a stage reports; the pipeline writes it into the manifest."""

    counts: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)  # short lines printed at the end
    extra: dict[str, Any] = field(default_factory=dict)  # any other JSON for the manifest


@dataclass
class StageContext:
    """What a stage function gets: the config, and where to read and write."""

    config: PipelineConfig
    name: str
    run_dir: Path
    work_dir: Path  # write outputs here; renamed to run_dir/<name> on success
    resumed: bool = False  # work_dir holds an interrupted attempt with the same config
    rank: int = 0
    world_size: int = 1
    echo: Callable[[str], None] = print
    spec: StageSpec | None = None

    @property
    def section(self) -> Any:
        spec = self.spec or get_stage(self.name)
        return self.config.section(spec.sections[0])

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def input_dir(self, stage: str) -> Path:
        """The finished output folder of an upstream stage (error if missing)."""
        d = self.run_dir / stage
        if not (d / MANIFEST).exists():
            raise Phi1Error(
                f"stage {self.name!r} needs the output of {stage!r}, which has not finished "
                f"in {self.run_dir}: run `phi1 run {self.config.source} --only {stage}` first"
            )
        return d

    def input_manifest(self, stage: str) -> dict[str, Any]:
        return read_manifest(self.input_dir(stage))

    def log(self, msg: str) -> None:
        if self.is_main:
            self.echo(f"[{self.name}] {msg}")


# --------------------------------------------------------------------------- manifests


def read_manifest(stage_dir: Path) -> dict[str, Any]:
    path = stage_dir / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as e:
        raise Phi1Error(f"corrupt manifest {path}: {e}") from None


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


_VERSIONED = ("phi1", "torch", "transformers", "tokenizers", "datatrove", "scikit-learn",
              "sentence-transformers", "numpy", "httpx")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


# --------------------------------------------------------------------------- status


@dataclass
class StageStatus:
    name: str
    state: str  # done | stale | pending | skipped (this config skips it)
    reason: str = ""
    manifest: dict[str, Any] = field(default_factory=dict)


class RunDirectory:
    """The folder of one run and the state of its stages."""

    def __init__(self, config: PipelineConfig, stages: tuple[StageSpec, ...] = STAGES):
        self.config = config
        self.stages = stages
        self.path = config.run_dir

    def stage_dir(self, name: str) -> Path:
        return self.path / name

    def partial_dir(self, name: str) -> Path:
        return self.path / f"{name}.partial"

    def expected_inputs(self, spec: StageSpec) -> dict[str, str]:
        """Fingerprints of what the stage would read now."""
        fp = {}
        for up in spec.inputs_for(self.config):
            fp[up] = read_manifest(self.stage_dir(up)).get("run_id", "")
        if spec.fingerprint:
            fp["external"] = _import(spec.fingerprint)(self.config)
        return fp

    def statuses(self) -> list[StageStatus]:
        self.recover()
        out: dict[str, StageStatus] = {}
        for spec in self.stages:
            out[spec.name] = self.status(spec, out)
        return list(out.values())

    def status(self, spec: StageSpec, upstream: dict[str, StageStatus] | None = None) -> StageStatus:
        m = read_manifest(self.stage_dir(spec.name))
        skip = spec.skip_reason(self.config)
        if skip:
            return StageStatus(spec.name, "skipped", skip, m)
        if m.get("status") != "done":
            return StageStatus(spec.name, "pending", "never finished")
        if m.get("config_hash") != self.config.section_hash(*spec.sections):
            return StageStatus(spec.name, "stale", f"[{', '.join(spec.sections)}] changed", m)
        upstream = upstream or {}
        inputs = spec.inputs_for(self.config)
        for up in inputs:
            st = upstream.get(up)
            if st is not None and st.state != "done":
                return StageStatus(spec.name, "stale", f"upstream {up!r} is {st.state}", m)
        recorded = m.get("inputs", {})
        for up in inputs:
            if recorded.get(up) != read_manifest(self.stage_dir(up)).get("run_id", ""):
                return StageStatus(spec.name, "stale", f"upstream {up!r} was re-run", m)
        if spec.fingerprint:
            now = _import(spec.fingerprint)(self.config)
            if recorded.get("external") != now:
                return StageStatus(spec.name, "stale", "its input files changed", m)
        return StageStatus(spec.name, "done", "", m)

    def recover(self) -> None:
        """Finish a swap interrupted between its two renames; drop stale leftovers."""
        if not self.path.exists():
            return
        for spec in self.stages:
            final, partial = self.stage_dir(spec.name), self.partial_dir(spec.name)
            if not final.exists() and read_manifest(partial).get("status") == "done":
                os.replace(partial, final)
        for old in self.path.glob("*.old-*"):
            shutil.rmtree(old, ignore_errors=True)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        self.path.mkdir(parents=True, exist_ok=True)
        fh = open(self.path / ".lock", "w")
        try:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Phi1Error(f"another phi1 process is running in {self.path}") from None
            yield
        finally:
            fh.close()


# --------------------------------------------------------------------------- running


def _dist_env() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


class Pipeline:
    """Runs stages in order, skipping the current ones."""

    def __init__(self, config: PipelineConfig, echo: Callable[[str], None] = print,
                 stages: tuple[StageSpec, ...] = STAGES):
        self.config = config
        self.stages = stages
        self.rundir = RunDirectory(config, stages)
        self.echo = echo
        self.rank, self.world_size = _dist_env()

    def _say(self, msg: str) -> None:
        if self.rank == 0:
            self.echo(msg)

    def select(self, only: list[str] | None, start: str | None) -> list[StageSpec]:
        names = [get_stage(n, self.stages).name for n in (only or [])]
        if start:
            get_stage(start, self.stages)
        if names:
            return [s for s in self.stages if s.name in names]
        if start:
            idx = [s.name for s in self.stages].index(start)
            return list(self.stages[idx:])
        return list(self.stages)

    def run(self, only: list[str] | None = None, start: str | None = None, force: bool = False) -> dict[str, str]:
        """Run the selected stages; returns {stage: outcome}."""
        selected = self.select(only, start)
        forced = {s.name for s in selected} if force else set()
        if start:
            forced.add(start)
        outcomes: dict[str, str] = {}
        t0 = time.time()
        lock = self.rundir.lock() if self.rank == 0 else contextlib.nullcontext()
        with lock:
            self.rundir.recover() if self.rank == 0 else None
            self._say(f"run {self.config.run.name}: {self.rundir.path}  (config {self.config.source})")
            skipped_upstream: set[str] = set()
            for spec in selected:
                inputs = spec.inputs_for(self.config)
                if any(up in skipped_upstream for up in inputs):
                    skipped_upstream.add(spec.name)
                    outcomes[spec.name] = "skipped"
                    self._say(f"{spec.name}: skipped (needs {', '.join(u for u in inputs if u in skipped_upstream)})")
                    continue
                reason = spec.skip_reason(self.config)
                if reason:
                    skipped_upstream.add(spec.name)
                    outcomes[spec.name] = "skipped"
                    self._say(f"{spec.name}: skipped: {reason}")
                    continue
                st = self.rundir.status(spec, {})
                upstream_bad = [u for u in inputs
                                if self.rundir.status(get_stage(u, self.stages)).state != "done"]
                if upstream_bad:
                    missing = ", ".join(upstream_bad)
                    raise Phi1Error(
                        f"stage {spec.name!r} needs {missing} to be done first "
                        f"(run `phi1 run {self.config.source} --from {upstream_bad[0]}`)"
                    )
                if st.state == "done" and spec.name not in forced:
                    secs = st.manifest.get("timings", {}).get("seconds", 0)
                    self._say(f"{spec.name}: up to date (finished {st.manifest.get('finished_at', '?')}, "
                              f"{secs:.1f}s), skipping")
                    outcomes[spec.name] = "current"
                    continue
                why = "forced" if spec.name in forced and st.state == "done" else st.reason
                try:
                    self.run_stage(spec, why)
                    outcomes[spec.name] = "ran"
                except SkipStage as e:
                    partial = self.rundir.partial_dir(spec.name)
                    if self.rank == 0 and [p.name for p in partial.iterdir()] == [ATTEMPT]:
                        shutil.rmtree(partial)  # nothing to resume: leave no trace
                    self._say(f"{spec.name}: skipped: {e}")
                    skipped_upstream.add(spec.name)
                    outcomes[spec.name] = "skipped"
        self._print_summary(outcomes, time.time() - t0)
        return outcomes

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
        self._say(f"outputs: {self.rundir.path}/<stage>/  (manifest.json in each)")

    def run_stage(self, spec: StageSpec, why: str = "") -> StageResult:
        rd = self.rundir
        final, partial = rd.stage_dir(spec.name), rd.partial_dir(spec.name)
        attempt = {
            "config_hash": self.config.section_hash(*spec.sections),
            "inputs": rd.expected_inputs(spec),
        }
        resumed = False
        if self.rank == 0:
            previous = _read_json(partial / ATTEMPT)
            if partial.exists() and previous == attempt:
                resumed = True
            elif partial.exists():
                shutil.rmtree(partial)
            partial.mkdir(parents=True, exist_ok=True)
            write_json_atomic(partial / ATTEMPT, attempt)
        else:  # other ranks of a torchrun job wait for rank 0 to prepare the folder
            _wait_for(lambda: _read_json(partial / ATTEMPT) == attempt, what=str(partial / ATTEMPT))
            resumed = True
        self._say(f"{spec.name}: running ({why or 'pending'}){' — resuming interrupted attempt' if resumed else ''}")
        fn = spec.load()
        ctx = StageContext(self.config, spec.name, rd.path, partial, resumed,
                           self.rank, self.world_size, self.echo, spec)
        started = time.time()
        result = fn(ctx)
        if result is None:
            result = StageResult()
        seconds = time.time() - started
        if self.rank != 0:
            return result
        manifest = {
            "stage": spec.name,
            "status": "done",
            "run_id": uuid.uuid4().hex,
            "config_hash": attempt["config_hash"],
            "sections": list(spec.sections),
            "inputs": attempt["inputs"],
            "counts": result.counts,
            "metrics": result.metrics,
            "summary": result.summary,
            "timings": {"started": _iso(started), "seconds": round(seconds, 3)},
            "finished_at": _iso(time.time()),
            "resumed": resumed,
            "versions": library_versions(),
            "host": platform.node(),
            "argv": sys.argv,
            **result.extra,
        }
        (partial / ATTEMPT).unlink(missing_ok=True)
        write_json_atomic(partial / MANIFEST, manifest)
        if final.exists():
            old = rd.path / f"{spec.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
            os.replace(partial, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(partial, final)
        for line in result.summary:
            self._say(f"  {spec.name}: {line}")
        self._say(f"{spec.name}: done in {seconds:.1f}s -> {final}")
        return result


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _wait_for(cond: Callable[[], bool], what: str, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while not cond():
        if time.time() > deadline:
            raise Phi1Error(f"timed out waiting for {what}")
        time.sleep(0.2)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")
