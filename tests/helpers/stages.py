"""Finished upstream stages written directly, as the pipeline would leave them,
so a test can run one stage without running everything before it."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from phi1.pipeline import MANIFEST, RunDirectory, get_stage, write_json_atomic


def mark_done(cfg: Any, stage: str, **extra: Any) -> Path:
    """Write ``<run>/<stage>/manifest.json`` so the pipeline takes ``stage`` as
    done and current for ``cfg`` (config hash, upstream run_ids, external
    fingerprints); ``extra`` goes into the manifest. Returns the stage folder."""
    spec = get_stage(stage)
    folder = cfg.run_dir / stage
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / MANIFEST, {
        "stage": stage, "status": "done", "run_id": uuid.uuid4().hex,
        "config_hash": cfg.section_hash(*spec.sections),
        "inputs": RunDirectory(cfg).expected_inputs(spec), **extra})
    return folder
