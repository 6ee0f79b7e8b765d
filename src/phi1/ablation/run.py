"""`run_ablation(config)`: the base run, each arm's tokenize, each arm x seed's
training and evaluation — every one a `phi1.pipeline.Pipeline` run — then
the spread across seeds per arm, written to ``<ablation>/ablation.json`` and
``ablation.html`` and printed as a table.

Killed half-way, the same command resumes: finished runs are current (the
pipeline skips them), an interrupted stage resumes from its ``.partial``
folder (training from its last checkpoint).
"""

from __future__ import annotations

import contextlib
import fcntl
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from phi1.ablation.config import SYNTHETIC, UNFILTERED
from phi1.ablation.links import link_cache, link_stages
from phi1.ablation.plan import (BASE, Arm, RunPlan, StageSplit, arm_config, arm_runs, arms, base_run, split_stages,
                                unfiltered_rate)
from phi1.ablation.report import REPORT_FILE, SUMMARY_FILE, write_ablation_report  # light: matplotlib when drawn
from phi1.ablation.stats import Comparison, Spread, compare, spread
from phi1.config import PipelineConfig, to_dict
from phi1.dataflow import Graph
from phi1.errors import Phi1Error
from phi1.manifest import read_manifest

# (manifest metrics key, label, lower is better): the first two are finetune's, pass@1 is execute's
METRICS = (
    ("humaneval_solution_loss_after_pretraining", "HumanEval-solution loss after pretraining", True),
    ("humaneval_solution_loss_after_finetuning", "HumanEval-solution loss after finetuning", True),
    ("pass@1", "HumanEval pass@1", False),
)


@dataclass
class RunResult:
    """What one arm x seed run measured (None: its stage did not report it)."""

    arm: str
    seed: int
    run: str
    metrics: dict[str, float | None]
    pretrain_tokens: int | None  # tokens the pretraining saw (steps x batch x length)
    seconds: float  # stage time of the run's own stages, however many invocations it took


@dataclass
class ArmSummary:
    name: str
    label: str
    mixture: dict[str, float]
    corpus_tokens: int | None  # train tokens of the arm's tokenize
    corpus_documents: int | None
    stats: dict[str, Spread] = field(default_factory=dict)  # metric key -> spread over seeds


@dataclass
class AblationSummary:
    root: Path
    arms: list[ArmSummary]
    runs: list[RunResult]
    skipped: dict[str, str]  # arm -> why
    comparisons: list[Comparison]
    rate: float
    rate_source: str
    seeds: list[int]
    split: StageSplit
    setup: dict[str, Any]
    wall_seconds: float
    finished_at: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root), "finished_at": self.finished_at, "wall_seconds": round(self.wall_seconds, 1),
            "seeds": self.seeds, "unfiltered_rate": self.rate, "unfiltered_rate_source": self.rate_source,
            "stages": {"shared (base/)": list(self.split.shared), "per arm": list(self.split.arm),
                       "per arm and seed": list(self.split.seeded)},
            "setup": self.setup, "skipped_arms": self.skipped,
            "metrics": [{"key": k, "label": label, "lower_is_better": low} for k, label, low in METRICS],
            "arms": [{"name": a.name, "label": a.label, "mixture": a.mixture, "corpus_tokens": a.corpus_tokens,
                      "corpus_documents": a.corpus_documents,
                      "stats": {k: s.as_dict() for k, s in a.stats.items()}} for a in self.arms],
            "runs": [asdict(r) for r in self.runs],
            "comparisons": [c.as_dict() for c in self.comparisons],
        }

    def table_lines(self) -> list[str]:
        """The summary table and the reading, as printed at the end."""
        s = self.setup
        lines = [f"ablation summary: {len(self.arms)} arm(s) x {len(self.seeds)} seed(s) "
                 f"(seeds {', '.join(map(str, self.seeds))}); model {s.get('model')}, pretraining "
                 f"{s.get('pretrain_steps')} steps = {_human(s.get('pretrain_tokens'))} tokens per run, finetuning "
                 f"{s.get('finetune_steps')} steps on {s.get('exercises')}"]
        head = f"  {'arm':<44} {'corpus tokens':>13}  " + "  ".join(f"{_short(label):<27}" for _, label, _ in METRICS)
        lines.append(head)
        for a in self.arms:
            cells = [a.stats[k].show() if k in a.stats else "n/a" for k, _, _ in METRICS]
            lines.append(f"  {a.label[:44]:<44} {_human(a.corpus_tokens):>13}  "
                         + "  ".join(f"{c:<27}" for c in cells))
        for arm, why in self.skipped.items():
            lines.append(f"  {arm}: skipped: {why}")
        if self.comparisons:
            lines.append("reading (mean ± sample std (min–max) over seeds):")
            lines += [f"  - {c.reading}" for c in self.comparisons]
        lines.append(f"-> {self.root / SUMMARY_FILE}, {self.root / REPORT_FILE}  ({self.wall_seconds / 60:.1f} min "
                     "wall this invocation)")
        return lines


def _short(label: str) -> str:
    return label.replace("HumanEval-solution loss", "HE loss").replace("HumanEval ", "")


def _human(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "n/a"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:g}"


# --------------------------------------------------------------------------- running


def run_ablation(config: PipelineConfig, echo: Callable[[str], None] = print, stages: Any = None) -> AblationSummary:
    """Run (or resume) the whole ablation described by ``config``; see the module doc."""
    from phi1.registry import all_stages

    started = time.time()
    stages = stages if stages is not None else all_stages()
    ab = config.ablation
    split = split_stages(config, stages)
    for arm in arms(config, 0.5):  # every arm's mixture resolves before an hour of work starts
        Graph(arm_config(config, arm, arm.name), stages)
    root = config.run_dir
    echo(f"ablation: arms {', '.join(ab.arms)} x seeds {', '.join(map(str, ab.seeds))} -> {root}/")
    echo(f"  computed once in base/: {', '.join(split.shared)}; once per arm: {', '.join(split.arm)}; "
         f"once per arm and seed: {', '.join(split.seeded)} (the rest is linked)")

    if ab.threads:  # this process runs the shared stages and the arms' tokenize
        import torch

        torch.set_num_threads(ab.threads)
    echo(f"  arm x seed runs: {ab.parallel} at a time, torch threads {ab.threads or 'default'} per process "
         f"(ablation.parallel, ablation.threads); their logs in {root / 'logs'}/")
    with _lock(root):
        return _run_all(config, echo, stages, split, started)


@contextlib.contextmanager
def _lock(root: Path) -> Iterator[None]:
    """One `phi1 ablation` at a time in a folder (each run also locks its own)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".ablation.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Phi1Error(f"another phi1 ablation is running in {root}") from None
        yield


def _run_all(config: PipelineConfig, echo: Callable[[str], None], stages: Any, split: StageSplit,
             started: float) -> AblationSummary:
    ab, root = config.ablation, config.run_dir
    base = base_run(config, split)
    _run(base, echo, stages)
    rate, rate_source = unfiltered_rate(config, base.path)
    chosen = arms(config, rate)
    skipped: dict[str, str] = {}
    if any(a.name == SYNTHETIC for a in chosen):
        why = synthetic_missing(base, ab.synthetic, stages)
        if why:
            skipped[SYNTHETIC] = why
            chosen = [a for a in chosen if a.name != SYNTHETIC]
            echo(f"ablation: arm {SYNTHETIC} skipped: {why}")
    if not chosen:
        raise Phi1Error("ablation: no arm left to train (" + "; ".join(f"{k}: {v}" for k, v in skipped.items()) + ")")
    if any(a.name == UNFILTERED for a in chosen):
        echo(f"ablation: arm {UNFILTERED} samples {ab.unfiltered} at rate {rate:.4g} ({rate_source})")

    plans = [arm_runs(config, split, arm, stages) for arm in chosen]
    for own, _ in plans:
        _link(own, root)
        _run(own, echo, stages)
    order = [seeded[i] for i in range(len(ab.seeds)) for _, seeded in plans]  # seed-major: comparable early
    results = run_seeded(order, root, echo, stages, ab.parallel, ab.threads)

    summary = summarize(config, root, chosen, plans, results, skipped, rate, rate_source, split,
                        time.time() - started)
    write_summary(summary)
    write_ablation_report(root)
    echo("")
    for line in summary.table_lines():
        echo(line)
    return summary


def run_seeded(order: list[RunPlan], root: Path, echo: Callable[[str], None], stages: Any, parallel: int,
               threads: int) -> list[RunResult]:
    """The arm x seed runs, ``parallel`` at a time in worker processes (`phi1.ablation.workers`),
    a progress line as each starts and ends; results in ``order``."""
    from phi1.ablation.workers import Job, run_jobs

    for plan in order:
        _link(plan, root)
    jobs = [Job(plan.config, plan.stages, root / "logs" / f"{plan.name}.log") for plan in order]
    results: dict[int, RunResult] = {}
    spent: list[float] = []
    n = len(order)

    def started(i: int) -> None:
        plan = order[i]
        echo(f"ablation {i + 1}/{n}: arm {plan.arm}, seed {plan.seed} -> {plan.path} (log: {jobs[i].log})")

    def finished(i: int, outcomes: dict[str, str], took: float) -> None:
        plan = order[i]
        ran = any(v == "ran" for v in outcomes.values())
        results[i] = result = collect(plan)
        if ran:
            spent.append(took)
        left = n - len(results)
        eta = sum(spent) / len(spent) * left / max(1, min(parallel, left)) if spent and left else 0.0
        shown = ", ".join(f"{_short(label)} {_fmt(result.metrics.get(key))}" for key, label, _ in METRICS)
        echo(f"ablation {i + 1}/{n}: arm {plan.arm}, seed {plan.seed} {'done' if ran else 'already done'} in "
             f"{took:.0f}s: {shown}" + (f"; about {eta / 60:.0f} min left" if eta >= 90 else
                                         "; about a minute left" if eta else ""))

    run_jobs(jobs, parallel, threads, stages, started, finished)
    return [results[i] for i in range(n)]


def _prefixed(echo: Callable[[str], None], name: str) -> Callable[[str], None]:
    return lambda msg: echo(f"  [{name}] {msg}" if msg else "")


def _link(plan: RunPlan, root: Path) -> None:
    # Only what finished in its source: a stage this config skips (grade offline) has no folder to link.
    done = {s: src for s, src in plan.links.items() if read_manifest(root / src / s).get("status") == "done"}
    link_stages(plan.path, done)
    link_cache(plan.path, BASE)


def _run(plan: RunPlan, echo: Callable[[str], None], stages: Any) -> dict[str, str]:
    from phi1.pipeline import Pipeline

    return Pipeline(plan.config, echo=_prefixed(echo, plan.name), stages=stages).run(only=list(plan.stages))


def synthetic_missing(base: RunPlan, ref: str, stages: Any) -> str | None:
    """Why the third arm cannot run (None when ``ref`` holds at least one document)."""
    from phi1.documents import read_documents

    graph = Graph(base.config, stages)
    found = graph.produced.get(ref)
    if found is None:
        return f"no stage produces {ref!r} (set ablation.synthetic)"
    spec, out = found
    folder = base.path / spec.name
    if read_manifest(folder).get("status") != "done":
        return f"{ref!r} was not produced in base/ ({spec.name} did not run)"
    path = folder if out.path == "." else folder / out.path
    if not path.exists() or next(read_documents(path, limit=1), None) is None:
        return (f"{ref!r} has no records ({path}); offline, {spec.name} writes only its prompts. Point "
                f"[{spec.section_name}.llm] at an endpoint (base_urls and model) or import batch results "
                f"(docs/synth.md), then re-run: the other arms stay current")
    return None


def _fmt(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) else "n/a"


# --------------------------------------------------------------------------- results


def collect(plan: RunPlan) -> RunResult:
    """The run's metrics, from the manifests of the stages it computed (later stages win)."""
    values: dict[str, float | None] = {key: None for key, _, _ in METRICS}
    seconds, tokens = 0.0, None
    for stage in plan.stages:
        m = read_manifest(plan.path / stage)
        if m.get("status") != "done":
            continue
        seconds += float((m.get("timings") or {}).get("seconds") or 0.0)
        metrics = m.get("metrics") or {}
        for key in values:
            v = metrics.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                values[key] = float(v)
        reads_tokens = any(d.get("kind") == "tokens" for ds in (m.get("datasets") or {}).values() for d in ds)
        if reads_tokens and isinstance((m.get("counts") or {}).get("tokens"), int):
            tokens = m["counts"]["tokens"]  # the pretraining: the stage that reads the packed corpus
    return RunResult(plan.arm, int(plan.seed or 0), plan.name, values, tokens, round(seconds, 1))


def summarize(config: PipelineConfig, root: Path, chosen: list[Arm], plans: list[tuple[RunPlan, list[RunPlan]]],
              results: list[RunResult], skipped: dict[str, str], rate: float, rate_source: str, split: StageSplit,
              wall: float) -> AblationSummary:
    arms_out = []
    for arm, (own, _) in zip(chosen, plans):
        tok = _mixture_manifest(own)
        counts = tok.get("counts") or {}
        a = ArmSummary(arm.name, arm.label, dict(arm.mixture), counts.get("train_tokens"),
                       counts.get("train_documents"))
        mine = [r for r in results if r.arm == arm.name]
        for key, _, _ in METRICS:
            vals = [r.metrics[key] for r in mine if r.metrics.get(key) is not None]
            if vals:
                a.stats[key] = spread(vals)  # type: ignore[arg-type]
        arms_out.append(a)
    comparisons = []
    ref = next((a for a in arms_out if a.name == UNFILTERED), arms_out[0])
    for other in arms_out:
        if other is ref:
            continue
        for key, label, low in METRICS:
            if key in ref.stats and key in other.stats:
                comparisons.append(compare(label, ref.name, ref.stats[key], other.name, other.stats[key], low))
    return AblationSummary(root, arms_out, results, skipped, comparisons, rate, rate_source,
                           list(config.ablation.seeds), split, setup_of(config, results),
                           wall, datetime.now(timezone.utc).isoformat(timespec="seconds"))


def _mixture_manifest(own: RunPlan) -> dict[str, Any]:
    for stage in own.stages:
        m = read_manifest(own.path / stage)
        if "train_tokens" in (m.get("counts") or {}):
            return m
    return {}


def setup_of(config: PipelineConfig, results: list[RunResult]) -> dict[str, Any]:
    """What every run trained: the same for all arms (the point of the ablation)."""
    tokens = sorted({r.pretrain_tokens for r in results if r.pretrain_tokens is not None})
    return {
        "model": to_dict(config.model, identity_only=True).get("preset"),
        "pretrain_steps": config.pretrain.max_steps,
        "pretrain_tokens": tokens[0] if len(tokens) == 1 else tokens or None,
        "finetune_steps": config.finetune.max_steps,
        "exercises": " + ".join(f"{k} x{v:g}" if v != 1 else k for k, v in config.finetune.inputs.items()),
        "config": config.source,
        "cpu": cpu_name(),
        "host": platform.node(),
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_summary(summary: AblationSummary) -> Path:
    from phi1.files import write_json_atomic

    path = summary.root / SUMMARY_FILE
    write_json_atomic(path, summary.as_dict())
    return path
