"""Corpus sources: listing, checks and fingerprints (no datatrove import here;
the readers live in `phi1.corpus.readers`).

`resolve_sources` checks every configured source in the main process (path
exists, there is something to read, the text/id fields exist in the first
file) and lists its files once into a paths file; the readers then take
every ``world_size``-th line of that list, like datatrove's `BaseDiskReader`,
so tasks share the work by file. A `hf_disk` dataset is split by rows.

Each document is ``Document(id, text, metadata={"source", "path", "size"})``
with a stable id ``<source>/<relative path>`` (python_tree),
``<source>/<file>:<line>`` (jsonl), ``<source>/<file>#<row>`` (parquet),
``<source>/<split>#<row>`` (hf_disk), or ``<source>/<id_field value>``.

Broken input never stops a run silently: JSONL lines that do not parse are
skipped and counted (``broken_records``), and each task writes the first few
line numbers per file to ``problems/<source>-<rank>.json`` for the summary.
A wrong text or id field is an `InputError` naming the field, the file and
the fields that do exist.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import json
import os
import sys
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from phi1.corpus.config import SourceConfig
from phi1.errors import InputError
from phi1.files import write_atomic

TEST_DIRS = frozenset({"test", "tests", "idle_test"})
SKIP_DIRS = frozenset({"__pycache__", "site-packages", "dist-packages"})
MAX_PROBLEMS_PER_FILE = 5


def stdlib_path() -> str:
    return sysconfig.get_paths()["stdlib"]


def is_test_file(name: str) -> bool:
    stem = name[:-3] if name.endswith(".py") else name
    return (
        stem.startswith("test_")
        or stem.endswith("_test")
        or stem.endswith("_tests")
        or stem in {"test", "tests", "conftest"}
    )


# --------------------------------------------------------------------------- listing


def list_python_tree(root: str | Path, include_tests: bool = False, exclude: list[str] | tuple = (),
                     pattern: str = "*.py") -> Iterator[tuple[str, os.stat_result]]:
    """Yield (relative posix path, stat) of every matching file, in sorted order.

    Skipped: hidden entries, __pycache__, site-packages/dist-packages (third
    party code installed into a tree, e.g. the stdlib's), test suites unless
    `include_tests`, and relative paths matching an `exclude` glob.
    """
    root = Path(root)

    def walk(d: Path, rel: str) -> Iterator[tuple[str, os.stat_result]]:
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            return
        for e in entries:
            if e.name.startswith("."):
                continue
            r = f"{rel}{e.name}"
            if e.is_dir(follow_symlinks=False):
                if e.name in SKIP_DIRS or (not include_tests and e.name in TEST_DIRS):
                    continue
                yield from walk(Path(e.path), r + "/")
            elif e.is_file() and fnmatch.fnmatch(e.name, pattern):
                if not include_tests and is_test_file(e.name):
                    continue
                if any(fnmatch.fnmatch(r, p) for p in exclude):
                    continue
                yield r, e.stat()

    yield from walk(root, "")


def _data_files(path: Path, patterns: tuple[str, ...]) -> list[tuple[str, os.stat_result]]:
    if path.is_file():
        return [(path.name, path.stat())]
    out = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if f.startswith(".") or not any(fnmatch.fnmatch(f, p) for p in patterns):
                continue
            full = Path(dirpath) / f
            out.append((full.relative_to(path).as_posix(), full.stat()))
    return sorted(out)


def _patterns(src: SourceConfig) -> tuple[str, ...]:
    if src.glob:
        return (src.glob,)
    return {"python_tree": ("*.py",), "jsonl": ("*.jsonl", "*.jsonl.gz"), "parquet": ("*.parquet",)}.get(src.kind, ())


def source_root(src: SourceConfig) -> Path:
    if src.kind == "python_tree" and not src.path:
        return Path(stdlib_path())
    return Path(os.path.expanduser(src.path))


def list_source_files(src: SourceConfig) -> list[tuple[str, os.stat_result]]:
    """The files a source reads (relative to its root folder), sorted; [] for hf_disk."""
    root = source_root(src)
    if src.kind == "python_tree":
        files = list(list_python_tree(root, src.include_tests, src.exclude, _patterns(src)[0]))
        return files[: src.limit] if src.limit >= 0 else files
    if src.kind in ("jsonl", "parquet"):
        return _data_files(root, _patterns(src))
    return []


def _tree_stats(path: Path) -> list[tuple[str, int, int]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for f in sorted(filenames):
            p = Path(dirpath) / f
            st = p.stat()
            out.append((p.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns))
    return out


def fingerprint_source(src: SourceConfig) -> str:
    """Hash of what the source would read now: file list, sizes, mtimes."""
    h = hashlib.sha256()
    root = source_root(src)
    h.update(f"{src.kind}|{root}".encode())
    if src.kind == "python_tree" and not src.path:
        h.update(sys.version.encode())  # the stdlib changes with the interpreter
    if not root.exists():
        h.update(b"missing")
        return h.hexdigest()
    if src.kind == "hf_disk":
        entries = _tree_stats(root) if root.is_dir() else []
    else:
        entries = [(rel, st.st_size, st.st_mtime_ns) for rel, st in list_source_files(src)]
    for rel, size, mtime in entries:
        h.update(f"{rel}\0{size}\0{mtime}\n".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- resolving


@dataclass
class ResolvedSource:
    """A checked source, ready to hand to readers (picklable, plain fields)."""

    index: int
    kind: str
    name: str
    root: str
    paths_file: str  # one work unit per line: a relative path, or "path<TAB>row group<TAB>first row" ('' for hf_disk)
    n_files: int
    n_bytes: int
    text_field: str
    id_field: str
    limit: int
    n_units: int = 0  # lines in paths_file: what tasks share (files; parquet row groups)

    def describe(self) -> str:
        what = f"{self.n_files} files, {self.n_bytes / 1e6:.1f} MB" if self.kind != "hf_disk" else "dataset"
        if self.kind == "parquet":
            what += f", {self.n_units} row groups"
        return f"{self.name} ({self.kind}: {self.root}; {what})"


def _derived_name(src: SourceConfig, root: Path) -> str:
    if src.kind == "python_tree" and not src.path:
        return "stdlib"
    base = root.name
    for suffix in (".jsonl.gz", ".jsonl", ".parquet"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return base or src.kind


def resolve_sources(sources: list[SourceConfig], paths_dir: Path) -> list[ResolvedSource]:
    """Check each source and list its files into ``paths_dir`` (main process, before any task).

    Raises `InputError` with one line naming the source and path for: a
    missing path, nothing to read, a wrong text/id field in the first file.
    """
    if not sources:
        raise InputError("ingest has no sources: add an [[ingest.sources]] table to the config")
    paths_dir.mkdir(parents=True, exist_ok=True)
    out: list[ResolvedSource] = []
    names: set[str] = set()
    for i, src in enumerate(sources):
        root = source_root(src)
        where = f"ingest source {i + 1} ({src.kind})"
        if not root.exists():
            raise InputError(f"{where}: path not found: {root}")
        name = src.name or _derived_name(src, root)
        if name in names:
            if src.name:
                raise InputError(f"{where}: source name {name!r} is used twice; give each source its own name")
            k = 2
            while f"{name}-{k}" in names:
                k += 1
            name = f"{name}-{k}"
        names.add(name)
        if "/" in name:
            raise InputError(f"{where}: source name {name!r} must not contain '/'")
        if src.kind == "hf_disk":
            _check_hf_disk(root, src, where)
            out.append(ResolvedSource(i, src.kind, name, str(root), "", 0, 0, src.text_field, src.id_field, src.limit))
            continue
        files = list_source_files(src)
        if not files:
            pats = " or ".join(_patterns(src))
            extra = " (test suites and site-packages are skipped; include_tests=true keeps tests)" \
                if src.kind == "python_tree" else ""
            raise InputError(f"{where}: no {pats} files under {root}{extra}")
        folder = root if root.is_dir() else root.parent
        if src.kind == "jsonl":
            _check_jsonl_fields(folder / files[0][0], src, where)
        elif src.kind == "parquet":
            _check_parquet_fields(folder / files[0][0], src, where)
        units = _parquet_units(folder, files, where) if src.kind == "parquet" else [rel for rel, _ in files]
        paths_file = paths_dir / f"{i:03d}-{name}.txt"
        write_atomic(paths_file, "".join(f"{u}\n" for u in units))
        out.append(ResolvedSource(i, src.kind, name, str(folder), str(paths_file), len(files),
                                  sum(st.st_size for _, st in files), src.text_field, src.id_field, src.limit,
                                  len(units)))
    return out


def _parquet_units(folder: Path, files: list[tuple[str, os.stat_result]], where: str) -> list[str]:
    """One work unit per row group, so tasks share a few big parquet files evenly
    (The Stack ships each language as a few hundred files of ~100k rows)."""
    import pyarrow.parquet as pq

    units = []
    for rel, _ in files:
        try:
            meta = pq.read_metadata(folder / rel)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise InputError(f"{where}: not a readable parquet file: {folder / rel} ({e})") from None
        first = 0
        for rg in range(meta.num_row_groups):
            units.append(f"{rel}\t{rg}\t{first}")
            first += meta.row_group(rg).num_rows
    return units


def _fields_error(where: str, path: Any, field: str, kind: str, available: list[str]) -> InputError:
    return InputError(
        f"{where}: {kind} {field!r} not found in {path}; available fields: {', '.join(map(str, available)) or '(none)'}"
    )


def open_binary(path: Path):
    """Raw lines of a .jsonl or .jsonl.gz file."""
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


JSONL_MAX_LINE = 256 << 20  # no line is read whole beyond this (a 2 GB "line" is not a record)


def bounded_lines(f, limit: int = JSONL_MAX_LINE):
    """``(line, size)`` for each line of binary file ``f``; a line longer than
    ``limit`` bytes is skipped in chunks and given as ``(None, size)``, so a
    file that is one huge line costs ``limit`` bytes of memory, not its size."""
    while True:
        line = f.readline(limit + 1)
        if not line:
            return
        if len(line) <= limit or line.endswith(b"\n"):
            yield line, len(line)
            continue
        size = len(line)
        while not line.endswith(b"\n"):
            line = f.readline(1 << 20)
            if not line:
                break
            size += len(line)
        yield None, size


def _check_jsonl_fields(path: Path, src: SourceConfig, where: str) -> None:
    """The first record that parses must have the text (and id) field."""
    try:
        with open_binary(path) as f:
            for line, _ in bounded_lines(f):
                if line is None or not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # broken lines are counted by the reader
                if not isinstance(rec, dict):
                    continue
                check_record_fields(rec, src.text_field, src.id_field, f"{where}", str(path))
                return
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"{where}: cannot read {path}: {e}") from None


def check_record_fields(rec: dict, text_field: str, id_field: str, where: str, path: str) -> None:
    if text_field not in rec:
        raise _fields_error(where, path, text_field, "text_field", list(rec))
    if id_field and id_field not in rec:
        raise _fields_error(where, path, id_field, "id_field", list(rec))


def _check_parquet_fields(path: Path, src: SourceConfig, where: str) -> None:
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise InputError(f"{where}: not a readable parquet file: {path} ({e})") from None
    check_record_fields({n: None for n in names}, src.text_field, src.id_field, where, str(path))


def _check_hf_disk(root: Path, src: SourceConfig, where: str) -> None:
    try:
        from datasets import load_from_disk

        ds = load_from_disk(str(root))
    except Exception as e:  # noqa: BLE001 - datasets raises FileNotFoundError/ValueError/... for a non-dataset
        raise InputError(f"{where}: not a dataset saved with save_to_disk: {root} ({type(e).__name__}: {e})") from None
    from datasets import DatasetDict

    splits = sorted(ds.items()) if isinstance(ds, DatasetDict) else [("", ds)]
    total = 0
    for split, d in splits:
        check_record_fields({c: None for c in d.column_names}, src.text_field, src.id_field, where,
                            f"{root}{'/' + split if split else ''}")
        total += len(d)
    if total == 0:
        raise InputError(f"{where}: the dataset at {root} has no rows")
