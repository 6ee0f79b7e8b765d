"""`write_report(run_dir)`: RUN_DIR/report.html from what the run's stages wrote.

The report reads only the run folder: each finished stage's ``manifest.json``
and the files next to it (labels, scores, metrics.jsonl, per-task results).
Sections appear for the stages that finished; a stage folder that is
unfinished, or whose files are missing or corrupt, is said so in its place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from phi1.errors import InputError
from phi1.report.html import Section, key_values, page, table
from phi1.report.paper import FIGURES, PAPER, human, paper_reference, stage_family
from phi1.report.run_files import StageFiles, StageRecord, discover
from phi1.report.sections import (humaneval_loss_section, paper_table3, stage_section, table3_section,
                                  usage_records)

REPORT_FILE = "report.html"


@dataclass
class Report:
    run_dir: Path
    html: str
    sections: list[Section] = field(default_factory=list)

    @property
    def images(self) -> int:
        return self.html.count('<img class="chart"')

    @property
    def with_problems(self) -> list[Section]:
        return [s for s in self.sections if s.problems]


def render_report(run_dir: str | Path, now: datetime | None = None) -> Report:
    """The report of a run folder, as HTML (nothing written)."""
    run_dir = Path(run_dir).resolve()
    if not run_dir.is_dir():
        raise InputError(f"run folder not found: {run_dir}")
    records = discover(run_dir)
    if not records:
        raise InputError(f"{run_dir} holds no stage folders with a manifest.json: is it a run folder "
                         f"(<run.root>/<run.name>)?")
    finished = [r for r in records if not r.partial and not r.error]
    sections: list[Section] = [overview(run_dir, records)]
    loss_from = _humaneval_loss_source(finished)
    decontam = _last(finished, "decontam")
    execute = _last(finished, "execute")
    for rec in finished:
        sec = stage_section(StageFiles(run_dir, rec))
        sections.append(sec)
        if loss_from is not None and rec.name == loss_from.name:
            sections.append(humaneval_loss_section(StageFiles(run_dir, rec)))
        if rec is decontam and execute is None:
            sec.add(paper_table3())
        if rec is execute and decontam is not None:  # this run's Table 3, beside the paper's
            sections.append(table3_section(StageFiles(run_dir, decontam), StageFiles(run_dir, rec)))
    cost = llm_cost(run_dir, finished)
    if cost is not None:
        sections.append(cost)
    sections.append(paper_figures(finished))
    when = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    html = page(f"phi1 run report: {run_dir.name}",
                [f"run folder {run_dir}", f"generated {when} from the manifests and files of "
                 f"{len(finished)} finished stage(s)"], sections)
    return Report(run_dir, html, sections)


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write RUN_DIR/report.html (or ``out``) atomically; returns its path."""
    from phi1.files import write_atomic

    report = render_report(run_dir)
    path = Path(out) if out else report.run_dir / REPORT_FILE
    write_atomic(path, report.html)
    return path


# --------------------------------------------------------------------------- run-level sections


def overview(run_dir: Path, records: list[StageRecord]) -> Section:
    sec = Section(key="overview", title="Run overview", nav="overview")
    rows = []
    for r in records:
        m = r.manifest
        summary = m.get("summary") if isinstance(m.get("summary"), list) else []
        secs = (m.get("timings") or {}).get("seconds") if isinstance(m.get("timings"), dict) else None
        status = "unfinished (.partial)" if r.partial else ("manifest unreadable" if r.error else m.get("status", "?"))
        finished = str(m.get("finished_at", "")).replace("T", " ")[:19]
        rows.append((r.name, status, finished, secs, summary[0] if summary else ""))
        if r.partial:
            sec.problems.append(f"{r.name}: did not finish (its folder is {r.path.name}); no section")
        elif r.error:
            sec.problems.append(f"{r.name}: {r.error}; no section")
    sec.add(table(("stage", "status", "finished", "seconds", "summary"), rows, cls="overview"))
    total = sum(x[3] for x in rows if isinstance(x[3], (int, float)))
    sec.add(key_values([("stages", len(records)), ("stage time (s)", round(total, 1))]))
    return sec


def llm_cost(run_dir: Path, finished: list[StageRecord]) -> Section | None:
    """Every LLM usage record of the run (any manifest dict with a cost_usd), and the total."""
    rows = []
    for rec in finished:
        for where, u in usage_records(rec.manifest):
            rows.append((rec.name, where, u.get("model"), u.get("requests"), u.get("cache_hits"), u.get("sent"),
                         u.get("retries"), u.get("errors"), u.get("prompt_tokens"), u.get("completion_tokens"),
                         u.get("cost_usd")))
    if not rows:
        return None
    sec = Section(key="llm-cost", title="LLM cost of every stage", nav="LLM cost")
    nums = [r[10] for r in rows if isinstance(r[10], (int, float)) and not isinstance(r[10], bool)]
    rows.append(("total", "", "", *[sum(r[i] for r in rows if isinstance(r[i], (int, float)) and
                                        not isinstance(r[i], bool)) for i in range(3, 10)], round(sum(nums), 6)))
    sec.add(table(("stage", "manifest field", "model", "requests", "from cache", "sent", "retries", "errors",
                   "prompt tokens", "completion tokens", "cost USD"), rows))
    sec.add('<p>Cost is at the prices in each stage\'s <code>[&lt;stage&gt;.llm]</code> config '
            "(price_per_1m_input / price_per_1m_output); cached replies cost nothing.</p>")
    sec.sources = [f"{rec.name}/manifest.json" for rec in finished if usage_records(rec.manifest)]
    return sec


def paper_figures(finished: list[StageRecord]) -> Section:
    sec = Section(key="paper", title="The paper's figures beside this run's", nav="the paper")
    rows = [(r.name, line) for r in finished if (line := paper_reference(r.name, r.manifest))]
    if rows:
        sec.add(table(("stage", "the paper, and this run"), rows))
    sec.add(table(("figure", "value", "unit", "where"),
                  [(f.what, f"{f.value:g}" if f.unit == "%" else human(f.value), f.unit, f.where)
                   for f in FIGURES.values()],
                  caption=f"the paper's numbers used here ({PAPER})"))
    sec.sources = ["phi1/report/paper.py"]
    return sec


def _last(finished: list[StageRecord], family: str) -> StageRecord | None:
    """The last finished stage of a family ("execute", "decontam", ...)."""
    return next((r for r in reversed(finished) if stage_family(r.name) == family), None)


def _humaneval_loss_source(finished: list[StageRecord]) -> StageRecord | None:
    """The last finetune stage with the three losses, else the last pretrain stage with its two."""
    for family, key in (("finetune", "humaneval_solution_loss_after_finetuning"),
                        ("pretrain", "humaneval_solution_loss")):
        for rec in reversed(finished):
            metrics = rec.manifest.get("metrics")
            if stage_family(rec.name) == family and isinstance(metrics, dict) and key in metrics:
                return rec
    return None
