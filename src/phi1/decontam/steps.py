"""The decontamination scan and the document pruning as datatrove steps, so a
corpus of any size is checked by the executor in ``[decontam.executor]``
(local processes, Slurm array jobs, Ray) without code changes.

`ContaminationScan` runs the three signals over its shard of records and
writes, when the task finishes (atomically)::

    <rows_dir>/<rank>.jsonl.gz   one similarity row per record
    <tally_dir>/<rank>.json      the per-problem tally, merged by the stage

A rank that finished is skipped on a re-run (datatrove's completion markers),
and its files are already complete. `FlaggedFilter` drops the documents whose
id is listed in a file (the records flagged at ``prune_tau``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.utils.batching import batched

from phi1.decontam.scan import ProblemIndex, ProblemTally, Scanner, ScanOptions
from phi1.decontam.snippets import Snippet, TrainingRecord, document_snippets
from phi1.errors import InputError

EXERCISE_KIND = "exercise"
KIND_KEY = "phi1_decontam_kind"


def exercise_adapter(reader: Any, data: dict, path: str, id_in_file: int | str) -> dict:
    """datatrove adapter for exercise records: text = prompt + solution."""
    prompt, solution = data.get("prompt"), data.get("solution")
    if not isinstance(prompt, str) or not isinstance(solution, str):
        # datatrove gives the path relative to the reader's folder and a 0-based record number
        folder = getattr(getattr(reader, "data_folder", None), "path", "")
        where = str(Path(folder) / path) if folder else path
        line = f":{int(id_in_file) + 1}" if isinstance(id_in_file, int) else f" (record {id_in_file})"
        raise InputError(f"{where}{line}: not an exercise record (string 'prompt' and 'solution')")
    rid = data.get("id")
    return {"text": prompt + solution, "id": str(rid) if rid is not None else f"{path}/{id_in_file}",
            "metadata": {KIND_KEY: EXERCISE_KIND, "path": f"{path}:{int(id_in_file) + 1}"
                         if isinstance(id_in_file, int) else path}}


def exercise_reader(folder: Path) -> Any:
    """datatrove reader over an exercises dataset (train.jsonl.gz, val.jsonl.gz)."""
    from datatrove.pipeline.readers import JsonlReader

    if not folder.is_dir() or not any(p.name.endswith((".jsonl", ".jsonl.gz")) for p in folder.iterdir()):
        raise InputError(f"no exercise files (*.jsonl.gz) in {folder}")
    return JsonlReader(str(folder), glob_pattern="*.jsonl*", adapter=exercise_adapter, add_file_path=False,
                       recursive=False)


def to_record(doc: Any) -> TrainingRecord:
    """A datatrove Document as a training record (exercise: one snippet)."""
    where = str(doc.metadata.get("path", "") or doc.metadata.get("file_path", ""))
    if doc.metadata.get(KIND_KEY) == EXERCISE_KIND:
        return TrainingRecord(str(doc.id), doc.text, [Snippet(doc.text)], where)
    return TrainingRecord(str(doc.id), doc.text, document_snippets(doc.text), where)


class ContaminationScan(PipelineStep):
    """Similarity rows and the per-problem tally of one task's records."""

    name = "🧪 contamination scan"
    type = "🔎 - DECONTAM"

    def __init__(self, problems: str, options: ScanOptions, rows_dir: str, tally_dir: str, embed_cfg: Any = None,
                 batch_size: int = 2048, threads: int | None = None, problem_vectors: str | None = None):
        super().__init__()
        self.problem_vectors = problem_vectors  # .npy of the problems' embeddings (else each task embeds them)
        self.problems = problems
        self.options = options
        self.rows_dir = rows_dir
        self.tally_dir = tally_dir
        self.embed_cfg = embed_cfg
        self.batch_size = batch_size
        self.threads = threads

    def run(self, data: Any, rank: int = 0, world_size: int = 1) -> Any:
        from phi1.evaluate.problems import load_problems
        from phi1.files import atomic_open, jsonl_line, write_json_atomic

        embedder = None
        if self.options.uses("embedding"):
            from phi1.decontam.embedding import build_normalized_embedder

            embedder = build_normalized_embedder(self.embed_cfg, rank=rank, threads=self.threads)
        try:
            vectors = None
            if embedder is not None and self.problem_vectors:
                import numpy as np

                vectors = np.load(self.problem_vectors, allow_pickle=False)
            index = ProblemIndex.build(load_problems(self.problems).values(), self.options, embedder, vectors)
            scanner = Scanner(index, self.options, embedder)
            with atomic_open(Path(self.rows_dir) / f"{rank:05d}.jsonl.gz", "w") as fh:
                for batch in batched(data, self.batch_size):
                    with self.track_time("batch"):
                        rows = scanner.scan([to_record(d) for d in batch])
                    for row in rows:
                        fh.write(jsonl_line(row) + "\n")
                    self.stat_update("records", value=len(batch))
                    self.stat_update("text_bytes", value=sum(len(d.text.encode("utf-8", "replace")) for d in batch))
            write_json_atomic(Path(self.tally_dir) / f"{rank:05d}.json", scanner.tally.to_json())
        finally:
            if embedder is not None:
                embedder.close()
        return
        yield  # a generator that passes nothing downstream


class FlaggedFilter(BaseFilter):
    """Drops documents whose id is in ``ids_file`` (one JSON string per line)."""

    name = "🧹 drop flagged"

    def __init__(self, ids_file: str, exclusion_writer: Any = None):
        super().__init__(exclusion_writer=exclusion_writer)
        self.ids_file = ids_file
        self._ids: set[str] | None = None

    def filter(self, doc: Any) -> bool | tuple[bool, str]:
        if self._ids is None:
            with open(self.ids_file, encoding="utf-8") as f:
                self._ids = {json.loads(line) for line in f if line.strip()}
        return (False, "contaminated") if str(doc.id) in self._ids else True


def read_tallies(folder: Path, world_size: int, k: int) -> ProblemTally:
    """The merged tally of a finished scan's tasks."""
    files = [folder / f"{r:05d}.json" for r in range(world_size)]
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise InputError(f"decontam scan in {folder}: tally files {missing[:5]} are missing (tasks did not finish)")
    merged: ProblemTally | None = None
    for f in files:
        t = ProblemTally.from_json(json.loads(f.read_text(encoding="utf-8")))
        merged = t if merged is None else merged.merge(t, k)
    assert merged is not None
    return merged
