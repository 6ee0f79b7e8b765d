"""An unattended run must not lose its checkpoints: a damaged newest checkpoint
is skipped on resume (one line) and never pushes the last good one out of
``keep_checkpoints``; a save on a full disk removes its half-written folder
and keeps the others; a save killed earlier leaves nothing that holds space."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from phi1.errors import Phi1Error
from phi1.train.checkpoint import (checkpoint_problem, latest_checkpoint, list_checkpoints, load_checkpoint,
                                   prune_checkpoints, save_checkpoint, step_dir)
from phi1.train.distributed import DistEnv, Parallelized

ENV = DistEnv(0, 1, 0, torch.device("cpu"))


@pytest.fixture(scope="module")
def tiny():
    from phi1.model.config import ModelConfig
    from phi1.model.presets import build_model, phi_config, resolve_shape

    torch.manual_seed(0)
    model = build_model(phi_config(resolve_shape(ModelConfig(preset="nano"), seq_len=16), 64))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.zeros(1, 8, dtype=torch.long)).logits.sum().backward()
    optimizer.step()  # AdamW state exists
    return Parallelized(model, model, "single"), optimizer


def _save(tiny, root: Path, step: int, fmt: str = "full") -> Path:
    parallel, optimizer = tiny
    return save_checkpoint(root, step, parallel, optimizer, {"seed": 0}, ENV, fmt=fmt)


def _cut(path: Path, keep: float = 0.5) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(int(size * keep))


DAMAGE = {
    "weights cut short": lambda c: _cut(c / "model.safetensors"),
    "optimizer cut short": lambda c: _cut(c / "optimizer.pt", 0.9),
    "rng missing": lambda c: (c / "rng.pkl").unlink(),
    "trainer.json garbage": lambda c: (c / "trainer.json").write_text("{\"step\": "),
    "config missing": lambda c: (c / "config.json").unlink(),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_newest_checkpoint_is_skipped_on_resume_with_one_line(tiny, tmp_path, damage):
    root = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        _save(tiny, root, step)
    assert all(checkpoint_problem(p) == "" for _, p in list_checkpoints(root))
    DAMAGE[damage](step_dir(root, 3))
    said: list[str] = []
    assert latest_checkpoint(root, say=said.append) == step_dir(root, 2)
    assert len(said) == 1 and str(step_dir(root, 3)) in said[0] and "damaged" in said[0] and "\n" not in said[0]
    state = load_checkpoint(step_dir(root, 2), tiny[0], tiny[1], ENV)  # the one taken loads
    assert state["step"] == 2


def test_pruning_never_deletes_the_last_good_checkpoint_because_a_damaged_one_is_newer(tiny, tmp_path):
    root = tmp_path / "checkpoints"
    _save(tiny, root, 10)
    _save(tiny, root, 20)
    _cut(step_dir(root, 20) / "model.safetensors")  # the newest is damaged: the run resumes from 10 ...
    assert latest_checkpoint(root, say=lambda _: None) == step_dir(root, 10)
    _save(tiny, root, 12)  # ... and saves step 12 with keep_checkpoints = 1
    prune_checkpoints(root, keep_last=1)
    assert [s for s, _ in list_checkpoints(root)] == [12, 20]  # 12 kept (whole); 20 left to be rewritten
    assert latest_checkpoint(root, say=lambda _: None) == step_dir(root, 12)
    _save(tiny, root, 20)  # training reaches 20 again: the damaged one is replaced
    prune_checkpoints(root, keep_last=1)
    assert [s for s, _ in list_checkpoints(root)] == [20] and checkpoint_problem(step_dir(root, 20)) == ""
    # A damaged checkpoint older than a whole one is removed (it could never be resumed from).
    _save(tiny, root, 30)
    _cut(step_dir(root, 20) / "optimizer.pt", 0.9)
    prune_checkpoints(root, keep_last=2)
    assert [s for s, _ in list_checkpoints(root)] == [30]


def test_a_save_on_a_full_disk_removes_its_half_and_keeps_the_others(tiny, tmp_path, monkeypatch):
    import safetensors.torch

    root = tmp_path / "checkpoints"
    _save(tiny, root, 1)

    def full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 4096)  # part of it made it to disk
        raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(Phi1Error) as e:
        _save(tiny, root, 2)
    msg = str(e.value)
    assert msg.startswith(f"checkpoint step 2 could not be written to {root}") and "\n" not in msg
    assert "the checkpoints before it are kept" in msg
    assert sorted(p.name for p in root.iterdir()) == ["step-0000001"]  # no half-written folder holds the space
    assert checkpoint_problem(step_dir(root, 1)) == ""


def test_a_save_killed_earlier_leaves_nothing_holding_space_and_a_rewritten_step_stays_whole(tiny, tmp_path):
    root = tmp_path / "checkpoints"
    _save(tiny, root, 1)
    stale = root / ".step-0000002.tmp-deadbeef"  # what a kill during a save leaves
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(os.urandom(1 << 16))
    _save(tiny, root, 2)
    assert not stale.exists()
    _save(tiny, root, 2)  # the same step again (a resumed attempt): replaced, never missing
    assert sorted(p.name for p in root.iterdir()) == ["step-0000001", "step-0000002"]
    assert checkpoint_problem(step_dir(root, 2)) == ""
    assert json.loads((step_dir(root, 2) / "trainer.json").read_text())["step"] == 2


def test_a_sharded_checkpoint_cut_short_is_found(tiny, tmp_path):
    root = tmp_path / "checkpoints"
    ckpt = _save(tiny, root, 1, fmt="sharded")
    assert checkpoint_problem(ckpt) == ""
    shards = sorted((ckpt / "dcp").glob("*.distcp"))
    assert shards
    _cut(shards[0])
    assert "cut short" in checkpoint_problem(ckpt)
    said: list[str] = []
    assert latest_checkpoint(root, say=said.append) is None
    assert len(said) == 2 and said[1] == f"no whole checkpoint in {root}: training starts again from step 0"
