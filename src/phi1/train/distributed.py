"""Processes, devices and parallelism, applied from outside the model code.

One process per device. Under ``torchrun`` (any number of nodes) the
environment carries RANK / WORLD_SIZE / LOCAL_RANK and the rendezvous; we
join the process group (NCCL on GPUs, gloo on CPUs) and wrap the plain
``PhiForCausalLM`` in one of:

* DDP: every rank holds the whole model; gradients are all-reduced
  (averaged) during backward. Right for phi-1-sized models on 40-80 GB cards.
* FSDP2 (``fully_shard``): parameters, gradients and optimizer state are
  sharded over ranks; each decoder layer gathers its weights just in time.
  For models whose replicas do not fit. ``fully_shard`` is applied to each
  decoder layer, then to the root (embeddings, final norm, LM head), as in
  torchtitan.

Activation checkpointing and ``torch.compile`` are applied first, per layer,
so the same model code serves every combination.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import warnings
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist

from phi1.errors import Phi1Error


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise Phi1Error("device = 'cuda' but torch sees no CUDA device (CPU build of torch, or no GPU)")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


@contextlib.contextmanager
def distributed_env(device_preference: str = "auto") -> Iterator[DistEnv]:
    """Join the process group when launched by torchrun (left as it was found on exit)."""
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = pick_device(device_preference, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    created = False
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"backend": backend, "timeout": datetime.timedelta(minutes=30)}
        if device.type == "cuda":
            kwargs["device_id"] = device
        dist.init_process_group(**kwargs)
        created = True
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    try:
        yield DistEnv(rank, world, local_rank, device)
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        if env.device.type == "cuda":
            dist.barrier(device_ids=[env.device.index])
        else:
            dist.barrier()


def all_reduce_sum(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj: Any, env: DistEnv) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=env.device if env.device.type == "cuda" else None)
    return box[0]


def gather_objects(obj: Any, env: DistEnv) -> list[Any] | None:
    """Every rank's ``obj``, as a list on rank 0 (None elsewhere)."""
    if not env.distributed:
        return [obj]
    out = [None] * env.world_size if env.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


@dataclass
class Parallelized:
    """The model as the loop uses it.

    ``model`` is the plain ``PhiForCausalLM`` (FSDP shards it in place, so
    its state-dict keys stay the Hugging Face ones); ``forward_module`` is
    what the loop calls (the DDP wrapper under DDP).
    """

    model: torch.nn.Module
    forward_module: torch.nn.Module
    kind: str  # single | ddp | fsdp

    @contextlib.contextmanager
    def no_grad_sync(self, active: bool) -> Iterator[None]:
        """Skip the gradient reduction for all but the last micro-batch of a step."""
        if not active or self.kind == "single":
            yield
        elif self.kind == "ddp":
            with self.forward_module.no_sync():
                yield
        else:
            self.model.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                self.model.set_requires_gradient_sync(True)


def parallelize(model: torch.nn.Module, env: DistEnv, cfg: Any, param_dtype: torch.dtype | None,
                compile: bool = False) -> Parallelized:
    """Apply activation checkpointing, compile (`phi1.train.compiling`), then
    DDP or FSDP2 to ``model``.

    ``param_dtype`` (FSDP only): the dtype weights are gathered and computed
    in (bf16 mixed precision without autocast); gradients are reduced in fp32.
    """
    from phi1.model.attention import use_bmm_attention
    from phi1.model.presets import fuse_activations, residual_in_compute_dtype, rotary_in_compute_dtype
    from phi1.train.lm_loss import defer_lm_head

    use_bmm_attention(model)  # short-context CPU training: attention as two bmms (faster backward than SDPA's)
    fuse_activations(model)  # the same GELU as one kernel (training only; checkpoints keep gelu_new)
    rotary_in_compute_dtype(model)  # bf16 rotary under autocast, as in a bf16 model
    residual_in_compute_dtype(model)  # and a bf16 residual stream
    defer_lm_head(model)  # the forward ends at the hidden states; `lm_loss.loss_sum` applies the head
    if cfg.activation_checkpointing:
        # Non-reentrant checkpointing of each decoder layer (transformers'
        # GradientCheckpointingLayer); it composes with DDP, FSDP2 and compile.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if compile:
        from phi1.train.compiling import compile_layers

        compile_layers(model)
    kind = "single"
    if env.distributed:
        kind = "fsdp" if cfg.parallel == "fsdp" else "ddp"
    elif cfg.parallel == "fsdp" and dist.is_initialized():
        kind = "fsdp"
    if kind == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        model.to(env.device)
        ids = [env.device.index] if env.device.type == "cuda" else None
        return Parallelized(model, DDP(model, device_ids=ids), "ddp")
    if kind == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
        for layer in model.model.layers:
            fully_shard(layer, mp_policy=mp, reshard_after_forward=cfg.fsdp_reshard_after_forward)
        # The root keeps embeddings, final norm and LM head; it is gathered for
        # the whole step anyway, so don't free it after forward.
        fully_shard(model, mp_policy=mp, reshard_after_forward=False)
        # FSDP2 hooks the model's output; our loss reads logits out of place,
        # so its warning about in-place ops on view outputs does not apply.
        warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
        return Parallelized(model, model, "fsdp")
    model.to(env.device)
    return Parallelized(model, model, "single")
