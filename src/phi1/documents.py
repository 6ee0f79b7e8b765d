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
import hashlib
import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from phi1.errors import InputError
from phi1.files import write_jsonl_atomic

DOCS_DIR = "docs"
SHARD_SUFFIXES = (".jsonl.gz", ".jsonl", ".parquet")
MAX_LINE_BYTES = 256 << 20  # one JSONL record; a document is at most ingest.max_bytes


@dataclass
class Doc:
    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


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
    for lineno, rec in read_jsonl_numbered(path):
        if not (isinstance(rec, dict) and isinstance(rec.get("text"), str) and rec.get("id") is not None):
            raise InputError(f"{path}:{lineno}: not a document record (a JSON object with string 'text' and 'id')")
        meta = rec.get("metadata")
        yield Doc(str(rec["id"]), rec["text"], meta if isinstance(meta, dict) else {})


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Write records to ``path`` atomically (gzip if ``.gz``); see `phi1.files`."""
    return write_jsonl_atomic(path, records)


# --------------------------------------------------------------------------- splits


def unit_hash(*parts: Any) -> float:
    """A seeded, stable number in [0, 1) for ``parts`` (same on every machine and run)."""
    h = hashlib.blake2b(":".join(map(str, parts)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


def is_validation(source_id: str, fraction: float, seed: int) -> bool:
    """The one train/validation rule of phi1, by *source document*.

    Every stage that splits (tokenize, mine, synth, ...) calls this with the id
    of the document a record came from and ``run.validation_fraction``, so a
    document held out for validation in one dataset is held out in all of them:
    finetuning's best checkpoint is never chosen on text pretraining has seen.
    """
    return fraction > 0 and unit_hash(seed, "validation", source_id) < fraction


def read_jsonl_numbered(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, record) of every non-blank line of a JSONL(.gz) file; a
    broken line is an error naming file and line. Use the line number in your
    own errors: blank lines are skipped, so counting records would drift."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"file not found: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a JSONL file")
    opener = gzip.open if path.name.endswith(".gz") else open
    lineno = 0
    try:
        with opener(path, "rb") as f:
            while True:
                # bounded: a multi-GB "line" (a file that is not JSONL) is an error, not an out-of-memory
                raw = f.readline(MAX_LINE_BYTES + 1)
                if not raw:
                    return
                lineno += 1
                if len(raw) > MAX_LINE_BYTES:
                    raise InputError(f"{path}:{lineno}: line longer than {MAX_LINE_BYTES >> 20} MiB: "
                                     "not a JSONL record")
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a byte order mark
                    raw = raw[3:]
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise InputError(f"{path}:{lineno}: not UTF-8 text ({e.reason} at byte {e.start})") from None
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
                except RecursionError:
                    raise InputError(f"{path}:{lineno}: JSON nested too deeply") from None
                yield lineno, rec
    except (EOFError, OSError, zlib.error) as e:  # truncated or corrupt .gz, unreadable file
        why = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise InputError(f"{path}:{lineno + 1}: cannot read ({why})") from None


def read_jsonl(path: str | Path) -> Iterator[Any]:
    """The records of a JSONL(.gz) file (see `read_jsonl_numbered`)."""
    for _, rec in read_jsonl_numbered(path):
        yield rec


def copies_of(weight: float, seed: int, source: str, doc_id: str) -> int:
    """How many times a document of ``source`` goes into a weighted mixture.

    ``floor(weight)`` copies, plus one more with probability ``weight -
    floor(weight)`` (seeded per document): 2.0 = every document twice, 1.5 =
    every document once and half of them again, 0.5 = half the documents.
    """
    whole = math.floor(weight)
    frac = weight - whole
    return whole + (1 if frac > 0 and unit_hash(seed, "mix", source, doc_id) < frac else 0)


def weighted_documents(inputs: Iterable[Any], seed: int) -> Iterator[tuple[str, Doc]]:
    """``(reference, document)`` for each copy of each document of a weighted
    mixture of document datasets (`phi1.stage.Dataset`: ``ref``, ``path``,
    ``weight``), input by input, copies per `copies_of`."""
    for inp in inputs:
        for doc in read_documents(inp.path):
            for _ in range(copies_of(inp.weight, seed, inp.ref, doc.id)):
                yield inp.ref, doc
