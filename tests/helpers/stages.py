"""Finished upstream stages written directly, as the pipeline would leave them,
so a test can run one stage without running everything before it."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from phi1.files import write_json_atomic
from phi1.pipeline import MANIFEST, RunDirectory


def mark_done(cfg: Any, stage: str, stages: Any = None, **extra: Any) -> Path:
    """Write ``<run>/<stage>/manifest.json`` so the pipeline takes ``stage`` as
    done and current for ``cfg`` (config hash, upstream run_ids, external
    fingerprints); ``extra`` goes into the manifest. Returns the stage folder."""
    rd = RunDirectory(cfg, stages)
    spec = rd.spec(stage)
    folder = cfg.run_dir / stage
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / MANIFEST, {
        "stage": stage, "status": "done", "run_id": uuid.uuid4().hex, **rd.identity(spec), **extra})
    return folder
