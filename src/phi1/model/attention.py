"""Causal self-attention as two batched matmuls, for short-context training on a CPU.

PyTorch's CPU FlashAttention kernel (what ``scaled_dot_product_attention``
runs on a CPU) is fast forward, but its backward pass has a large fixed cost:
on the demo's shape (16 sequences x 3 heads x 256 positions x 64 dims, bf16)
one layer's forward + backward took 26 ms against 19.5 ms for the plain
formulation -- scores by ``baddbmm`` (with the causal mask as its bias),
softmax, ``bmm`` with the values -- whose backward is two more bmm pairs and
one softmax backward (bench/RESULTS.md). From 512 positions on the plain form
loses (it materialises the ``[heads, T, T]`` scores FlashAttention avoids),
and forward-only (evaluation, generation) FlashAttention is as fast or
faster. So `bmm_causal_attention` takes exactly the case where it wins and
hands everything else to transformers' own SDPA path:

* a CPU, gradients on, a half-precision compute dtype (bf16/fp16 autocast);
* no attention mask (a causal pattern only: packed pretraining rows,
  right-padded finetuning rows), no dropout, no KV cache (queries = keys),
  as many key/value heads as query heads;
* at most `MAX_POSITIONS` positions.

Numerically it is attention: the scores' matmul in the compute dtype, the
softmax computed in fp32 and rounded once to the compute dtype (as
FlashAttention rounds its probabilities before the value matmul); outputs
and gradients agree with SDPA to bf16 rounding (tests/train/test_attention.py).

`use_bmm_attention` switches a model to it for training, like
`phi1.model.presets.fuse_activations`: it changes ``config._attn_implementation``
(never saved: checkpoints and exports keep ``sdpa``) to a name registered
with transformers' attention and mask interfaces.
"""

from __future__ import annotations

from typing import Any

import torch

NAME = "phi1_bmm_causal"
MAX_POSITIONS = 256  # measured crossover on a 2-core Xeon: equal at 512, 2x slower at 1024


def bmm_causal_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                         is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: ``query/key/value`` are
    ``[batch, heads, T, head_dim]``; returns ``([batch, T, heads, head_dim], None)``."""
    if not _plain_causal_fits(module, query, key, attention_mask, dropout, is_causal, kwargs):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    b, h, t, d = query.shape
    scale = scaling if scaling is not None else d ** -0.5
    bias = torch.full((t, t), float("-inf"), dtype=query.dtype, device=query.device).triu_(1)
    scores = torch.baddbmm(bias, query.reshape(b * h, t, d), key.reshape(b * h, t, d).transpose(1, 2), alpha=scale)
    probs = torch.softmax(scores, dim=-1)  # fp32 inside the kernel, one rounding to the compute dtype
    out = torch.bmm(probs, value.reshape(b * h, t, d))
    return out.view(b, h, t, d).transpose(1, 2).contiguous(), None


def _plain_causal_fits(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None,
                       dropout: float, is_causal: bool | None, kwargs: dict[str, Any]) -> bool:
    t = query.shape[2]
    return (query.device.type == "cpu" and torch.is_grad_enabled()
            and query.dtype in (torch.bfloat16, torch.float16) and key.dtype == query.dtype
            and mask is None and not dropout and is_causal is not False and getattr(module, "is_causal", True)
            and 1 < t <= MAX_POSITIONS and key.shape[2] == t and key.shape[1] == query.shape[1]
            and not any(kwargs.get(k) is not None for k in ("softcap", "position_bias", "sliding_window"))
            and not kwargs.get("output_attentions", False))


def use_bmm_attention(model: Any) -> bool:
    """Switch ``model`` (a transformers model using ``sdpa``) to
    `bmm_causal_attention` for training. Returns whether it switched (only
    from ``sdpa``: ``eager`` or ``flash_attention_2`` chosen in the config stay)."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    config = model.config
    if config._attn_implementation != "sdpa":
        return False
    # Registering a name is idempotent; the mask interface makes transformers build
    # the same masks as for sdpa (none for unpadded causal batches).
    AttentionInterface.register(NAME, bmm_causal_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    config._attn_implementation = NAME
    return True
