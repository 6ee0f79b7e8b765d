"""Reading a run's files for the report, remembering what was read and what was wrong.

Every section states where its numbers came from: a `StageFiles` records each
file it reads (``sources``) and each problem it met (``problems``: a missing
file, a corrupt line) instead of raising, so a broken file costs one plot, not
the report.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from phi1.documents import read_jsonl_numbered
from phi1.errors import Phi1Error
from phi1.manifest import MANIFEST, read_manifest


@dataclass
class StageRecord:
    """A folder of the run: a finished stage (manifest.json) or an unfinished one (.partial)."""

    name: str
    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    error: str = ""  # why the manifest could not be read
    partial: bool = False

    @property
    def started(self) -> str:
        t = self.manifest.get("timings")
        return str(t.get("started", "")) if isinstance(t, dict) else ""


def discover(run_dir: Path) -> list[StageRecord]:
    """Every stage folder of the run, in the order the stages started (unreadable ones last)."""
    found: list[StageRecord] = []
    finished = set()
    for d in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        if d.name.endswith(".partial") or ".old-" in d.name or not (d / MANIFEST).exists():
            continue
        rec = StageRecord(d.name, d)
        try:
            rec.manifest = read_manifest(d, check_fields=False)  # each section checks the fields it draws
        except Phi1Error as e:
            rec.error = str(e)
        finished.add(d.name)
        found.append(rec)
    for d in sorted(run_dir.glob("*.partial")):
        name = d.name[: -len(".partial")]
        if d.is_dir() and name not in finished:
            found.append(StageRecord(name, d, partial=True))
    return sorted(found, key=lambda r: (r.partial, bool(r.error), r.started or "~", r.name))


class StageFiles:
    """One stage's folder, read for one section of the report."""

    def __init__(self, run_dir: Path, record: StageRecord):
        self.run_dir = run_dir
        self.record = record
        self.name = record.name
        self.folder = record.path
        self.manifest = record.manifest
        self.sources: list[str] = []
        self.problems: list[str] = []
        if record.manifest:
            self.sources.append(self.rel(self.folder / MANIFEST))

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.run_dir))
        except ValueError:
            return str(path)

    def note(self, msg: str) -> None:
        if msg not in self.problems:
            self.problems.append(msg)

    # -- manifest fields -------------------------------------------------------
    def get(self, *path: str, default: Any = None) -> Any:
        d: Any = self.manifest
        for p in path:
            if not isinstance(d, dict) or p not in d:
                return default
            d = d[p]
        return d

    def num(self, *path: str) -> float | None:
        """A finite number from the manifest, else None."""
        return as_number(self.get(*path))

    def table(self, *path: str) -> dict[str, Any]:
        d = self.get(*path)
        return d if isinstance(d, dict) else {}

    # -- files -------------------------------------------------------------------
    def exists(self, name: str) -> bool:
        return (self.folder / name).exists()

    def json(self, name: str, missing: str = "") -> Any:
        """A JSON file of the stage folder, or None (noted as missing or corrupt)."""
        path = self.folder / name
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self.note(f"{self.rel(path)} not found" + (f": {missing}" if missing else ""))
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            self.note(f"{self.rel(path)} is unreadable ({type(e).__name__}: {e})")
            return None
        self.sources.append(self.rel(path))
        return data

    def jsonl(self, name: str, missing: str = "") -> list[dict[str, Any]]:
        """The JSON objects of a JSONL file, up to its first bad line (noted)."""
        path = self.folder / name
        out: list[dict[str, Any]] = []
        if not path.exists():
            self.note(f"{self.rel(path)} not found" + (f": {missing}" if missing else ""))
            return out
        skipped = 0
        try:
            for _, rec in read_jsonl_numbered(path):
                if isinstance(rec, dict):
                    out.append(rec)
                else:
                    skipped += 1
        except (Phi1Error, OSError, UnicodeDecodeError) as e:
            self.note(f"{e}; using the {len(out)} records before it")
        if skipped:
            self.note(f"{self.rel(path)}: {skipped} lines are not JSON objects (left out)")
        self.sources.append(f"{self.rel(path)} ({len(out)} records)")
        return out

    def npz_columns(self, folder: str, columns: tuple[str, ...]) -> dict[str, list[Any]]:
        """Concatenated columns of every ``*.npz`` in a sub-folder (unreadable files noted and skipped)."""
        import numpy as np

        files = sorted((self.folder / folder).glob("*.npz"))
        out: dict[str, list[Any]] = {c: [] for c in columns}
        if not files:
            self.note(f"{self.rel(self.folder / folder)}: no .npz files")
            return out
        used = 0
        for p in files:
            try:
                with np.load(p, allow_pickle=False) as z:
                    parts = {c: z[c] for c in columns}
            except Exception as e:  # numpy raises many kinds for a damaged archive
                self.note(f"{self.rel(p)} is unreadable ({type(e).__name__}: {e}); left out")
                continue
            if len({len(v) for v in parts.values()}) != 1:
                self.note(f"{self.rel(p)}: columns of different lengths; left out")
                continue
            for c in columns:
                out[c].extend(parts[c].tolist())
            used += 1
        self.sources.append(f"{self.rel(self.folder / folder)}/*.npz ({used} files)")
        return out


def as_number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def numbers(records: list[dict[str, Any]], key: str) -> Iterator[tuple[dict[str, Any], float]]:
    """(record, value) for the records whose ``key`` holds a finite number."""
    for r in records:
        v = as_number(r.get(key))
        if v is not None:
            yield r, v
