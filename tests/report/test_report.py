"""`phi1 report`: a section per stage that ran, sources named, broken inputs cost one section."""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from phi1.cli import main
from phi1.errors import InputError
from phi1.report import charts, write_report
from phi1.report.build import overview, render_report
from phi1.report.run_files import StageFiles, discover
from phi1.report.sections import BUILDERS, stage_section
from report_helpers import PLOTS, SECTIONS, edit_manifest


class _Sections(HTMLParser):
    """section key -> {text, images (src), problems, sources, classes}; plus every src/href in the page."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, dict] = {}
        self.links: list[str] = []
        self.scripts_with_src: list[str] = []
        self._cur: dict | None = None
        self._p: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ("src", "href"):
            if k in a:
                self.links.append(a[k])
        if tag == "script" and "src" in a:
            self.scripts_with_src.append(a["src"])
        if tag == "section":
            self._cur = {"text": "", "images": [], "problems": [], "sources": "", "paper": []}
            self.sections[a["data-section"]] = self._cur
        elif tag == "img" and self._cur is not None:
            self._cur["images"].append(a["src"])
        elif tag == "p" and self._cur is not None:
            self._p = a.get("class", "")
            self._cur.setdefault("_buf", "")
            self._cur["_buf"] = ""

    def handle_endtag(self, tag):
        if tag == "section":
            self._cur = None
        elif tag == "p" and self._cur is not None and self._p is not None:
            text = self._cur.pop("_buf", "")
            if self._p == "problem":
                self._cur["problems"].append(text)
            elif self._p == "source":
                self._cur["sources"] = text
            elif self._p == "paper":
                self._cur["paper"].append(text)
            self._p = None

    def handle_data(self, data):
        if self._cur is not None:
            self._cur["text"] += data
            if self._p is not None:
                self._cur["_buf"] = self._cur.get("_buf", "") + data


def parse(html: str) -> _Sections:
    p = _Sections()
    p.feed(html)
    return p


def report(run: Path) -> _Sections:
    path = write_report(run)
    assert path == run / "report.html"
    return parse(path.read_text())


# --------------------------------------------------------------------------- the whole report


@pytest.fixture(scope="module")
def page(fixture_report) -> _Sections:
    return parse(fixture_report.read_text())


def test_every_stage_that_ran_has_its_section_with_plots_and_sources(page, fixture_report):
    run = fixture_report.parent
    assert list(page.sections) == SECTIONS
    s = page.sections
    # the plots each section promises, and no others
    assert {k: len(v["images"]) for k, v in s.items() if v["images"]} == PLOTS
    # where the numbers came from
    assert "classifier/validation.json" in s["stage-classifier"]["sources"]
    assert "filter/scores/*.npz (2 files)" in s["stage-filter"]["sources"]
    assert "annotate/labels.jsonl (150 records)" in s["stage-annotate"]["sources"]
    assert "pretrain/metrics.jsonl (15 records)" in s["stage-pretrain"]["sources"]
    assert "grade/grades.jsonl (20 records)" in s["stage-grade"]["sources"]
    assert "finetune/manifest.json" in s["humaneval-loss"]["sources"]
    for stage in ("ingest", "embed", "tokenizer", "tokenize", "generate", "execute"):
        assert f"{stage}/manifest.json" in s[f"stage-{stage}"]["sources"]
    assert not any(sec["problems"] for sec in s.values())
    # numbers from the files, not made up: the funnel, the cut, the per-task table, the cost total
    assert "data_literals" in s["stage-ingest"]["text"] and "191" in s["stage-ingest"]["text"]
    assert "threshold" in s["stage-filter"]["text"] and "68.06" in s["stage-filter"]["text"]  # 130 of 191 kept
    assert s["stage-execute"]["text"].count("HumanEval/") >= 20
    assert "after finetuning" in s["humaneval-loss"]["text"] and "6.18" in s["humaneval-loss"]["text"]
    cost = sum(json.loads((run / stage / "manifest.json").read_text())[k]["llm"]["cost_usd"]
               for stage, k in (("annotate", "metrics"), ("synth", "metrics")))
    cost += json.loads((run / "grade/manifest.json").read_text())["llm"]["cost_usd"]
    assert f"{cost:.4g}" in s["llm-cost"]["text"]
    # synthetic data: drop reasons and coverage per kind; decontam: per-tau counts, this run's Table 3
    assert "near_duplicate_of_reference" in s["stage-synth"]["text"] and "seeds covered" in s["stage-synth"]["text"]
    assert "flagged at τ=0.95" in s["stage-decontam"]["text"] and "81.7" not in s["stage-decontam"]["text"]
    t3 = s["table3"]
    assert "decontam/problems.jsonl" in t3["sources"] and "execute/per_task.jsonl" in t3["sources"]
    assert "81.7" in t3["text"] and "144 problems have no results" in t3["text"]


def test_the_report_is_self_contained(page, fixture_report):
    html = fixture_report.read_text()
    assert not page.scripts_with_src
    assert "<link" not in html
    srcs = [x for x in page.links if not x.startswith("#")]
    assert srcs and all(x.startswith("data:image/svg+xml;base64,") for x in srcs)
    for src in srcs:
        svg = base64.b64decode(src.split(",", 1)[1]).decode()
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg
        assert re.search(r'<svg[^>]*width="[\d.]+pt"[^>]*height="[\d.]+pt"', svg)  # a natural size to decode to
        assert not re.search(r'(href|src)="https?:', svg)
    assert "Content-Security-Policy" in html  # and the browser itself refuses any fetch


def test_a_chart_is_the_same_bytes_every_time():
    draw = lambda: charts.bars(["a", "b"], [1.0, 2.0], "t", reference=(1.5, "ref"))  # noqa: E731
    assert draw() == draw()


def test_paper_lines_stand_beside_this_runs_numbers(page):
    s = page.sections
    assert "50.6%" in s["stage-execute"]["paper"][0] and "here 0.0%" in s["stage-execute"]["paper"][0]
    assert "52%" in s["stage-grade"]["paper"][0] and "here 35.0%" in s["stage-grade"]["paper"][0]
    assert "~17%" in s["stage-filter"]["paper"][0]
    assert "Table 2" in s["paper"]["text"] and "12.19" in s["paper"]["text"]
    assert not s["stage-classifier"]["paper"]  # the paper reports no classifier metrics: no line


# --------------------------------------------------------------------------- only what ran


def test_sections_only_for_stages_that_ran(run_dir):
    shutil.rmtree(run_dir / "grade")
    shutil.rmtree(run_dir / "finetune")
    shutil.rmtree(run_dir / "synth")
    shutil.move(run_dir / "execute", run_dir / "execute.partial")  # interrupted: no manifest
    (run_dir / "execute.partial" / "manifest.json").unlink()
    edit_manifest(run_dir, "annotate", lambda m: m["metrics"].pop("llm"))  # an offline teacher costs nothing
    s = report(run_dir).sections
    assert list(s) == ["overview"] + [f"stage-{x}" for x in ("ingest", "annotate", "embed", "classifier", "filter",
                                                            "tokenizer", "tokenize", "mine", "decontam",
                                                            "pretrain")] + \
        ["humaneval-loss", "stage-generate", "paper"]
    # the HumanEval-solution loss now comes from pretrain: before and after pretraining only
    assert "after finetuning" not in s["humaneval-loss"]["text"]
    assert "pretrain/manifest.json" in s["humaneval-loss"]["sources"]
    assert any("execute: did not finish" in p for p in s["overview"]["problems"])
    # no results to split: decontam shows the paper's Table 3 for reference
    assert "the paper's Table 3" in s["stage-decontam"]["text"] and "81.7" in s["stage-decontam"]["text"]


def test_a_stage_without_a_builder_gets_the_generic_section(run_dir):
    (run_dir / "ablate").mkdir()
    (run_dir / "ablate" / "manifest.json").write_text(json.dumps({
        "stage": "ablate", "status": "done", "counts": {"arms": 3, "dropped_diverged": 1, "dropped_oom": 0},
        "metrics": {"spread": 0.02, "table": {"a": 1}}, "summary": ["ablate   compared 3 arms"],
        "timings": {"started": "2099-01-01T00:00:00+00:00", "seconds": 1.5}}))
    rec = discover(run_dir)[-1]
    assert rec.name == "ablate"  # in the order the stages ran
    s = parse(stage_section(StageFiles(run_dir, rec)).render()).sections["stage-ablate"]
    assert len(s["images"]) == 1  # the drop reasons
    assert "ablate   compared 3 arms" in s["text"] and "arms" in s["text"] and "0.02" in s["text"]
    assert s["sources"] == "Source: ablate/manifest.json" and not s["paper"]


def test_synth_without_an_endpoint_shows_its_plan_not_a_problem(run_dir):
    """Offline, synth writes prompts and coverage but no records: the section
    shows the coverage and the cost estimate, and names no problem."""
    def offline(m):
        m["metrics"] = {
            "exercises": {"requested_coverage": {"concept": {"covered": 251, "total": 400, "share": 0.6275},
                                                 "seeds": 400}},
            "textbooks": {"requested_coverage": {"concept": {"covered": 158, "total": 444, "share": 0.356}}},
            "estimate": {"requests": 600, "model": "gpt-4o-mini", "live_usd": 0.27, "batch_usd": 0.13},
            "prompts": {"prompts": ["prompts/exercises.jsonl.gz"], "batch": ["batch/requests-exercises-0000.jsonl"]}}
    edit_manifest(run_dir, "synth", offline)
    s = report(run_dir).sections["stage-synth"]
    assert not s["problems"], s["problems"]
    assert "251" in s["text"] and "400" in s["text"] and "0.27" in s["text"] and "batch/requests" in s["text"]


# --------------------------------------------------------------------------- broken inputs cost one section


def _truncated_labels(run):
    lines = (run / "annotate" / "labels.jsonl").read_text().splitlines()
    (run / "annotate" / "labels.jsonl").write_text("\n".join(lines[:40]) + "\n" + lines[40][:25] + "\n")


def _training_log_resumed_and_cut(run):
    path = run / "finetune" / "metrics.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + lines[:3]) + '\n{"kind": "train", "step": 13, "lo')  # resumed, then crashed


DAMAGE_A = {  # one damaged run, one report: every other section must still be drawn
    "stage-annotate": ("labels.jsonl:41", _truncated_labels),
    "stage-classifier": ("validation.json not found", lambda r: (r / "classifier/validation.json").unlink()),
    "stage-filter": ("00001.npz is unreadable",
                     lambda r: (r / "filter/scores/00001.npz").write_bytes(b"PK\x03\x04 not really a zip")),
    "stage-ingest": ("no document funnel", lambda r: edit_manifest(
        r, "ingest", lambda m: m.update(funnel={"documents_in": "220", "dropped": [1, 2]}, counts=[]))),
    "stage-execute": ("no pass@k metrics", lambda r: edit_manifest(
        r, "execute", lambda m: m.update(metrics={"pass@1": float("nan"), "pass@10": "high"},
                                         per_task=["oops", {"task_id": None}]))),
    "stage-finetune": ("finetune/metrics.jsonl:13", _training_log_resumed_and_cut),
    "stage-synth": ("no nearest-neighbour histogram (OSError: no model)", lambda r: edit_manifest(
        r, "synth", lambda m: m["metrics"]["exercises"].update(
            coverage={"concept": {"covered": "x", "total": 0}, "seeds": 3},
            nearest_neighbour={"error": "OSError: no model"}))),
}
DAMAGE_B = {
    "overview": ("corrupt manifest", lambda r: (r / "mine/manifest.json").write_text('{"stage": "mine", "st')),
    "stage-classifier": ("not two number lists", lambda r: (r / "classifier/validation.json").write_text(
        json.dumps({"positive": [1, 0, "x"], "predicted": [0.5]}))),
    "stage-grade": ("grades.jsonl not found", lambda r: (r / "grade/grades.jsonl").unlink()),
    "table3": ("problems.jsonl", lambda r: (r / "decontam/problems.jsonl").write_text('{"task_id": 1}\n')),
    "stage-decontam": ("no per-τ counts", lambda r: edit_manifest(
        r, "decontam", lambda m: m.update(counts={"records": "many"}, metrics={"similar_problems": [1]},
                                          decontam={"inputs": {"mine": "x"}, "pruned": []}))),
    "stage-pretrain": ("metrics.jsonl not found", lambda r: (
        (r / "pretrain/metrics.jsonl").unlink(), edit_manifest(r, "pretrain", lambda m: m.update(
            metrics="fast", model=None, evals=[{"step": 0, "val_loss": 7.0}, {"step": "x"}, 3])))),
}


@pytest.mark.parametrize("damage", [DAMAGE_A, DAMAGE_B], ids=["A", "B"])
def test_a_broken_input_costs_its_section_never_the_report(run_dir, damage):
    for _, do in damage.values():
        do(run_dir)
    s = report(run_dir).sections
    for key, (problem, _) in damage.items():
        assert any(problem in p for p in s[key]["problems"]), (key, s[key]["problems"])
    for key in set(SECTIONS) - set(damage) - {"stage-mine"}:
        assert not s[key]["problems"], (key, s[key]["problems"])
    drawn = {k for k, v in s.items() if v["images"]}
    if damage is DAMAGE_A:
        # what survives the damage is still drawn: the labels before the bad line, the confusion matrix,
        # the other score shard, the training log up to the cut (the resumed steps counted once)
        assert {"stage-annotate", "stage-classifier", "stage-filter", "stage-finetune", "stage-pretrain",
                "stage-grade", "stage-synth"} <= drawn
        assert "(40 records)" in s["stage-annotate"]["sources"] and "(1 files)" in s["stage-filter"]["sources"]
        assert "re-run" in s["stage-classifier"]["problems"][0]
        assert "HumanEval/" not in s["stage-execute"]["text"]  # no usable per-task rows, no table
    else:
        assert "stage-mine" not in s and any("mine" in p for p in s["overview"]["problems"])
        assert {"stage-pretrain", "stage-classifier", "stage-execute"} <= drawn  # pretrain: from manifest evals


def test_a_failing_section_builder_is_contained(run_dir, monkeypatch):
    def broken(f, sec):
        sec.add("<p>partial</p>")
        raise ZeroDivisionError("division by zero")

    monkeypatch.setitem(BUILDERS, "tokenize", ("training tokens", broken))
    rec = next(r for r in discover(run_dir) if r.name == "tokenize")
    sec = stage_section(StageFiles(run_dir, rec))
    assert sec.problems == ["this section could not be completed: ZeroDivisionError: division by zero"]
    assert sec.sources == ["tokenize/manifest.json"] and "partial" in sec.render()


def test_text_from_files_is_escaped(run_dir):
    evil = '<script>alert("x")</script><img src="http://evil.example/x.png">'
    edit_manifest(run_dir, "execute", lambda m: m["per_task"][0].update(task_id=evil, common_failure=evil))
    edit_manifest(run_dir, "ingest", lambda m: m["summary"].insert(0, evil))
    records = {r.name: r for r in discover(run_dir)}
    html = stage_section(StageFiles(run_dir, records["execute"])).render() + overview(run_dir, list(records.values())).render()
    assert evil not in html
    assert html.count("&lt;script&gt;alert") == 4  # task id, its failure, the failures grouped, the summary
    assert "http://evil.example" not in parse(html).links


# --------------------------------------------------------------------------- the command


def _small_run(run_dir: Path) -> Path:
    """The fixture run cut to three cheap stages (one plot), for tests of the command itself."""
    for d in run_dir.iterdir():
        if d.name not in {"classifier", "tokenizer", "tokenize"}:
            shutil.rmtree(d)
    return run_dir


def test_phi1_report_writes_the_file_and_names_its_problems(run_dir, capsys):
    run = _small_run(run_dir)
    (run / "classifier/validation.json").unlink()
    out = run.parent / "elsewhere.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"-> {out}" in printed and "5 sections (3 stages), 1 plots" in printed
    assert "classifier: classifier/validation.json not found" in printed
    assert out.read_text().startswith("<!DOCTYPE html>") and not (run / "report.html").exists()


def test_not_a_run_folder_is_one_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err.strip() == f"error: run folder not found: {tmp_path / 'nope'}"
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no stage folders with a manifest.json"):
        write_report(tmp_path / "empty")
    assert not (tmp_path / "empty" / "report.html").exists()


def test_a_failed_write_leaves_the_previous_report(run_dir, monkeypatch):
    import errno
    import os

    run = _small_run(run_dir)
    path = write_report(run)
    before = path.read_text()
    (run / "tokenizer/manifest.json").write_text("{")  # the new report would differ

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_report(run)
    assert path.read_text() == before and [p.name for p in run.iterdir() if p.is_file()] == ["report.html"]
