"""Config sections for the tokenizer and the model preset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from phi1.sections import option


@dataclass
class TokenizerConfig:
    inputs: dict[str, float] = option(
        {"filter": 1.0}, doc="documents to train on (and to measure bytes/token): {dataset = sampling rate}")
    name: str = option("", doc="HF tokenizer dir or hub name (paper: Salesforce/codegen-350M-mono); '' = train BPE")
    vocab_size: int = option(8192, ge=300, doc="BPE: target size (padded to a multiple of pad_multiple)")
    pad_multiple: int = option(64, ge=1, doc="pad the vocabulary with reserved tokens to a multiple of this")
    max_docs: int = option(0, ge=0, doc="BPE: train on a seeded sample of this many docs (0 = all)")


@dataclass
class ModelConfig:
    """A preset (phi-1, phi-1-small, tiny, nano) with optional per-field overrides (0 = keep preset).

    The vocabulary size always comes from the tokenizer; the context length
    from the packed data (``tokenize.seq_len``) unless overridden here.
    """

    preset: Literal["phi-1", "phi-1-small", "tiny", "nano"] = option(
        "tiny", doc="the architecture: phi-1 (1.3B), phi-1-small (350M), tiny (the demo's), nano (tests)")
    n_layer: int = option(0, ge=0, doc="decoder layers")
    n_embd: int = option(0, ge=0, doc="hidden size")
    n_inner: int = option(0, ge=0, doc="MLP size")
    n_head: int = option(0, ge=0, doc="attention heads (head dim = n_embd / n_head)")
    max_position_embeddings: int = option(0, ge=0, doc="context length (0 = tokenize.seq_len)")
    rotary_dim: int = option(0, ge=0, doc="head dims that get rotary embeddings (phi-1: 32 of 64)")
    dropout: float = option(-1.0, ge=-1, le=1, doc="attention and residual dropout (-1 = preset value)")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = option(
        "sdpa", doc="sdpa = torch scaled_dot_product_attention (FlashAttention kernels on GPU)")
