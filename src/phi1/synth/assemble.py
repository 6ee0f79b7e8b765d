"""From finished chunks to the datasets: dedup, split, write, report.

Deduplication runs once over all chunks of a kind, in seed order, after the
reference records (``synth.dedup_against``); then the kept records stream
from the part files into the outputs:

* textbooks: documents (``{"id","text","metadata"}``) in
  ``textbooks/part-<n>.jsonl.gz`` shards, the format `tokenize` reads;
* exercises: ``exercises/train.jsonl.gz`` and ``val.jsonl.gz`` in mine's
  record format, split by `phi1.documents.is_validation` on the record id
  with ``run.validation_fraction``, the format `finetune` reads.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from phi1.documents import is_validation
from phi1.errors import Phi1Error
from phi1.files import atomic_open, jsonl_line, write_jsonl_atomic
from phi1.synth.chunks import ChunkResult, part_paths, read_signatures
from phi1.synth.dedup import MinHasher, deduplicate
from phi1.synth.plan import Plan
from phi1.synth.report import Coverage, distinct_ngrams, embedding_report, sample_indices

SHARD_DOCS = 10_000
TRAIN_FILE = "train.jsonl.gz"
VAL_FILE = "val.jsonl.gz"


@dataclass
class References:
    """Records synthetic ones must not duplicate (never written)."""

    keys: list[str] = field(default_factory=list)
    signatures: np.ndarray = field(default_factory=lambda: np.empty((0, 0), dtype=np.uint32))
    source: str = ""

    def __len__(self) -> int:
        return len(self.keys)


def exercise_references(folder: Path, hasher: MinHasher, ref: str) -> References:
    """The exercises of an exercises dataset (train and val) as references."""
    from phi1.synth.mine import dedup_key
    from phi1.synth.records import read_exercises

    keys, texts = [], []
    for name in (TRAIN_FILE, VAL_FILE):
        path = folder / name
        if not path.exists():
            continue
        for rec in read_exercises(path):
            keys.append(rec.metadata.get("key") or dedup_key(rec))
            texts.append(rec.text)
    return References(keys, hasher.signatures(texts), ref)


@dataclass
class Assembled:
    kind: str
    kept: int
    dropped: dict[str, int]
    written: dict[str, int]  # output file -> records
    report: dict[str, Any]


def assemble(plan: Plan, chunks: list[ChunkResult], work: Path, out: Path, *, threshold: float,
             references: References | None, validation_fraction: float, seed: int,
             ngram_sample: int, diversity_sample: int,
             embed: Callable[[Sequence[str]], np.ndarray] | None, num_perm: int) -> Assembled:
    refs = references if references is not None and len(references) else None
    keys = [k for c in chunks for k in c.keys]
    blocks = [read_signatures(work, plan.kind, c.chunk) for c in chunks if c.kept]
    if refs is not None:
        keys = refs.keys + keys
        blocks = [refs.signatures] + blocks
    sigs = np.concatenate(blocks) if blocks else np.empty((0, num_perm), dtype=np.uint32)
    offset = len(refs) if refs is not None else 0
    result = deduplicate(keys, sigs, threshold, references=offset)
    reasons = result.reasons[offset:]
    dropped = result.dropped(offset)
    kept_total = sum(r is None for r in reasons)

    names_total = len(plan.sampler.space.function_names()) if plan.kind == "exercises" else None
    coverage = Coverage(plan.dims(), plan.pair, names_total)
    imports: Counter = Counter()
    ngram_pick = set(sample_indices(kept_total, ngram_sample, seed))
    embed_pick = set(sample_indices(kept_total, diversity_sample, seed + 1))
    ngram_texts: list[str] = []
    embed_texts: list[str] = []
    name_followed = 0

    def kept_records():
        nonlocal name_followed
        i = kept_n = 0
        for c in chunks:
            if not c.kept:
                continue
            with gzip.open(part_paths(work, plan.kind, c.chunk)[0], "rt", encoding="utf-8") as fh:
                for line in fh:
                    rec = json.loads(line)
                    reason = reasons[i]
                    i += 1
                    if reason is not None:
                        continue
                    meta = rec["metadata"]
                    coverage.add(meta["seed"])
                    imports.update(set(meta.get("imports") or []))
                    name_followed += bool(meta.get("name_followed"))
                    text = rec["text"] if plan.kind == "textbooks" else rec["prompt"] + rec["solution"]
                    if kept_n in ngram_pick:
                        ngram_texts.append(text)
                    if kept_n in embed_pick:
                        embed_texts.append(text)
                    kept_n += 1
                    yield rec

    written = write_textbooks(out, kept_records()) if plan.kind == "textbooks" else \
        write_exercises_split(out, kept_records(), validation_fraction, seed)

    report: dict[str, Any] = {
        "coverage": coverage.result(),
        "distinct_ngrams": distinct_ngrams(ngram_texts),
        "imports": dict(sorted(imports.items(), key=lambda kv: (-kv[1], kv[0]))),
        "dedup": {"threshold": threshold, "compared": result.compared,
                  "references": offset, "reference_source": refs.source if refs is not None else ""},
    }
    if plan.kind == "exercises":
        report["name_followed"] = name_followed
    if embed is not None and diversity_sample:
        try:
            report["nearest_neighbour"] = embedding_report(embed_texts, embed)
        except (Phi1Error, OSError, RuntimeError, ImportError, ValueError) as e:
            # the records are made and written: a missing embedder costs the histogram, not the data
            report["nearest_neighbour"] = {"error": " ".join(f"{type(e).__name__}: {e}".split())[:500]}
    return Assembled(plan.kind, kept_total, dropped, written, report)


def write_textbooks(folder: Path, records: Any) -> dict[str, int]:
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, int] = {}
    shard: list[dict[str, Any]] = []

    def flush() -> None:
        path = folder / f"part-{len(written):05d}.jsonl.gz"
        written[path.name] = write_jsonl_atomic(path, shard)
        shard.clear()

    for rec in records:
        shard.append(rec)
        if len(shard) >= SHARD_DOCS:
            flush()
    if shard:
        flush()
    return written


def write_exercises_split(folder: Path, records: Any, fraction: float, seed: int) -> dict[str, int]:
    folder.mkdir(parents=True, exist_ok=True)
    counts = {TRAIN_FILE: 0, VAL_FILE: 0}
    with atomic_open(folder / TRAIN_FILE) as train, atomic_open(folder / VAL_FILE) as val:
        for rec in records:
            name = VAL_FILE if is_validation(rec["id"], fraction, seed) else TRAIN_FILE
            (val if name == VAL_FILE else train).write(jsonl_line(rec) + "\n")
            counts[name] += 1
    return counts


def write_empty(plan_kind: str, out: Path) -> dict[str, int]:
    """An empty dataset of a kind (nothing was asked for, or nothing generated)."""
    if plan_kind == "textbooks":
        out.mkdir(parents=True, exist_ok=True)
        return {}
    return write_exercises_split(out, iter(()), 0.0, 0)
