"""Pruning: training datasets without the records flagged at a τ.

Which records are flagged comes from the similarity rows (``similar_at >=
τ``). An exercises dataset is copied file by file (``train.jsonl.gz``,
``val.jsonl.gz``), record by record, minus the flagged ids; a documents
dataset goes through a datatrove pass (reader -> `FlaggedFilter` -> writer)
so a corpus of any size is pruned by the same executor as the scan. Records
are matched by id: a record whose id is flagged is dropped wherever it
appears (an id shared by two records drops both, erring on the safe side).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from phi1.decontam.scan import flagged_at
from phi1.documents import read_jsonl_numbered
from phi1.errors import InputError


@dataclass
class PruneCounts:
    kept: int = 0
    dropped: int = 0
    files: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"kept": self.kept, "dropped": self.dropped, "files": self.files}


def read_rows(folder: Path) -> Iterator[dict]:
    """The similarity rows of a scan folder's ``*.jsonl.gz`` shards, in rank order."""
    for shard in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(shard, "rt", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def flagged_ids(rows: Iterable[dict], tau: float) -> set[str]:
    return {str(r["id"]) for r in rows if flagged_at(r, tau)}


def prune_exercises(src: Path, dst: Path, flagged: set[str]) -> PruneCounts:
    """Copy every exercise file of ``src`` to ``dst`` without the flagged ids
    (records are copied as read: every field kept)."""
    from phi1.documents import write_jsonl

    files = sorted(p for p in src.iterdir() if p.is_file() and p.name.endswith((".jsonl", ".jsonl.gz"))
                   and not p.name.startswith("."))
    if not files:
        raise InputError(f"no exercise files (*.jsonl.gz) in {src}")
    counts = PruneCounts()
    dst.mkdir(parents=True, exist_ok=True)
    for f in files:
        stat = {"kept": 0, "dropped": 0}

        def keep(path: Path = f, stat: dict = stat) -> Iterator[dict]:
            for lineno, rec in read_jsonl_numbered(path):
                if not isinstance(rec, dict) or "id" not in rec:
                    raise InputError(f"{path}:{lineno}: not an exercise record (no 'id')")
                if str(rec["id"]) in flagged:
                    stat["dropped"] += 1
                    continue
                stat["kept"] += 1
                yield rec

        write_jsonl(dst / f.name, keep())
        counts.files[f.name] = stat
        counts.kept += stat["kept"]
        counts.dropped += stat["dropped"]
    return counts


def write_ids(path: Path, ids: Iterable[str]) -> int:
    """One JSON string per line (what `FlaggedFilter` reads)."""
    from phi1.files import write_atomic

    ids = sorted(ids)
    write_atomic(path, "".join(json.dumps(i) + "\n" for i in ids))
    return len(ids)
