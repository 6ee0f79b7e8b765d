"""Corpus sources as datatrove readers, sharded across tasks.

File sources (python_tree, jsonl, parquet) read the paths file written by
`phi1.corpus.sources.resolve_sources` and take every ``world_size``-th file,
like datatrove's `BaseDiskReader` (which they extend). `HFDiskReader` splits
a saved dataset by contiguous row ranges. Problems (broken JSONL lines, null
texts) are counted as ``broken_records`` and the first few per file are saved
to ``<problems_dir>/<source>-<rank>.json`` for the stage summary.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from pathlib import Path
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.io import get_shard_from_paths_file
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.readers.base import BaseDiskReader

from phi1.corpus.sources import (JSONL_MAX_LINE, MAX_PROBLEMS_PER_FILE, ResolvedSource, bounded_lines,
                                 check_record_fields, open_binary)
from phi1.errors import InputError
from phi1.files import write_atomic

class _ProblemLog:
    """First few problems per file plus totals, saved per task for the summary."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}

    def add(self, path: str, where: str, why: str) -> None:
        e = self.items.setdefault(path, {"count": 0, "first": []})
        e["count"] += 1
        if len(e["first"]) < MAX_PROBLEMS_PER_FILE:
            e["first"].append({"at": where, "why": why})

    def save(self, folder: str, name: str) -> None:
        if not self.items or not folder:
            return
        Path(folder).mkdir(parents=True, exist_ok=True)
        write_atomic(Path(folder) / name, json.dumps(self.items, indent=1, sort_keys=True))


class FilesDone:
    """Files this task has finished, in a tiny file the main process polls for
    its progress bar (tasks run in other processes or on other machines)."""

    def __init__(self, folder: str, name: str, every_s: float = 0.5):
        self.path = Path(folder) / name if folder else None
        self.every_s = every_s
        self._last = 0.0

    def update(self, n: int, force: bool = False) -> None:
        now = time.monotonic()
        if self.path is None or (not force and now - self._last < self.every_s):
            return
        self._last = now
        write_atomic(self.path, str(n), durable=False)  # a progress counter, rewritten twice a second


def files_done(folder: str | Path) -> int:
    """Sum over the tasks' `FilesDone` files."""
    total = 0
    for p in Path(folder).glob("*.done"):
        try:
            total += int(p.read_text() or 0)
        except (OSError, ValueError):  # being replaced right now
            pass
    return total


class _TickingShard(list):
    """The task's file list; reports each finished file as the reader moves on."""

    def __init__(self, files: list[str], progress: FilesDone):
        super().__init__(files)
        self._progress = progress

    def __iter__(self):
        for i, path in enumerate(list.__iter__(self)):
            self._progress.update(i)  # the reader asks for file i once files 0..i-1 are read
            yield path


def _doc(source: str, doc_id: str, text: str, path: str, size: int, **extra: Any) -> Document:
    return Document(text=text, id=f"{source}/{doc_id}", metadata={"source": source, "path": path, "size": size, **extra})


class _SourceReader(BaseDiskReader):
    """A reader over one resolved source's paths file, sharded by file across tasks."""

    def __init__(self, source: ResolvedSource, problems_dir: str = "", max_read_bytes: int = -1,
                 progress_dir: str = ""):
        limit = source.limit if source.kind in ("jsonl", "parquet") else -1  # python_tree: applied to the listing
        super().__init__(source.root, paths_file=source.paths_file, limit=limit,
                         text_key=source.text_field, id_key=source.id_field or "id", add_file_path=False)
        self.source = source
        self.problems_dir = problems_dir
        self.max_read_bytes = max_read_bytes
        self.progress_dir = progress_dir
        self._problems = _ProblemLog()

    @property
    def where(self) -> str:
        return f"ingest source {self.source.index + 1} ({self.source.kind} {self.source.name!r})"

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        # datatrove's BaseDiskReader.run, minus its console warning for a task
        # without files (normal when tasks outnumber the files of a source)
        if data:
            yield from data
        self._problems = _ProblemLog()
        progress = FilesDone(self.progress_dir, f"{self.source.index:03d}-{rank:05d}.done")
        shard = _TickingShard(list(get_shard_from_paths_file(self.paths_file, rank, world_size)), progress)
        for doc in self.read_files_shard(shard):
            self.update_doc_stats(doc)
            yield doc
        progress.update(len(shard), force=True)
        self._problems.save(self.problems_dir, f"{self.source.index:03d}-{rank:05d}.json")


class PythonTreeReader(_SourceReader):
    """Every listed ``.py`` file is one document (bytes decoded as UTF-8)."""

    name = "🐍 python tree"

    def read_file(self, filepath: str) -> DocumentsPipeline:
        full = os.path.join(self.source.root, filepath)
        size = os.path.getsize(full)
        if 0 <= self.max_read_bytes < size:
            # too large to keep anyway: do not load it, let the size filter count it
            yield _doc(self.source.name, filepath, "", filepath, size)
            return
        with open(full, "rb") as f:
            raw = f.read()
        extra = {}
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            text = raw.decode("utf-8", "replace")
            extra["decode_error"] = f"{e.reason} at byte {e.start}"
        yield _doc(self.source.name, filepath, text, filepath, len(raw), **extra)


class JsonlSourceReader(_SourceReader):
    """JSONL / JSONL.gz: one record per line; broken lines are skipped and counted."""

    name = "📄 jsonl source"

    def read_file(self, filepath: str) -> DocumentsPipeline:
        import orjson

        s = self.source
        full = os.path.join(s.root, filepath)
        checked = False
        lineno = 0
        try:
            with open_binary(Path(full)) as f:
                for lineno, (line, size) in enumerate(bounded_lines(f, self._line_limit()), 1):
                    if line is None:  # far longer than any document ingest keeps: not read whole
                        self._broken(filepath, lineno, f"line of {size:,} bytes, longer than any document kept "
                                     f"(ingest.max_bytes); skipped without reading it")
                        continue
                    if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):  # a byte order mark: not a broken record
                        line = line[3:]
                    if not line.strip():
                        continue
                    try:
                        rec = orjson.loads(line)
                    except orjson.JSONDecodeError as e:
                        self._broken(filepath, lineno, f"invalid JSON ({str(e).split(':')[0]})")
                        continue
                    if not isinstance(rec, dict):
                        self._broken(filepath, lineno, "not a JSON object")
                        continue
                    if not checked:  # a wrong field name is a config error, not a broken line
                        check_record_fields(rec, s.text_field, s.id_field, self.where, full)
                        checked = True
                    text = rec.get(s.text_field)
                    if not isinstance(text, str):
                        self._broken(filepath, lineno, f"{s.text_field!r} missing or not a string")
                        continue
                    if s.id_field:
                        if rec.get(s.id_field) is None:
                            self._broken(filepath, lineno, f"{s.id_field!r} missing")
                            continue
                        doc_id = str(rec[s.id_field])
                    else:
                        doc_id = f"{filepath}:{lineno}"
                    yield _doc(s.name, doc_id, text, f"{filepath}:{lineno}", len(text.encode("utf-8", "surrogatepass")))
        except (EOFError, OSError, zlib.error) as e:  # truncated or corrupt .gz: keep what was read
            self._broken(filepath, lineno + 1, f"unreadable from here on ({type(e).__name__}: {e})")

    def _line_limit(self) -> int:
        # a record's JSON may escape every byte of its text (6 bytes for 1) and carry other fields
        if self.max_read_bytes < 0:
            return JSONL_MAX_LINE
        return min(JSONL_MAX_LINE, 6 * self.max_read_bytes + (1 << 20))

    def _broken(self, filepath: str, lineno: int, why: str) -> None:
        self.stat_update("broken_records")
        self._problems.add(filepath, f"line {lineno}", why)


class ParquetSourceReader(_SourceReader):
    """Parquet files, one row group per work unit, read in record batches of the
    needed columns only."""

    name = "📒 parquet source"
    batch_size = 1000

    def read_file(self, filepath: str) -> DocumentsPipeline:
        import pyarrow.parquet as pq

        s = self.source
        rel, _, rest = filepath.partition("\t")
        row_groups, first = None, 0
        if rest:  # "path<TAB>row group<TAB>first row of that row group"
            rg, first_row = rest.split("\t")
            row_groups, first = [int(rg)], int(first_row)
        full = os.path.join(s.root, rel)
        with self.data_folder.open(rel, "rb") as f:
            pf = pq.ParquetFile(f)
            check_record_fields({n: None for n in pf.schema_arrow.names}, s.text_field, s.id_field, self.where, full)
            columns = [s.text_field] + ([s.id_field] if s.id_field else [])
            row = first
            for batch in pf.iter_batches(batch_size=self.batch_size, columns=columns, row_groups=row_groups):
                texts = batch.column(0).to_pylist()
                ids = batch.column(1).to_pylist() if s.id_field else None
                for j, text in enumerate(texts):
                    r = row + j
                    if isinstance(text, bytes):
                        try:
                            text = text.decode("utf-8")
                        except UnicodeDecodeError:
                            text = None
                    if not isinstance(text, str):
                        self.stat_update("broken_records")
                        self._problems.add(rel, f"row {r}", f"{s.text_field!r} null or not text")
                        continue
                    doc_id = str(ids[j]) if ids is not None and ids[j] is not None else f"{rel}#{r}"
                    yield _doc(s.name, doc_id, text, f"{rel}#{r}", len(text.encode("utf-8", "surrogatepass")))
                row += len(texts)


class HFDiskReader(PipelineStep):
    """A dataset saved with ``datasets.Dataset.save_to_disk`` (or a DatasetDict:
    every split), split across tasks by contiguous row ranges."""

    name = "🤗 hf_disk source"
    type = "📖 - READER"

    def __init__(self, source: ResolvedSource, problems_dir: str = ""):
        super().__init__()
        self.source = source
        self.problems_dir = problems_dir

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from datasets import DatasetDict, load_from_disk

        if data:
            yield from data
        s = self.source
        ds = load_from_disk(s.root)
        splits = sorted(ds.items()) if isinstance(ds, DatasetDict) else [("", ds)]
        problems = _ProblemLog()
        remaining = s.limit
        for split, d in splits:
            if remaining == 0:
                break
            if remaining > 0:
                d = d.select(range(min(remaining, len(d))))
                remaining -= len(d)
            n = len(d)
            lo, hi = n * rank // world_size, n * (rank + 1) // world_size
            columns = [s.text_field] + ([s.id_field] if s.id_field else [])
            part = d.select_columns(columns).select(range(lo, hi))
            prefix = f"{split}#" if split else "#"
            for j, rec in enumerate(part):
                r = lo + j
                text = rec[s.text_field]
                if not isinstance(text, str):
                    self.stat_update("broken_records")
                    problems.add(split or "(dataset)", f"row {r}", f"{s.text_field!r} null or not text")
                    continue
                doc_id = str(rec[s.id_field]) if s.id_field and rec[s.id_field] is not None else f"{prefix}{r}"
                self.stat_update("documents")
                yield _doc(s.name, doc_id, text, f"{prefix}{r}", len(text.encode("utf-8", "surrogatepass")))
        problems.save(self.problems_dir, f"{s.index:03d}-{rank:05d}.json")


def build_readers(sources: list[ResolvedSource], problems_dir: str, max_read_bytes: int,
                  progress_dir: str = "") -> list[PipelineStep]:
    """One datatrove reader per source; chained, each reads its own share per task."""
    readers: list[PipelineStep] = []
    for s in sources:
        if s.kind == "python_tree":
            readers.append(PythonTreeReader(s, problems_dir, max_read_bytes, progress_dir))
        elif s.kind == "jsonl":
            readers.append(JsonlSourceReader(s, problems_dir, max_read_bytes, progress_dir=progress_dir))
        elif s.kind == "parquet":
            readers.append(ParquetSourceReader(s, problems_dir, progress_dir=progress_dir))
        elif s.kind == "hf_disk":
            readers.append(HFDiskReader(s, problems_dir))
        else:  # the config's Literal makes this unreachable
            raise InputError(f"unknown source kind {s.kind!r}")
    return readers
