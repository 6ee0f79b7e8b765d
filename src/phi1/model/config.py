"""Config sections for the tokenizer and the model preset."""

from __future__ import annotations

from dataclasses import dataclass

from phi1.sections import option


@dataclass
class TokenizerConfig:
    name: str = option("", doc="HF tokenizer dir or hub name (paper: Salesforce/codegen-350M-mono); '' = train BPE")
    vocab_size: int = option(8192, ge=300, doc="BPE: target size (padded to a multiple of pad_multiple)")
    pad_multiple: int = option(64, ge=1, doc="pad the vocabulary with reserved tokens to a multiple of this")
    max_docs: int = option(0, ge=0, doc="BPE: train on a seeded sample of this many docs (0 = all)")


@dataclass
class ModelConfig:
    """A preset (phi-1, phi-1-small, tiny, nano) with optional per-field overrides (0 = keep preset)."""

    preset: str = option("tiny", doc="phi-1 | phi-1-small | tiny | nano")
    n_layer: int = option(0, ge=0)
    n_embd: int = option(0, ge=0)
    n_inner: int = option(0, ge=0)
    n_head: int = option(0, ge=0)
    max_position_embeddings: int = option(0, ge=0)
    rotary_dim: int = option(0, ge=0)
    dropout: float = option(-1.0, ge=-1, le=1, doc="-1 = preset value")
