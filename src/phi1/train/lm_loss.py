"""The language-model loss without the full logits tensor: the LM head and
the cross-entropy fused, a chunk of positions at a time.

A training step's largest tensors are the logits (``[batch, seq, vocab]``)
and their gradient: 67 MB each in fp32 for the demo's 16 x 256 x 4,096, and
3.4 GB for one phi-1 micro-batch of 8 x 2,048 x 51,200. Computing them whole
costs memory traffic on every element (the fp32 upcast, log-softmax, the
gather, and the same again backwards) that dwarfs the head's matmul on a
CPU. `LinearCrossEntropy` computes, for a chunk of rows at a time, the
logits, their log-sum-exp and the loss, and at once the chunk's gradient
(softmax minus the one-hot target), which it folds into the gradients of the
hidden states, the head's weight and bias; the chunk's logits are then
dropped. The backward pass only scales those gradients. This is the fused
linear cross-entropy of Liger-Kernel and Apple's cut-cross-entropy, written
with plain torch ops.

Numerically it is the unfused loss: the head's matmul runs in the same
dtype (the autocast dtype, or the weight's under FSDP mixed precision), the
softmax and the loss in fp32, the gradient fed to the matmuls in the
matmul's dtype (where autocast's cast would put it); only summation order
differs (tests/train/test_lm_loss.py).

The head is deferred, not removed: `defer_lm_head` makes the model's
``lm_head`` return its input, so the model's forward (and the DDP / FSDP
wrappers around it, whose hooks must see that forward) yields the final
hidden states, and `loss_sum` applies the same head's parameters. The swap
is for training only, like `phi1.model.presets.fuse_activations`:
parameters, names and checkpoints are unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from phi1.train.data import IGNORE

# Logits elements per chunk: large enough for efficient matmuls, small enough to stay in cache.
CHUNK_ELEMENTS = {"cpu": 1 << 22, "cuda": 1 << 25}


class DeferredHead(torch.nn.Linear):
    """``lm_head`` whose forward returns the hidden states it is given; its
    weight and bias (the same parameters) are applied by `loss_sum`."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # noqa: D401
        return hidden


def defer_lm_head(model: Any) -> bool:
    """Make ``model.lm_head`` a `DeferredHead` keeping its parameters (their
    identity, so optimizers and FSDP see the same tensors). Returns whether it
    was swapped (False when already deferred)."""
    head = model.lm_head
    if isinstance(head, DeferredHead):
        return False
    head.__class__ = DeferredHead  # same module, same parameters and hooks; only forward changes
    return True


def compute_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype ``F.linear`` would multiply in here: the autocast dtype where
    autocast is on for the weight's device, else the weight's own."""
    device = weight.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return weight.dtype


class LinearCrossEntropy(torch.autograd.Function):
    """Sum over rows of ``cross_entropy(hidden @ weight.T + bias, targets)``,
    rows whose target is `IGNORE` excluded. Gradients are computed in the
    forward pass, chunk by chunk, and only scaled in the backward."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor, dtype: torch.dtype, chunk: int) -> torch.Tensor:
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        h = hidden.to(dtype)
        w = weight.to(dtype)
        b = bias.to(dtype) if bias is not None else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(weight.size(0), dtype=torch.float32, device=weight.device) if need_b else None
        for start in range(0, h.size(0), chunk):
            hc, t = h[start:start + chunk], targets[start:start + chunk]
            logits = F.linear(hc, w, b).float()
            lse = torch.logsumexp(logits, dim=-1)
            valid = t != IGNORE
            safe = torch.where(valid, t, 0)
            picked = logits.gather(1, safe[:, None]).squeeze(1)
            total += torch.where(valid, lse - picked, 0.0).sum()
            if grad_h is None and grad_w is None and grad_b is None:
                continue
            # d loss / d logits = softmax - one_hot(target), zero on ignored rows (in place on the logits)
            g = logits.sub_(lse[:, None]).exp_()
            g[torch.arange(g.size(0), device=g.device), safe] -= 1.0
            g.mul_(valid[:, None])
            gd = g.to(dtype)
            if grad_h is not None:
                grad_h[start:start + chunk] = gd @ w
            if grad_w is not None:
                grad_w += (gd.t() @ hc).float()
            if grad_b is not None:
                grad_b += g.sum(0)
        ctx.save_for_backward(*(x if x is not None else torch.empty(0) for x in (grad_h, grad_w, grad_b)))
        ctx.present = (grad_h is not None, grad_w is not None, grad_b is not None)
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        saved = ctx.saved_tensors
        grads: list[Any] = []
        for tensor, present, dtype in zip(saved, ctx.present, ctx.dtypes):
            grads.append((tensor.float() * grad_out).to(dtype) if present else None)
        return grads[0], grads[1], grads[2], None, None, None


def loss_sum(hidden: torch.Tensor, labels: torch.Tensor, head: torch.nn.Linear) -> torch.Tensor:
    """Sum of next-token cross-entropies over target positions (fp32), from the
    final hidden states ``[batch, seq, hidden]`` and the (deferred) LM head.

    The labels are shifted, not the hidden states: position ``i`` predicts
    ``labels[i + 1]``, the last position nothing.
    """
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE).reshape(-1)
    flat = hidden.reshape(-1, hidden.size(-1))
    weight = head.weight
    vocab = weight.size(0)
    chunk = max(1, CHUNK_ELEMENTS.get(flat.device.type, CHUNK_ELEMENTS["cpu"]) // vocab)
    return LinearCrossEntropy.apply(flat, weight, head.bias, targets, compute_dtype(weight), chunk)


def logits_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The same loss from full logits (the reference `loss_sum` is tested against)."""
    vocab = logits.size(-1)
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE)
    return F.cross_entropy(logits.float().reshape(-1, vocab), targets.reshape(-1), ignore_index=IGNORE,
                           reduction="sum")
