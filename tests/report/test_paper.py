"""The paper's figures: transcribed consistently, and the reference line beside each stage's numbers."""

from __future__ import annotations

import json
import math

import pytest

from phi1.report.paper import _REFERENCES, FIGURES, PRETRAIN_TOKENS_PER_GPU_S, TABLE3, human, paper_reference
from report_helpers import DATA, STAGES


def manifest(stage: str) -> dict:
    return json.loads((DATA / stage / "manifest.json").read_text())


def test_table_3_adds_up():
    """Each tau splits the 164 HumanEval problems, and each total is the subsets' weighted mean
    (to the paper's rounding): a typo in the transcription breaks one of these."""
    by_tau: dict[float, dict[str, object]] = {}
    for row in TABLE3:
        by_tau.setdefault(row.tau, {})[row.subset] = row
    assert sorted(by_tau) == [0.8, 0.85, 0.9, 0.95]
    for tau, rows in by_tau.items():
        sim, non, tot = rows["similar"], rows["non-similar"], rows["total"]
        assert sim.problems + non.problems == tot.problems == 164, tau
        for col in ("phi1", "phi1_pruned", "starcoder_prompted"):
            mean = (getattr(sim, col) * sim.problems + getattr(non, col) * non.problems) / 164
            assert abs(mean - getattr(tot, col)) < 0.1, (tau, col, mean)
            # a percentage of n problems is a whole number of problems
            for r in (sim, non):
                solved = getattr(r, col) * r.problems / 100
                assert abs(solved - round(solved)) < 0.06, (tau, r.subset, col)
    # the stricter the match (higher tau), the fewer problems count as similar
    assert [by_tau[t]["similar"].problems for t in (0.95, 0.9, 0.85, 0.8)] == [71, 93, 106, 116]


def test_headline_figures():
    assert FIGURES["humaneval_phi1"].value == 50.6 and FIGURES["mbpp_phi1"].value == 55.5
    assert FIGURES["ablation_stack_350m"].value < FIGURES["ablation_filtered_350m"].value \
        < FIGURES["ablation_codetextbook_350m"].value
    assert all(0 < f.value <= 100 for f in FIGURES.values() if f.unit == "%")
    assert all(f.where for f in FIGURES.values())
    assert 18_000 < PRETRAIN_TOKENS_PER_GPU_S < 19_000  # 51e9 tokens / (770 h * 3600 s)


@pytest.mark.parametrize("n, text", [(879.5e3, "879.5K"), (1.3e9, "1.3B"), (51200, "51.2K"), (12, "12"),
                                     (0.5, "0.5"), (float("nan"), "?"), (True, "?")])
def test_human(n, text):
    assert human(n) == text


def test_every_paper_level_stage_of_a_real_run_gets_its_line_with_this_runs_number():
    lines = {s: paper_reference(s, manifest(s)) for s in STAGES}
    assert {s for s, line in lines.items() if line} == {"ingest", "annotate", "filter", "tokenizer", "tokenize",
                                                        "mine", "synth", "decontam", "pretrain", "finetune",
                                                        "execute", "grade"}
    assert lines["execute"] == ("paper: HumanEval pass@1 50.6% for phi-1 at 1.3B params / 7B tokens (45% "
                                "phi-1-small at 350M, 29% phi-1-base); here 0.0%")
    assert lines["grade"].endswith("here 35.0%")
    assert "here 231.9K params, 12.29K tokens" in lines["pretrain"]
    assert "here 6 steps" in lines["finetune"]
    assert "here ~611.7K tokens (74.0%)" in lines["filter"]
    assert "here 220 files in, 191 kept" in lines["ingest"]
    assert all(line.startswith("paper: ") and "?" not in line for line in lines.values() if line)


def test_references_follow_the_benchmark_and_stage_variants():
    m = manifest("execute")
    m["problems"] = "runs/x/generate/mbpp.jsonl"
    assert "MBPP pass@1 55.5%" in paper_reference("execute", m)
    # a variant of a stage (ablation arms, seeds) reads like its family
    assert paper_reference("pretrain.filtered", manifest("pretrain")) == paper_reference("pretrain", manifest("pretrain"))
    assert paper_reference("synth.textbooks", {}).startswith("paper: <1B tokens of synthetic textbooks")
    # synth offline: nothing generated, said as such (it read "here ? kept")
    offline = {"counts": {"textbooks_asked": 200, "textbooks_kept": 0, "exercises_asked": 400, "exercises_kept": 0}}
    assert paper_reference("synth", offline).endswith("here 0 textbooks, 0 exercises kept")
    assert paper_reference("synth", {}).endswith("here none yet")
    assert paper_reference("embed", manifest("embed")) is None
    assert paper_reference("something-new", {"metrics": {}}) is None


@pytest.mark.parametrize("odd", [{}, None, [], {"metrics": "x", "counts": [1], "model": None, "funnel": 3},
                                 {"metrics": {"pass@1": math.nan, "grade_pct": "high", "tokens_per_s": math.inf},
                                  "counts": {"steps": None, "tokens": True}}])
def test_a_partial_or_odd_manifest_gives_question_marks_not_errors(odd):
    for stage, fn in _REFERENCES.items():
        line = fn(odd if isinstance(odd, dict) else {})  # the functions themselves, not the safety net
        assert line.startswith("paper: "), stage
        assert paper_reference(stage, odd) == line
