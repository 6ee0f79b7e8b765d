"""A real run folder to report on.

``data/run`` is the output of the shrunk demo (tests/e2e settings) with the
annotate teacher and the grader pointed at the test OpenAI server
(tests/helpers/openai_server.py) and ``log_every = 1``: every stage's
manifest, and the files the report reads (labels, the classifier's held-out
predictions, the filter's score shards, metrics.jsonl, per-task results,
grades). ``synth`` and ``decontam`` come from those stages' own tests' runs
(tests/synth: every drop reason scripted, diversity histogram on; tests/decontam:
planted near-copies of HumanEval problems), with their ``problems.jsonl`` and
``summary.json``, their start times set between ``mine`` and ``pretrain``.
Only ``versions``/``argv`` were dropped from the manifests and absolute paths
shortened. Tests copy it, then damage or extend the copy.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data" / "run"

# What the fixture run ran, in order; and the sections its report must have.
STAGES = ["ingest", "annotate", "embed", "classifier", "filter", "tokenizer", "tokenize", "mine", "synth",
          "decontam", "pretrain", "finetune", "generate", "execute", "grade"]
SECTIONS = (["overview"] + [f"stage-{s}" for s in STAGES[:12]] + ["humaneval-loss", "stage-generate",
                                                                  "stage-execute", "table3", "stage-grade",
                                                                  "llm-cost", "paper"])
# plots per section
PLOTS = {"stage-ingest": 1, "stage-annotate": 1, "stage-classifier": 1, "stage-filter": 1, "stage-mine": 1,
         "stage-synth": 2, "stage-decontam": 1, "stage-pretrain": 1, "stage-finetune": 1, "humaneval-loss": 1,
         "stage-execute": 1, "stage-grade": 1}


def copy_run(tmp_path: Path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(DATA, dest)
    return dest


def edit_manifest(run: Path, stage: str, fn: Any) -> None:
    path = run / stage / "manifest.json"
    m = json.loads(path.read_text())
    fn(m)
    path.write_text(json.dumps(m))


def edit_json(path: Path, fn: Any) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))
