"""Training checkpoints: everything needed to continue a run exactly.

``<stage>/checkpoints/step-0001000/`` holds

* ``config.json`` + ``model.safetensors``: the model's full (unsharded) fp32
  weights under their Hugging Face names, so a checkpoint is itself loadable
  with ``PhiForCausalLM.from_pretrained`` and ``phi1 export`` needs no torch
  distributed;
* ``optimizer.pt``: AdamW's full state keyed by parameter name;
* ``trainer.json``: step, schedule, loss accumulators, best validation loss,
  evaluation history: the data position is the step (batch order is a pure
  function of seed and step, see `phi1.train.data`);
* ``rng.pkl``: python, numpy, torch and CUDA generator states of every rank;
* ``tokenizer/``: the tokenizer files, so the checkpoint stands alone.

Under FSDP the full state is gathered to rank 0 (cpu offload) with
``torch.distributed.checkpoint.state_dict``; loading hands every rank the
full state and the same utility shards it. One format for single process,
DDP and FSDP: a run can resume with another parallelism. (For models far
beyond phi-1's 1.3B, where gathering on one host is too slow, per-rank DCP
shards would be the next step.)

Writes go to a hidden temporary folder renamed into place, so a crash never
leaves a checkpoint that looks complete.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from phi1.errors import InputError
from phi1.train.distributed import DistEnv, Parallelized, barrier, gather_objects

CHECKPOINTS = "checkpoints"
TRAINER = "trainer.json"
_STEP_DIR = re.compile(r"^step-(\d{7,})$")


def step_dir(root: Path, step: int) -> Path:
    return Path(root) / f"step-{step:07d}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / TRAINER).exists():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def read_trainer_state(ckpt: Path) -> dict[str, Any]:
    path = Path(ckpt) / TRAINER
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"not a phi1 checkpoint (no {TRAINER}): {ckpt}") from None


# --------------------------------------------------------------------------- RNG


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's generator states as plain Python (bytes, ints): picklable
    without tensors, so ranks can send them to rank 0."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], np_state[1].tobytes(), int(np_state[2]), int(np_state[3]), float(np_state[4])),
        "torch": torch.get_rng_state().numpy().tobytes(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device).numpy().tobytes()
    return state


def _byte_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.frombuffer(keys, dtype=np.uint32).copy(), pos, has_gauss, cached))
    torch.set_rng_state(_byte_tensor(state["torch"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(_byte_tensor(state["cuda"]), device)


# --------------------------------------------------------------------------- save / load


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    root: Path,
    step: int,
    parallel: Parallelized,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    env: DistEnv,
    tokenizer_dir: Path | None = None,
) -> Path:
    """Write checkpoint ``step`` (collective: every rank calls it); returns its folder."""
    from safetensors.torch import save_file

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_sd, optim_sd = get_state_dict(parallel.model, optimizer, options=options)
    rngs = gather_objects(rng_state(env.device), env)
    final = step_dir(root, step)
    if env.is_main:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        parallel.model.config.save_pretrained(tmp)
        tensors = {k: v.detach().contiguous() for k, v in model_sd.items()}
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        torch.save(optim_sd, tmp / "optimizer.pt")
        with open(tmp / "rng.pkl", "wb") as fh:
            pickle.dump({"world_size": env.world_size, "ranks": rngs}, fh)
        if tokenizer_dir is not None:
            shutil.copytree(tokenizer_dir, tmp / "tokenizer")
        (tmp / TRAINER).write_text(json.dumps({**trainer_state, "step": step}, indent=2, sort_keys=True) + "\n")
        for f in tmp.iterdir():
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if final.exists():  # the same step written by an earlier attempt
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    barrier(env)
    return final


def load_checkpoint(ckpt: Path, parallel: Parallelized, optimizer: torch.optim.Optimizer | None,
                    env: DistEnv) -> dict[str, Any]:
    """Load weights (and optimizer, RNG states) into an already parallelized model."""
    from safetensors.torch import load_file

    ckpt = Path(ckpt)
    state = read_trainer_state(ckpt)
    model_sd = load_file(str(ckpt / "model.safetensors"))
    options = StateDictOptions(full_state_dict=True)
    if optimizer is None:
        set_state_dict(parallel.model, [], model_state_dict=model_sd, optim_state_dict={}, options=options)
        return state
    optim_sd = torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True)
    set_state_dict(parallel.model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd, options=options)
    with open(ckpt / "rng.pkl", "rb") as fh:
        rng = pickle.load(fh)
    if rng["world_size"] == env.world_size:
        set_rng_state(rng["ranks"][env.rank], env.device)
    else:  # a different world size cannot replay the same dropout masks; reseed deterministically
        seed = int(state.get("seed", 0))
        reseed(seed, env.rank, int(state["step"]))
    return state


def reseed(seed: int, rank: int, step: int = 0) -> None:
    """Per-rank generators for dropout (model init seeds the same on all ranks before this)."""
    s = (seed * 1_000_003 + rank * 7919 + step) % (2**31)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def prune_checkpoints(root: Path, keep_last: int, keep: set[int] = frozenset()) -> list[Path]:
    """Delete all but the ``keep_last`` newest checkpoints and the steps in ``keep``."""
    found = list_checkpoints(root)
    newest = {s for s, _ in found[-keep_last:]}
    removed = []
    for s, p in found:
        if s not in newest and s not in keep:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    for stale in Path(root).glob(".step-*.tmp-*") if Path(root).is_dir() else []:
        shutil.rmtree(stale, ignore_errors=True)
    return removed
