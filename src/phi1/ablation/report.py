"""The ablation in the report's style: one chart, one table, the reading.

Like the run report, it reads only files: ``<ablation>/ablation.json`` (what
`phi1.ablation.run` wrote from the runs' manifests). `ablation_section(data)`
is a `phi1.report.html.Section` (the report package's building block), so a
report can include it; `write_ablation_report(folder)` puts it on its own page,
``<ablation>/ablation.html`` (self-contained, plots embedded), since an
ablation is many runs and not one run folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from phi1.ablation.stats import Spread
from phi1.errors import InputError

SUMMARY_FILE = "ablation.json"
REPORT_FILE = "ablation.html"

def paper_line() -> str:
    """The paper's figures this ablation mirrors (from the report's one table of them)."""
    from phi1.report.paper import FIGURES

    def pct(key: str) -> str:
        return f"{FIGURES[key].value:g}%"

    return (f"The paper (§2.1, Figure 2.1): a 350M model reaches HumanEval pass@1 {pct('ablation_stack_350m')} on "
            f"unfiltered Stack+ (96k steps, ~200B tokens), {pct('ablation_filtered_350m')} on the filtered subset "
            f"(36k steps), {pct('ablation_codetextbook_350m')} on filtered + synthetic textbooks; phi-1-base (1.3B) "
            f"{pct('humaneval_phi1_base')}, phi-1 after CodeExercises finetuning {pct('humaneval_phi1')}. This "
            "ablation asks the same question of a model about a hundred times smaller, on the Python standard "
            "library.")


COLORS = ("#d1495b", "#2f6db5", "#2e9e5b", "#7a4fb5")


def read_summary(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / SUMMARY_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path} not found: run `phi1 ablation CONFIG` first") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not valid JSON ({e}); re-run `phi1 ablation CONFIG` to rewrite it") from None
    if not isinstance(data, dict) or not isinstance(data.get("arms"), list):
        raise InputError(f"{path} is not an ablation summary (no list 'arms')")
    return data


def _spreads(arm: dict[str, Any]) -> dict[str, Spread]:
    out = {}
    for key, s in (arm.get("stats") or {}).items():
        out[key] = Spread(tuple(s["values"]), s["n"], s["mean"], s["std"], s["min"], s["max"])
    return out


def _metrics(data: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(key, label, lower is better) of each metric, in the summary's order."""
    return [(m["key"], m.get("label", m["key"]), bool(m.get("lower_is_better"))) for m in data.get("metrics") or []]


def _count(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def ablation_chart(data: dict[str, Any]) -> str:
    """Per metric, one panel: every seed as a dot, the arm's mean ± sample std as a diamond with bars."""
    from phi1.report import charts

    arms = [(a["name"], _spreads(a)) for a in data["arms"]]
    keys = [(k, label, low) for k, label, low in _metrics(data) if any(k in s for _, s in arms)]

    @charts.chart
    def draw() -> str:
        fig, axes = charts.figure(ncols=max(len(keys), 1), width=10.0, height=3.4)
        for ax, (key, label, low) in zip(axes, keys):
            for i, (_, stats) in enumerate(arms):
                st = stats.get(key)
                if st is None:
                    continue
                c = COLORS[i % len(COLORS)]
                offsets = [(j - (st.n - 1) / 2) * 0.08 for j in range(st.n)]
                ax.plot([i + o for o in offsets], st.values, "o", color=c, alpha=0.55, markersize=5)
                ax.errorbar([i + 0.3], [st.mean], yerr=[[st.std or 0.0], [st.std or 0.0]], fmt="D", color=c,
                            capsize=4, markersize=6)
                ax.annotate(f"{st.mean:.3f}", (i + 0.3, st.mean), textcoords="offset points", xytext=(6, -3),
                            fontsize=8)
            ax.set_xticks(range(len(arms)), [name for name, _ in arms])
            ax.set_xlim(-0.5, len(arms) - 0.2)
            ax.set_title(label + ("\n(lower is better)" if low else "\n(higher is better)"), fontsize=9)
        return charts.to_img(fig, "ablation: each seed (dots) and the mean ± std over seeds (diamonds), per arm")

    return draw()


def ablation_section(data: dict[str, Any]) -> Any:
    """The report section of an ablation summary (the content of ablation.json)."""
    from phi1.report.html import Section, esc, paragraph, table

    sec = Section(key="ablation", title="Ablation: filtered vs unfiltered data at equal tokens (Figure 2.1 in "
                  "miniature)", nav="ablation")
    sec.paper.append(paper_line())
    s = data.get("setup") or {}
    seeds = ", ".join(map(str, data.get("seeds") or []))
    sec.add(paragraph(
        f"Each arm pretrains the same model ({s.get('model')}) for the same {s.get('pretrain_steps')} steps "
        f"({_count(s.get('pretrain_tokens'))} tokens seen) from its own corpus, then finetunes {s.get('finetune_steps')} steps "
        f"on the same exercises ({s.get('exercises')}); once per training seed ({seeds}). The unfiltered arm samples "
        f"its corpus at rate {data.get('unfiltered_rate')} ({data.get('unfiltered_rate_source')}), so both corpora "
        "hold about the same tokens."))
    metrics = _metrics(data)
    if data["arms"]:
        sec.add(ablation_chart(data))
    rows = []
    for a in data["arms"]:
        st = _spreads(a)
        n = max((x.n for x in st.values()), default=0)
        rows.append([a.get("label", a["name"]), a.get("corpus_tokens"), n,
                     *[st[k].show() if k in st else None for k, _, _ in metrics]])
    sec.add(table(("arm", "corpus tokens", "seeds", *[f"{label} (mean ± std, min–max)" for _, label, _ in metrics]),
                  rows, caption="per arm, over training seeds (sample standard deviation)"))
    readings = [c.get("reading", "") for c in data.get("comparisons") or []]
    if readings:
        sec.add('<ul class="summary">' + "".join(f"<li>{esc(r)}</li>" for r in readings) + "</ul>")
    for arm, why in (data.get("skipped_arms") or {}).items():
        sec.problems.append(f"arm {arm} skipped: {why}")
    sec.sources = [SUMMARY_FILE, "<arm>-s<seed>/finetune/manifest.json", "<arm>-s<seed>/execute/manifest.json",
                   "<arm>/tokenize/manifest.json"]
    return sec


def write_ablation_report(folder: str | Path) -> Path:
    """``<folder>/ablation.html`` from ``<folder>/ablation.json``; returns its path."""
    from phi1.files import write_atomic
    from phi1.report.html import page

    folder = Path(folder)
    data = read_summary(folder)
    html = page(f"phi1 ablation: {folder.resolve().name}",
                [f"ablation folder {folder.resolve()}",
                 f"generated from {SUMMARY_FILE} ({data.get('finished_at', '?')}, {len(data.get('runs') or [])} runs)"],
                [ablation_section(data)])
    path = folder / REPORT_FILE
    write_atomic(path, html)
    return path
