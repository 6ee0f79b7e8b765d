"""Finished stage folders shared between the ablation's runs, as relative symlinks.

``<ablation>/filtered-s0/ingest -> ../base/ingest``: the run sees the stage's
manifest, and therefore its run_id, exactly as the base run wrote it, so the
stages after it are current or stale by the pipeline's own rule. A link is
ours to replace; a real folder in its place is somebody's data and is never
touched (one clear error instead).
"""

from __future__ import annotations

import os
from pathlib import Path

from phi1.errors import Phi1Error
from phi1.manifest import read_manifest


def link_target(run_dir: Path, source_run: str, stage: str) -> str:
    """The relative target of ``run_dir/stage``: the same stage in a sibling run folder."""
    return os.path.join("..", source_run, stage)


def link_stages(run_dir: Path, links: dict[str, str]) -> list[str]:
    """Make ``run_dir/<stage>`` a link to ``../<source>/<stage>`` for each entry;
    returns the stages whose link was made or changed. The source stage must be
    finished (a manifest with status done)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    made = []
    for stage, source in links.items():
        here = run_dir / stage
        target = link_target(run_dir, source, stage)
        if read_manifest(run_dir / target).get("status") != "done":
            raise Phi1Error(f"ablation: cannot link {here} to {(run_dir / target).resolve()}: that stage has not "
                            f"finished in run {source!r}")
        if here.is_symlink():
            if os.readlink(here) == target:
                continue
            here.unlink()
        elif here.exists():
            raise Phi1Error(f"ablation: {here} is a folder of its own, where the ablation links the {source!r} "
                            f"run's {stage!r} (nothing is computed twice): move it away and re-run")
        partial = run_dir / f"{stage}.partial"
        if partial.exists() and not partial.is_symlink():
            raise Phi1Error(f"ablation: {partial} holds an attempt of {stage!r}, which this run links from run "
                            f"{source!r}: move it away and re-run")
        os.symlink(target, here, target_is_directory=True)
        made.append(stage)
    return made


def linked_stages(run_dir: Path) -> dict[str, str]:
    """The stage folders of ``run_dir`` that are links: stage -> link target."""
    if not run_dir.is_dir():
        return {}
    return {p.name: os.readlink(p) for p in sorted(run_dir.iterdir()) if p.is_symlink()}


CACHE = "cache"


def link_cache(run_dir: Path, source_run: str) -> bool:
    """Share ``<run>/cache/`` (LLM replies, embeddings, the CPU calibration: keyed
    caches that outlive re-runs) with a sibling run, so no run measures or asks
    again what another already did. A real cache folder already there is left as
    it is (it is only a cache). Returns whether a link was made."""
    here = run_dir / CACHE
    target = link_target(run_dir, source_run, CACHE)
    (run_dir / target).mkdir(parents=True, exist_ok=True)
    if here.is_symlink():
        if os.readlink(here) == target:
            return False
        here.unlink()
    elif here.exists():
        return False
    run_dir.mkdir(parents=True, exist_ok=True)
    os.symlink(target, here, target_is_directory=True)
    return True
