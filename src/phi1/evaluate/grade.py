"""The `grade` stage: an LLM grades each solution as a teacher would.

As in the phi-1 paper, the grader (GPT-4 there; any OpenAI-compatible chat
endpoint here) sees the problem, optionally the reference solution, and the
student's solution (prompt + completion); it writes a short verbal evaluation,
then a grade from 0 to 10. Reads ``<run>/generate/samples.jsonl`` and
``problems.jsonl``; writes ``<run>/grade/grades.jsonl``::

    {"task_id", "sample", "grade" (0-10 or null), "valid", "evaluation", "raw",
     "attempts", "error", "invalid_replies": [...]}

and reports the mean grade as a percentage of 10, overall and per task. A
reply without a valid grade is asked again (up to ``grade.max_attempts``) with
a reminder of the format, then excluded from the means and counted. All calls
go through `phi1.llm`: cached in the run's LLM cache, so a re-run (or a run
resumed after a crash) sends only what never came back.

Without an endpoint (``[grade.llm]`` has no base_urls or model) the stage is
skipped with a one-line notice.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phi1.documents import read_jsonl, read_jsonl_numbered, write_jsonl
from phi1.errors import InputError, Phi1Error, SkipStage
from phi1.evaluate.config import GradeConfig
from phi1.evaluate.grading_prompt import ParsedGrade, grading_messages, parse_grade, reask_messages

GRADES = "grades.jsonl"


@dataclass
class GradeJob:
    """One sample to grade, and its conversation with the grader so far."""

    task_id: str
    sample: int  # index of the sample among its task's lines in samples.jsonl
    completion: str
    messages: list[dict[str, str]] = field(default_factory=list)
    grade: float | None = None
    evaluation: str = ""
    raw: str | None = None
    attempts: int = 0
    error: str = ""
    invalid: list[dict[str, str]] = field(default_factory=list)  # replies without a valid grade
    failed: bool = False  # the last request failed at the transport level: a re-run asks again

    def record(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "sample": self.sample, "grade": self.grade,
                "valid": self.grade is not None, "evaluation": self.evaluation, "raw": self.raw,
                "attempts": self.attempts, "error": self.error, "invalid_replies": self.invalid}


def read_samples(samples_path: Path, problems: dict[str, dict[str, Any]], per_task: int = 0) -> list[GradeJob]:
    """Samples in file order, numbered within their task; the first
    ``per_task`` of each task when ``per_task`` > 0."""
    jobs: list[GradeJob] = []
    seen: dict[str, int] = {}
    for lineno, rec in read_jsonl_numbered(samples_path):
        if not isinstance(rec, dict) or not isinstance(rec.get("task_id"), str) \
                or not isinstance(rec.get("completion"), str):
            raise InputError(f"{samples_path}:{lineno}: a sample needs string fields task_id and completion")
        task_id = rec["task_id"]
        if task_id not in problems:
            raise InputError(f"{samples_path}:{lineno}: task_id {task_id!r} is not among the problems "
                             f"in {samples_path.with_name('problems.jsonl')}")
        index = seen.get(task_id, 0)
        seen[task_id] = index + 1
        if per_task and index >= per_task:
            continue
        jobs.append(GradeJob(task_id, index, rec["completion"]))
    return jobs


def grade_jobs(
    jobs: list[GradeJob],
    problems: dict[str, dict[str, Any]],
    cfg: GradeConfig,
    cache_path: Path | None,
    log: Any = print,
) -> dict[str, Any]:
    """Ask the grader about every job (in place); returns the client's usage.

    Round 1 asks everything at once; each later round re-asks only the replies
    without a valid grade, as a continuation of their conversation (a new
    request, so the cache cannot answer it with the same invalid reply).
    A reply cut at the token limit is asked again with more tokens by the
    client (``llm.cut_retries``); one still cut is never parsed (a grade in a
    cut evaluation is not the grade) and is re-asked for a shorter reply like
    any invalid one. A request that fails at the transport level (after the
    client's own retries) is not re-asked: its error is recorded, the sample
    excluded and counted as failed (a plain re-run of the stage asks again).
    """
    from phi1.llm import ChatRequest, LLMClient

    for job in jobs:
        job.messages = grading_messages(problems[job.task_id], job.completion, cfg.include_reference)
    pending = list(jobs)
    with LLMClient(cfg.llm, cache_path, desc="grade", log=log) as client:
        for attempt in range(1, cfg.max_attempts + 1):
            if not pending:
                break
            if attempt > 1:
                log(f"re-asking {len(pending)} replies without a valid grade (attempt {attempt} of "
                    f"{cfg.max_attempts})")
            requests = [ChatRequest(messages=job.messages) for job in pending]
            results = asyncio.run(client.chat_many(requests, reask_cut=True))
            retry: list[GradeJob] = []
            for job, res in zip(pending, results):
                job.attempts = attempt
                job.failed = res.failed
                if not res.ok:  # a rejected request (HTTP 400/413/422) is excluded as invalid, not failed
                    job.error = res.error or "request failed"
                    continue
                job.raw = res.text
                if res.truncated:
                    parsed = ParsedGrade(None, res.text or "", "reply cut at the token limit")
                else:
                    parsed = parse_grade(res.text)
                if parsed.grade is not None:
                    job.grade, job.evaluation, job.error = parsed.grade, parsed.evaluation, ""
                    continue
                job.invalid.append({"reply": res.text or "", "why": parsed.error})
                job.evaluation, job.error = parsed.evaluation, f"no valid grade: {parsed.error}"
                if attempt < cfg.max_attempts:
                    job.messages = reask_messages(job.messages, res.text or "", cut=res.truncated)
                    retry.append(job)
            pending = retry
        return client.usage


def summarize(jobs: list[GradeJob]) -> tuple[float | None, dict[str, float | None]]:
    """Mean grade as a percentage of 10, overall (over valid samples) and per
    task (None where a task has no valid grade)."""
    valid = [j.grade for j in jobs if j.grade is not None]
    overall = round(10 * sum(valid) / len(valid), 2) if valid else None
    per_task: dict[str, list[float]] = {}
    for j in jobs:
        per_task.setdefault(j.task_id, [])
        if j.grade is not None:
            per_task[j.task_id].append(j.grade)
    return overall, {t: (round(10 * sum(g) / len(g), 2) if g else None) for t, g in per_task.items()}


def run(ctx: Any) -> Any:
    from phi1.llm import resolve_cache_path
    from phi1.llm import describe_usage
    from phi1.stage import StageResult

    cfg: GradeConfig = ctx.section
    if not cfg.llm.enabled:
        raise SkipStage("no grader endpoint: set [grade.llm] base_urls and model to grade with an LLM")
    if not ctx.is_main:
        return StageResult()
    t0 = time.time()
    samples = ctx.input("samples")
    gen_dir = samples.path
    problems = {p["task_id"]: p for p in read_jsonl(gen_dir / "problems.jsonl")}
    jobs = read_samples(gen_dir / "samples.jsonl", problems, cfg.samples_per_task)
    if not jobs:
        raise InputError(f"{gen_dir / 'samples.jsonl'}: no samples to grade")
    student = (samples.manifest.get("generation") or {}).get("model", "")
    ctx.log(f"grading {len(jobs)} samples of {len({j.task_id for j in jobs})} tasks with {cfg.llm.model} "
            f"(reference solution {'shown' if cfg.include_reference else 'hidden'})")
    usage = grade_jobs(jobs, problems, cfg, resolve_cache_path(cfg.llm, ctx.run_dir), log=ctx.log)
    write_jsonl(ctx.work_dir / GRADES, [j.record() for j in jobs])

    overall, per_task = summarize(jobs)
    valid = sum(1 for j in jobs if j.grade is not None)
    failed = sum(1 for j in jobs if j.failed)
    if failed == len(jobs):  # nothing came back: the setup (key, model, endpoint), not the samples
        first = next(j.error for j in jobs if j.error)
        raise Phi1Error(f"grade: all {len(jobs)} grading requests failed (first: {first}); fix the cause and re-run "
                        "the same command: replies already received are cached and are not sent again")
    invalid = len(jobs) - valid - failed
    seconds = time.time() - t0
    shown = "n/a" if overall is None else f"{overall:.1f}%"
    return StageResult(
        counts={"samples": len(jobs), "tasks": len(per_task), "graded": valid,
                "invalid_excluded": invalid, "failed_excluded": failed,
                "reasked": sum(1 for j in jobs if j.attempts > 1)},
        metrics={"grade_pct": overall, "per_task_pct": per_task, "grader": cfg.llm.model,
                 "student": student, "include_reference": cfg.include_reference},
        summary=[
            f"mean grade {shown} of 10 over {valid} of {len(jobs)} samples ({len(per_task)} tasks), "
            f"grader {cfg.llm.model}, student {student or '?'}, {seconds:.1f}s",
            *([f"excluded: {invalid} without a valid grade after {cfg.max_attempts} asks, "
               f"{failed} failed requests" + (" (a plain re-run asks those again)" if failed else "")]
              if invalid or failed else []),
            describe_usage(usage),
            f"grades: {ctx.run_dir / 'grade' / GRADES}",
        ],
        extra={"llm": usage},
        failed=failed,
    )
