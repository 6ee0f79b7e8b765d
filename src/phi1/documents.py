"""Document record schema and shard I/O.

A document is datatrove's record: ``{"id": str, "text": str, "metadata": {...}}``
with metadata ``source`` (source name), ``path`` (file path or file:line) and
``size`` (UTF-8 bytes). Stages that produce documents (ingest, filter) write
them with datatrove writers as sharded, compressed ``*.jsonl.gz`` (or
``*.parquet``) files under ``<stage>/docs/``; this module reads them back
outside datatrove (annotate, embed, tokenizer, tokenize, mine) in a stable
order, so every reader sees the same sequence.
"""

from __future__ import annotations

import gzip
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from phi1.errors import InputError

DOCS_DIR = "docs"
SHARD_SUFFIXES = (".jsonl.gz", ".jsonl", ".parquet")


@dataclass
class Doc:
    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "metadata": self.metadata}


def list_shards(folder: str | Path) -> list[Path]:
    """Document shards in ``folder`` (recursively), in a stable sorted order."""
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"document folder not found: {folder}")
    shards = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.name.endswith(SHARD_SUFFIXES) and not p.name.startswith(".")
    )
    return shards


def read_documents(folder: str | Path, limit: int | None = None) -> Iterator[Doc]:
    """Yield every document of a stage's ``docs/`` folder (or any shard folder)."""
    n = 0
    for shard in list_shards(folder):
        for doc in read_shard(shard):
            yield doc
            n += 1
            if limit is not None and n >= limit:
                return


def read_shard(path: Path) -> Iterator[Doc]:
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        for row in table.to_pylist():
            meta = row.get("metadata") or {k: v for k, v in row.items() if k not in ("id", "text", "media")}
            yield Doc(str(row["id"]), row["text"], dict(meta))
        return
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                yield Doc(str(rec["id"]), rec["text"], rec.get("metadata") or {})
            except (json.JSONDecodeError, KeyError) as e:
                raise InputError(f"{path}:{lineno}: not a document record ({e})") from None


def count_documents(folder: str | Path) -> int:
    return sum(1 for _ in read_documents(folder))


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Write records to ``path`` atomically (temp file + rename); gzip if ``.gz``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    opener = gzip.open if path.name.endswith(".gz") else open
    n = 0
    with opener(tmp, "wt", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def read_jsonl_numbered(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, record) of every non-blank line of a JSONL(.gz) file; a
    broken line is an error naming file and line. Use the line number in your
    own errors: blank lines are skipped, so counting records would drift."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"file not found: {path}")
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            yield lineno, rec


def read_jsonl(path: str | Path) -> Iterator[Any]:
    """The records of a JSONL(.gz) file (see `read_jsonl_numbered`)."""
    for _, rec in read_jsonl_numbered(path):
        yield rec
