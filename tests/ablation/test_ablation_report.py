"""ablation.html from ablation.json: one chart, one table, the reading; bad files are one-line errors."""

from __future__ import annotations

import json

import pytest

from phi1.ablation.report import read_summary, write_ablation_report
from phi1.ablation.stats import compare, spread
from phi1.errors import InputError

METRICS = [{"key": "humaneval_solution_loss_after_finetuning", "label": "HumanEval-solution loss after finetuning",
            "lower_is_better": True},
           {"key": "pass@1", "label": "HumanEval pass@1", "lower_is_better": False}]


def _summary() -> dict:
    a, b = spread([3.9, 4.0, 4.1]), spread([3.5, 3.6, 3.55])
    z = spread([0.0, 0.0, 0.0])
    arms = [{"name": "unfiltered", "label": "(a) ingest x0.5", "corpus_tokens": 1000,
             "stats": {"humaneval_solution_loss_after_finetuning": a.as_dict(), "pass@1": z.as_dict()}},
            {"name": "filtered", "label": "(b) filter", "corpus_tokens": 990,
             "stats": {"humaneval_solution_loss_after_finetuning": b.as_dict(), "pass@1": z.as_dict()}}]
    comps = [compare("HumanEval-solution loss after finetuning", "unfiltered", a, "filtered", b, True).as_dict()]
    return {"arms": arms, "metrics": METRICS, "comparisons": comps, "seeds": [0, 1, 2], "unfiltered_rate": 0.5,
            "unfiltered_rate_source": "filter's token keep rate", "finished_at": "2026-11-30T00:00:00+00:00",
            "skipped_arms": {"filtered+synthetic": "'synth.textbooks' has no records"},
            "setup": {"model": "tiny", "pretrain_steps": 200, "pretrain_tokens": 819200, "finetune_steps": 40,
                      "exercises": "mine"}, "runs": [{}] * 6}


def test_page_has_one_chart_one_table_and_the_reading(tmp_path):
    (tmp_path / "ablation.json").write_text(json.dumps(_summary()))
    html = write_ablation_report(tmp_path).read_text()
    assert html.count('<img class="chart"') == 1 and html.count("<table") == 1
    assert "3.550 ± 0.050 (3.500–3.600)" in html  # the filtered arm's row, from the stats written
    assert "4.000 ± 0.100 (3.900–4.100)" in html
    assert "suggestive, not established" in html  # three seeds per arm, separated
    assert "arm filtered+synthetic skipped" in html and "Figure 2.1" in html
    assert html.index("after finetuning (mean") < html.index("HumanEval pass@1 (mean")  # the summary's order
    assert "(819,200 tokens seen)" in html
    assert "http://" not in html.replace("http://www.w3.org", "")  # nothing fetched


def test_missing_or_broken_summary_is_a_one_line_error(tmp_path):
    with pytest.raises(InputError, match="ablation.json not found: run `phi1 ablation CONFIG` first"):
        read_summary(tmp_path)
    (tmp_path / "ablation.json").write_text("{not json")
    with pytest.raises(InputError, match="is not valid JSON"):
        read_summary(tmp_path)
    (tmp_path / "ablation.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="is not an ablation summary"):
        read_summary(tmp_path)


@pytest.mark.skipif(__import__("phi1.report.browser", fromlist=["find_chromium"]).find_chromium() is None,
                    reason="no Chromium: `apt-get install chromium` (or `make setup` as root)")
def test_page_renders_in_headless_chromium(tmp_path):
    from phi1.report.browser import check_report

    (tmp_path / "ablation.json").write_text(json.dumps(_summary()))
    seen = check_report(write_ablation_report(tmp_path), width=1200, height=900)
    assert seen.console_errors == [] and seen.requests == []
    assert len(seen.images) == 1 and seen.images[0]["width"] > 0 and not seen.images[0]["error"]


def test_phi1_report_on_an_ablation_folder_writes_its_page(tmp_path, capsys):
    from phi1.cli import main

    (tmp_path / "ablation.json").write_text(json.dumps(_summary()))
    assert main(["report", str(tmp_path)]) == 0
    assert f"-> {tmp_path / 'ablation.html'}" in capsys.readouterr().out
    assert (tmp_path / "ablation.html").read_text().count("<table") == 1
