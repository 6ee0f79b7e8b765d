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
# On a CPU a chunk of fp32 logits (4 MiB at 1M elements) stays in the L2 caches while the
# element-wise passes run over it: for the demo's 4,096-token vocabulary, 256-row chunks made the
# fused loss 1.3x faster than 1,024-row ones. A large vocabulary leaves too few rows for that (20
# at phi-1's 51,200), and then the chunk's fp32 weight-gradient product (vocab x hidden), written
# and added once per chunk, dominates: such chunks get `CPU_MIN_ROWS` rows (at vocabulary 51,200,
# hidden 1,024: 1.2x faster than 256-row chunks, 2.7x faster than 81-row ones).
CHUNK_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 25}
CPU_CACHE_MIN_ROWS = 128  # fewer rows than this fit the cache budget: use CPU_MIN_ROWS
CPU_MIN_ROWS = 1024


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
        need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[2])
        total, grad_h, grad_w, grad_b = chunked_loss(hidden, weight, bias, targets, dtype, chunk, need)
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


def chunked_loss(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                 dtype: torch.dtype, chunk: int, need: tuple[bool, bool, bool],
                 select_rows: bool | None = None) -> tuple[Any, Any, Any, Any]:
    """The summed loss, and the gradients of hidden, weight and bias where
    ``need`` asks for them (else None): the work of `LinearCrossEntropy`.
    ``select_rows``: compute logits only for rows with a target (default: on
    a CPU; on a GPU finding them would wait for the device every step)."""
    with torch.no_grad():
        need_h, need_w, need_b = need
        h_all = hidden.to(dtype)
        w = weight.to(dtype)
        b = bias.to(dtype) if bias is not None else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        rows = None
        if select_rows if select_rows is not None else hidden.device.type == "cpu":
            # Only positions with a target get logits: finetuning scores the solution tokens
            # only (and skips padding), so most rows can go.
            rows = (targets != IGNORE).nonzero().squeeze(1)
            h, targets = h_all.index_select(0, rows), targets.index_select(0, rows)
        else:
            h = h_all
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(weight.size(0), dtype=torch.float32, device=weight.device) if need_b else None
        grads = need_h or need_w or need_b
        for start in range(0, h.size(0), chunk):
            hc, t = h[start:start + chunk], targets[start:start + chunk]
            if rows is not None:  # every row has a target
                loss, g = _selected_rows_chunk(F.linear(hc, w, b), t, grads)
            else:
                loss, g = _masked_chunk(F.linear(hc, w, b).float(), t, grads)
            total += loss
            if g is None:
                continue
            gd = g.to(dtype)
            if grad_h is not None:
                grad_h[start:start + chunk] = gd @ w
            if grad_w is not None:
                grad_w += (gd.t() @ hc).float()
            if grad_b is not None:
                grad_b += g.sum(0)
        if grad_h is not None and rows is not None:
            grad_h = torch.zeros_like(h_all).index_copy_(0, rows, grad_h)
    return total, grad_h, grad_w, grad_b


# Below this probability of the target, -log(p) loses precision (fp32 denormals, then 0):
# such rows get their loss from the log-sum-exp instead.
_TINY_P = 1e-30


def _selected_rows_chunk(logits: torch.Tensor, t: torch.Tensor, grad: bool) -> tuple[torch.Tensor, Any]:
    """Loss sum and d loss / d logits (fp32) of a chunk whose every row has a
    target: one softmax in fp32 gives both (the loss is -log p[target]; the
    gradient is p minus the one-hot target), a third of the element-wise
    passes of log-sum-exp, subtract and exp."""
    p = torch.softmax(logits, dim=-1, dtype=torch.float32)
    rows = torch.arange(p.size(0), device=p.device)
    pt = p[rows, t]
    loss = -torch.log(pt)
    tiny = (pt < _TINY_P).nonzero().squeeze(1)
    if tiny.numel():  # a target the model all but rules out: exact from the logits
        lg = logits.index_select(0, tiny).float()
        loss[tiny] = torch.logsumexp(lg, dim=-1) - lg.gather(1, t[tiny][:, None]).squeeze(1)
    if not grad:
        return loss.sum(), None
    p[rows, t] = pt - 1.0
    return loss.sum(), p


def _masked_chunk(logits: torch.Tensor, t: torch.Tensor, grad: bool) -> tuple[torch.Tensor, Any]:
    """Loss sum and d loss / d logits of a chunk where rows whose target is
    `IGNORE` count for nothing (in place on the fp32 ``logits``)."""
    lse = torch.logsumexp(logits, dim=-1)
    valid = t != IGNORE
    safe = torch.where(valid, t, 0)
    picked = logits.gather(1, safe[:, None]).squeeze(1)
    loss = torch.where(valid, lse - picked, 0.0).sum()
    if not grad:
        return loss, None
    g = logits.sub_(lse[:, None]).exp_()  # softmax
    g[torch.arange(g.size(0), device=g.device), safe] -= 1.0
    return loss, g.mul_(valid[:, None])


def loss_sum(hidden: torch.Tensor, labels: torch.Tensor, head: torch.nn.Linear) -> torch.Tensor:
    """Sum of next-token cross-entropies over target positions (fp32), from the
    final hidden states ``[batch, seq, hidden]`` and the (deferred) LM head.

    The labels are shifted, not the hidden states: position ``i`` predicts
    ``labels[i + 1]``, the last position nothing.
    """
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE).reshape(-1)
    flat = hidden.reshape(-1, hidden.size(-1))
    weight = head.weight
    chunk = chunk_rows(flat.device.type, weight.size(0))
    dtype = compute_dtype(weight)
    if not torch.is_grad_enabled():
        # Evaluation: the loss only. (Inside autograd.Function.forward ``needs_input_grad``
        # still says True under no_grad, so the Function would compute the gradients too.)
        return chunked_loss(flat, weight, head.bias, targets, dtype, chunk, (False, False, False))[0]
    return LinearCrossEntropy.apply(flat, weight, head.bias, targets, dtype, chunk)


def chunk_rows(device_type: str, vocab: int) -> int:
    """Rows of logits per chunk of `LinearCrossEntropy` (see `CHUNK_ELEMENTS`)."""
    rows = max(1, CHUNK_ELEMENTS.get(device_type, CHUNK_ELEMENTS["cpu"]) // vocab)
    if device_type == "cpu" and rows < CPU_CACHE_MIN_ROWS:
        rows = max(rows, CPU_MIN_ROWS)
    return rows


def logits_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The same loss from full logits (the reference `loss_sum` is tested against)."""
    vocab = logits.size(-1)
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE)
    return F.cross_entropy(logits.float().reshape(-1, vocab), targets.reshape(-1), ignore_index=IGNORE,
                           reduction="sum")
