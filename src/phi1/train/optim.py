"""AdamW with decoupled weight decay on matrices only, and the learning-rate schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch


def build_optimizer(model: torch.nn.Module, cfg: Any) -> torch.optim.AdamW:
    """AdamW over ``model``'s trainable parameters.

    Weight decay applies to 2-D weights (linear layers, embeddings) and not
    to biases or LayerNorm gains, which decay would only pull towards zero.
    Fused kernels (one pass over each parameter for the whole update) on CUDA
    and CPU alike.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=True)


@dataclass(frozen=True)
class LRSchedule:
    """Linear warmup from 0 to ``lr``, then linear / cosine decay reaching
    ``min_lr`` at ``decay_steps`` (and staying there), or constant.

    ``decay_steps`` is the schedule's horizon, not the run's stop: the paper's
    phi-1-base is the 24k-step checkpoint of a schedule that spans 36k steps,
    so its learning rate is still a third of the peak when it stops. A pure
    function of the step, so a resumed run needs only the step."""

    lr: float
    min_lr: float
    warmup_steps: int
    decay_steps: int
    kind: str = "linear"

    @classmethod
    def from_config(cls, cfg: Any) -> "LRSchedule":
        return cls(cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.decay_steps or cfg.max_steps, cfg.schedule)

    def __call__(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return self.lr
        span = max(1, self.decay_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        if self.kind == "linear":
            return self.lr + (self.min_lr - self.lr) * progress
        if self.kind == "cosine":
            return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))
        raise ValueError(f"unknown schedule {self.kind!r}")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
