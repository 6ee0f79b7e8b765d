"""The ablation in the report's style: one chart, one table, the reading.

`ablation_section(summary)` is a `phi1.report.html.Section` (the report
package's building block); `write_ablation_report` puts it on its own page,
``<ablation>/ablation.html`` (one self-contained file, plots embedded), since
an ablation is many runs and not one run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from phi1.ablation.run import METRICS, REPORT_FILE, SUMMARY_FILE, AblationSummary

PAPER_LINE = ("The paper (Figure 2.1, 350M parameters, ~26B tokens seen): HumanEval pass@1 12.19% on unfiltered "
              "Stack+ vs 17.68% on the filtered CodeTextbook; 29% adding synthetic textbooks; then 50.6% after "
              "CodeExercises finetuning at 1.3B. This ablation asks the same question of a model thousands of "
              "times smaller, on the Python standard library.")


def ablation_chart(summary: AblationSummary) -> str:
    """Per metric, one panel: every seed as a dot, the arm's mean ± sample std as a bar."""
    from phi1.report import charts

    @charts.chart
    def draw() -> str:
        keys = [(k, label, low) for k, label, low in METRICS if any(k in a.stats for a in summary.arms)]
        fig, axes = charts.figure(ncols=max(len(keys), 1), width=10.0, height=3.4)
        colors = [charts.RED, charts.BLUE, charts.GREEN, charts.PURPLE]
        names = [a.name for a in summary.arms]
        for ax, (key, label, low) in zip(axes, keys):
            for i, arm in enumerate(summary.arms):
                st = arm.stats.get(key)
                if st is None:
                    continue
                c = colors[i % len(colors)]
                offsets = [(j - (st.n - 1) / 2) * 0.08 for j in range(st.n)]
                ax.plot([i + o for o in offsets], st.values, "o", color=c, alpha=0.55, markersize=5)
                ax.errorbar([i + 0.3], [st.mean], yerr=[[st.std or 0.0], [st.std or 0.0]], fmt="D", color=c,
                            capsize=4, markersize=6)
                ax.annotate(f"{st.mean:.3f}", (i + 0.3, st.mean), textcoords="offset points", xytext=(6, -3),
                            fontsize=8)
            ax.set_xticks(range(len(names)), names)
            ax.set_xlim(-0.5, len(names) - 0.2)
            ax.set_title(label + (" (lower is better)" if low else " (higher is better)"), fontsize=9)
        return charts.to_img(fig, "ablation: each seed (dots) and the mean ± std over seeds (diamonds), per arm")

    return draw()


def ablation_section(summary: AblationSummary) -> Any:
    """The report section: the chart, the per-arm table, the reading, the sources."""
    from phi1.report.html import Section, esc, paragraph, table

    sec = Section(key="ablation", title="Ablation: filtered vs unfiltered data at equal tokens (Figure 2.1 in "
                  "miniature)", nav="ablation")
    sec.paper.append(PAPER_LINE)
    s = summary.setup
    sec.add(paragraph(f"Each arm pretrains the same model ({s.get('model')}) for the same {s.get('pretrain_steps')} "
                      f"steps ({s.get('pretrain_tokens')} tokens seen) from a different corpus, then finetunes "
                      f"{s.get('finetune_steps')} steps on the same exercises ({s.get('exercises')}); once per "
                      f"training seed ({', '.join(map(str, summary.seeds))}). The unfiltered arm samples its corpus "
                      f"at rate {summary.rate:.4g} ({summary.rate_source}) so both corpora hold about the same "
                      "tokens."))
    if summary.arms:
        sec.add(ablation_chart(summary))
    rows = []
    for a in summary.arms:
        row: list[Any] = [a.label, a.corpus_tokens, len(a.stats[METRICS[0][0]].values) if METRICS[0][0] in a.stats
                          else 0]
        row += [a.stats[k].show() if k in a.stats else None for k, _, _ in METRICS]
        rows.append(row)
    sec.add(table(("arm", "corpus tokens", "seeds", *[label + " (mean ± std, min–max)" for _, label, _ in METRICS]),
                  rows, caption="per arm, over seeds (sample standard deviation)"))
    if summary.comparisons:
        sec.add('<ul class="summary">' + "".join(f"<li>{esc(c.reading)}</li>" for c in summary.comparisons)
                + "</ul>")
    for arm, why in summary.skipped.items():
        sec.problems.append(f"arm {arm} skipped: {why}")
    sec.sources = [SUMMARY_FILE] + [f"{r.run}/<stage>/manifest.json" for r in summary.runs[:1]] + [
        "(every arm x seed run folder likewise)"]
    return sec


def write_ablation_report(summary: AblationSummary) -> Path:
    from phi1.files import write_atomic
    from phi1.report.html import page

    sec = ablation_section(summary)
    html = page(f"phi1 ablation: {summary.root.name}",
                [f"ablation folder {summary.root}", f"generated {summary.finished_at}; {len(summary.runs)} runs"],
                [sec])
    path = summary.root / REPORT_FILE
    write_atomic(path, html)
    return path
