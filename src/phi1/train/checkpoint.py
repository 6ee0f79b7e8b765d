"""Training checkpoints: everything needed to continue a run exactly, under
any parallelism.

``<stage>/checkpoints/step-0001000/`` holds

* ``config.json``: the model's Hugging Face config;
* the weights and AdamW state in one of two formats (``checkpoint_format``):

  - ``full``: ``model.safetensors`` (the full fp32 weights under their
    Hugging Face names, so the folder loads with
    ``PhiForCausalLM.from_pretrained``) and ``optimizer.pt`` (AdamW's state
    keyed by parameter name), gathered to rank 0 (CPU offload) by
    ``torch.distributed.checkpoint.state_dict``;
  - ``sharded``: ``dcp/``, a ``torch.distributed.checkpoint`` folder in which
    every rank writes its own shard of weights and optimizer state, in
    parallel, without gathering anything (as torchtitan saves): the format
    for models whose full state is slow to gather on one host. Needs a
    filesystem every rank sees (the run folder on shared storage).

* ``trainer.json``: step, loss accumulators, best validation loss,
  evaluation history: the data position is the step (batch order is a pure
  function of seed and step, see `phi1.train.data`); written last, its
  presence makes the folder a checkpoint;
* ``rng.pkl``: python, numpy, torch and CUDA generator states of every rank;
* ``tokenizer/``: the tokenizer files, so the checkpoint stands alone.

Either format loads into a single process, DDP or FSDP2 of any world size:
the full state is handed to every rank and ``set_state_dict`` shards it; a
sharded checkpoint is resharded by ``torch.distributed.checkpoint.load`` into
whatever layout the loading run has. Same world size: the RNG states come
back and the run continues bit for bit; another world size cannot replay the
same dropout masks, so it reseeds deterministically from (seed, rank, step).
`phi1 export` turns either format into a Hugging Face folder.

Writes go to a hidden temporary folder renamed into place, so a crash never
leaves a checkpoint that looks complete; a save that fails (a full disk)
removes its temporary folder and says which step it could not write, and the
checkpoints before it stay. A checkpoint that looks complete but is damaged
(a file missing or cut short, checked from headers and sizes by
`checkpoint_problem`) is never resumed from: `latest_checkpoint` says so in
one line and takes the newest whole one; and `prune_checkpoints` counts only
whole checkpoints among the ones it keeps, so it never deletes the last good
one because a damaged one is newer.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
import struct
import sys
import uuid
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_model_state_dict, set_state_dict)

from phi1.errors import InputError, Phi1Error
from phi1.files import fsync_dir, write_atomic
from phi1.train.distributed import DistEnv, Parallelized, barrier, broadcast_object, gather_objects

CHECKPOINTS = "checkpoints"
TRAINER = "trainer.json"
SHARDED = "dcp"  # the torch.distributed.checkpoint folder of a sharded checkpoint
FORMATS = ("full", "sharded")
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


def latest_checkpoint(root: Path, say: Any = None) -> Path | None:
    """The newest checkpoint that is whole; each newer damaged one is one line
    (``say``, default stderr) naming it, why, and what is resumed instead."""
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    found = list_checkpoints(root)
    for _, path in reversed(found):
        problem = checkpoint_problem(path)
        if not problem:
            return path
        say(f"checkpoint {path} is damaged ({problem}): not resuming from it; trying the one before")
    if found:
        say(f"no whole checkpoint in {root}: training starts again from step 0")
    return None


def checkpoint_problem(ckpt: Path) -> str:
    """Why a complete-looking checkpoint cannot be loaded, or '' when it looks whole:
    a file missing or cut short, a JSON or pickle that does not read. Checked from
    headers and sizes (safetensors header, zip directory, DCP metadata), not by
    loading the weights."""
    ckpt = Path(ckpt)
    try:
        state = json.loads((ckpt / TRAINER).read_text())
        if not isinstance(state, dict) or not isinstance(state.get("step"), int):
            return f"{TRAINER} holds no step"
        json.loads((ckpt / "config.json").read_text())
        with open(ckpt / "rng.pkl", "rb") as fh:
            pickle.load(fh)
        if format_of(ckpt) == "sharded":
            return _sharded_problem(ckpt / SHARDED)
        return _safetensors_problem(ckpt / "model.safetensors") or _zip_problem(ckpt / "optimizer.pt")
    except FileNotFoundError as e:
        return f"{Path(e.filename or '?').name} is missing"
    except Exception as e:  # noqa: BLE001 - any unreadable piece makes it damaged
        return " ".join(f"{type(e).__name__}: {e}".split())[:200]


def _safetensors_problem(path: Path) -> str:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return f"{path.name} is cut short"
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            return f"{path.name} is cut short"
        header = json.loads(fh.read(n))
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    expected = 8 + n + max(ends, default=0)
    return "" if size == expected else f"{path.name} has {size:,} bytes, its header says {expected:,}"


def _zip_problem(path: Path) -> str:
    size = path.stat().st_size
    with zipfile.ZipFile(path) as zf:  # a cut file has no central directory at its end
        for info in zf.infolist():
            if info.header_offset + info.compress_size > size:
                return f"{path.name} is cut short"
    return ""


def _sharded_problem(folder: Path) -> str:
    meta = dcp.FileSystemReader(str(folder)).read_metadata()
    needed: dict[str, int] = {}
    for info in (getattr(meta, "storage_data", None) or {}).values():
        name = getattr(info, "relative_path", None)
        if name is not None:
            needed[name] = max(needed.get(name, 0), int(info.offset) + int(info.length))
    for name, end in needed.items():
        shard = folder / name
        if not shard.is_file():
            return f"{SHARDED}/{name} is missing"
        if shard.stat().st_size < end:
            return f"{SHARDED}/{name} is cut short"
    return ""


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


def checkpoint_format(setting: str, parallel_kind: str) -> str:
    """``auto``: sharded under FSDP (its point is never holding the full state), full otherwise."""
    if setting == "auto":
        return "sharded" if parallel_kind == "fsdp" else "full"
    return setting


def format_of(ckpt: Path) -> str:
    return "sharded" if (Path(ckpt) / SHARDED / ".metadata").is_file() else "full"


def save_checkpoint(
    root: Path,
    step: int,
    parallel: Parallelized,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    env: DistEnv,
    tokenizer_dir: Path | None = None,
    fmt: str = "full",
) -> Path:
    """Write checkpoint ``step`` (collective: every rank calls it); returns its folder."""
    if fmt not in FORMATS:
        raise ValueError(f"checkpoint format must be one of {FORMATS}, got {fmt!r}")
    root, final = Path(root), step_dir(root, step)
    tmp = root / broadcast_object(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}" if env.is_main else "", env)
    if env.is_main:
        _remove_stale(root)  # a save killed earlier: its space is needed now
        tmp.mkdir(parents=True)
    barrier(env)  # the folder exists before any rank writes its shard into it
    try:
        _write(tmp, final, root, step, parallel, optimizer, trainer_state, env, tokenizer_dir, fmt)
    except BaseException as e:
        full = isinstance(e, Exception) and _disk_full(e, root)
        if env.is_main:
            shutil.rmtree(tmp, ignore_errors=True)  # a half-written checkpoint must not hold the space
        if full:
            why = " ".join(str(e).split())[:200] or type(e).__name__
            raise Phi1Error(f"checkpoint step {step} could not be written to {root} ({why}; the disk is full): "
                            "the checkpoints before it are kept; make room and re-run the same command to "
                            "resume from the last one") from e
        raise
    barrier(env)
    return final


_ENOSPC_WORDS = ("no space left", "os error 28", "disk quota", "file too large")


def _disk_full(e: Exception, root: Path) -> bool:
    """Whether a failed write looks like a full disk (torch.save says only "unexpected pos")."""
    if isinstance(e, OSError) and e.errno in (28, 122, 27):  # ENOSPC, EDQUOT, EFBIG
        return True
    if any(w in str(e).lower() for w in _ENOSPC_WORDS):
        return True
    try:
        return shutil.disk_usage(root).free < 64 * 2**20
    except OSError:
        return False


def _remove_stale(root: Path) -> None:
    for stale in root.glob(".step-*.tmp-*") if root.is_dir() else []:
        shutil.rmtree(stale, ignore_errors=True)


def _write(tmp: Path, final: Path, root: Path, step: int, parallel: Parallelized, optimizer: torch.optim.Optimizer,
           trainer_state: dict[str, Any], env: DistEnv, tokenizer_dir: Path | None, fmt: str) -> None:
    from safetensors.torch import save_file

    if fmt == "sharded":
        model_sd, optim_sd = get_state_dict(parallel.model, optimizer)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=tmp / SHARDED, no_dist=not _group())
    else:
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_sd, optim_sd = get_state_dict(parallel.model, optimizer, options=options)
        if env.is_main:
            tensors = {k: v.detach().contiguous() for k, v in model_sd.items()}
            save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            torch.save(optim_sd, tmp / "optimizer.pt")
    del model_sd, optim_sd
    rngs = gather_objects(rng_state(env.device), env)
    if env.is_main:
        parallel.model.config.save_pretrained(tmp)
        with open(tmp / "rng.pkl", "wb") as fh:
            pickle.dump({"world_size": env.world_size, "ranks": rngs}, fh)
        if tokenizer_dir is not None:
            shutil.copytree(tokenizer_dir, tmp / "tokenizer")
        for f in tmp.iterdir():
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        # Written last: its presence is what makes the folder a checkpoint.
        write_atomic(tmp / TRAINER, json.dumps({**trainer_state, "step": step}, indent=2, sort_keys=True) + "\n")
        old = None
        if final.exists():  # the same step written by an earlier attempt: set aside, not deleted, until replaced
            old = root / f".{final.name}.tmp-old-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
        os.replace(tmp, final)
        fsync_dir(root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(ckpt: Path, parallel: Parallelized, optimizer: torch.optim.Optimizer | None,
                    env: DistEnv) -> dict[str, Any]:
    """Load weights (and optimizer, RNG states) into an already parallelized
    model, from either format, whatever parallelism wrote it."""
    ckpt = Path(ckpt)
    state = read_trainer_state(ckpt)
    if format_of(ckpt) == "sharded":
        _load_sharded(ckpt / SHARDED, parallel.model, optimizer)
    else:
        _load_full(ckpt, parallel.model, optimizer)
    if optimizer is None:
        return state
    with open(ckpt / "rng.pkl", "rb") as fh:
        rng = pickle.load(fh)
    if rng["world_size"] == env.world_size:
        set_rng_state(rng["ranks"][env.rank], env.device)
    else:  # a different world size cannot replay the same dropout masks; reseed deterministically
        seed = int(state.get("seed", 0))
        reseed(seed, env.rank, int(state["step"]))
    return state


def _load_full(ckpt: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    from safetensors.torch import load_file

    model_sd = load_file(str(ckpt / "model.safetensors"))
    options = StateDictOptions(full_state_dict=True)
    if optimizer is None:
        set_model_state_dict(model, model_sd, options=options)
        return
    optim_sd = torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True)
    set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd, options=options)


def _load_sharded(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    """torchtitan's pattern: take this run's own (sharded) state dicts as the
    layout, let DCP fill them from the shards on disk, then load them back."""
    if optimizer is None:
        model_sd = get_model_state_dict(model)
        _dcp_load({"model": model_sd}, folder)
        set_model_state_dict(model, model_sd)
        return
    model_sd, optim_sd = get_state_dict(model, optimizer)
    both = {"model": model_sd, "optim": optim_sd}
    _dcp_load(both, folder)
    set_state_dict(model, optimizer, model_state_dict=both["model"], optim_state_dict=both["optim"])


def _group() -> bool:
    """Whether a process group exists (collective loads); without one DCP runs in this process alone."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _dcp_load(state: dict[str, Any], folder: Path, alone: bool = False) -> None:
    """``dcp.load`` in place; ``alone`` (or no process group): this process only,
    without DCP's warning that it assumes so (here it is meant)."""
    no_dist = alone or not _group()
    with warnings.catch_warnings():
        if no_dist:
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, checkpoint_id=folder, no_dist=no_dist)


def full_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's full fp32 weights in this process alone (no process
    group needed, even where one exists): what `phi1 export` writes."""
    from safetensors.torch import load_file

    ckpt = Path(ckpt)
    if format_of(ckpt) == "full":
        return load_file(str(ckpt / "model.safetensors"))
    from transformers import PhiConfig

    from phi1.model.presets import build_model

    model = build_model(PhiConfig.from_pretrained(ckpt), "meta").to_empty(device="cpu")
    model_sd = model.state_dict()
    _dcp_load({"model": model_sd}, ckpt / SHARDED, alone=True)
    return model_sd


def reseed(seed: int, rank: int, step: int = 0) -> None:
    """Per-rank generators for dropout (model init seeds the same on all ranks before this)."""
    s = (seed * 1_000_003 + rank * 7919 + step) % (2**31)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def prune_checkpoints(root: Path, keep_last: int, keep: set[int] = frozenset()) -> list[Path]:
    """Delete all but the ``keep_last`` newest whole checkpoints and the steps in
    ``keep``. A damaged checkpoint never counts among the kept (so a damaged newer
    one cannot push out the last good one); it is deleted once a whole one is newer
    (it could never be resumed from), and left alone otherwise."""
    found = list_checkpoints(root)
    whole = [(s, p) for s, p in found if not checkpoint_problem(p)]
    newest = {s for s, _ in whole[-keep_last:]}
    latest_whole = whole[-1][0] if whole else -1
    good = {s for s, _ in whole}
    removed = []
    for s, p in found:
        if s in newest or s in keep or (s not in good and s > latest_whole):
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    _remove_stale(Path(root))
    return removed
