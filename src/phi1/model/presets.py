"""Model presets: the paper's phi-1 and phi-1-small, and two small ones for CPUs.

Every preset is a configuration of transformers' ``PhiForCausalLM``
(``model_type = "phi"``), the architecture the released microsoft/phi-1
loads as: multi-head attention and the MLP in parallel from one LayerNorm,
rotary embeddings on ``rotary_dim`` of each head's dimensions, ``gelu_new``,
an untied LM head with a bias. So every checkpoint phi1 writes is a plain
Hugging Face model (transformers, vLLM, PEFT) with no conversion.

``[model] preset = "phi-1"`` picks a row below; any non-zero field of the
section overrides it. The vocabulary always comes from the tokenizer (its
length padded to a multiple of 64) and the context from the packed data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from phi1.errors import Phi1Error


@dataclass(frozen=True)
class ModelShape:
    n_layer: int
    n_embd: int
    n_inner: int
    n_head: int
    max_position_embeddings: int
    rotary_dim: int
    dropout: float

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


PRESETS: dict[str, ModelShape] = {
    # Gunasekar et al. 2023, section 2: 24 layers, hidden 2048, MLP 8192, 32 heads of 64, rotary on 32
    # of them, context 2048, attention and residual dropout 0.1 (pretraining). ~1.3B parameters.
    "phi-1": ModelShape(24, 2048, 8192, 32, 2048, 32, 0.1),
    # phi-1-small: 20 layers, hidden 1024, MLP 4096, 16 heads of 64. ~350M parameters.
    "phi-1-small": ModelShape(20, 1024, 4096, 16, 2048, 32, 0.1),
    # The CPU demo: same head shape (64, rotary on 32), a few million parameters with a
    # 4k vocabulary; pretrains in minutes on 2 cores.
    "tiny": ModelShape(4, 192, 768, 3, 256, 32, 0.0),
    # Tests: the smallest model that still has every part (2 layers, 2 heads of 32).
    "nano": ModelShape(2, 64, 256, 2, 64, 16, 0.0),
}

VOCAB_MULTIPLE = 64


def pad_to_multiple(n: int, multiple: int = VOCAB_MULTIPLE) -> int:
    return -(-n // multiple) * multiple


def resolve_shape(model_cfg: Any, seq_len: int | None = None) -> ModelShape:
    """The preset named by ``model_cfg.preset`` with the section's overrides applied.

    ``seq_len`` (the packed data's row length) sets the context when the
    section does not.
    """
    if model_cfg.preset not in PRESETS:
        raise Phi1Error(f"model.preset = {model_cfg.preset!r} is not a preset; choose one of: "
                        + ", ".join(PRESETS))
    shape = PRESETS[model_cfg.preset]
    overrides = {k: getattr(model_cfg, k) for k in ("n_layer", "n_embd", "n_inner", "n_head",
                                                     "max_position_embeddings", "rotary_dim")
                 if getattr(model_cfg, k)}
    if seq_len and not model_cfg.max_position_embeddings:
        overrides["max_position_embeddings"] = seq_len
    if model_cfg.dropout >= 0:
        overrides["dropout"] = model_cfg.dropout
    shape = replace(shape, **overrides)
    if shape.n_embd % shape.n_head:
        raise Phi1Error(f"model: n_embd = {shape.n_embd} is not divisible by n_head = {shape.n_head}")
    if shape.rotary_dim > shape.head_dim or shape.rotary_dim % 2:
        raise Phi1Error(f"model: rotary_dim = {shape.rotary_dim} must be even and <= the head dim "
                        f"{shape.head_dim}")
    return shape


def phi_config(shape: ModelShape, vocab_size: int, *, bos_token_id: int | None = None,
               eos_token_id: int | None = None, attn_implementation: str = "sdpa") -> Any:
    """A transformers ``PhiConfig`` for ``shape`` (vocabulary padded to a multiple of 64)."""
    from transformers import PhiConfig

    cfg = PhiConfig(
        vocab_size=pad_to_multiple(vocab_size),
        hidden_size=shape.n_embd,
        intermediate_size=shape.n_inner,
        num_hidden_layers=shape.n_layer,
        num_attention_heads=shape.n_head,
        num_key_value_heads=shape.n_head,
        max_position_embeddings=shape.max_position_embeddings,
        hidden_act="gelu_new",
        resid_pdrop=shape.dropout,
        attention_dropout=shape.dropout,
        embd_pdrop=0.0,
        layer_norm_eps=1e-5,
        initializer_range=0.02,
        tie_word_embeddings=False,
        qk_layernorm=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                         "partial_rotary_factor": shape.rotary_dim / shape.head_dim},
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=None,
        use_cache=True,
        architectures=["PhiForCausalLM"],
    )
    cfg._attn_implementation = attn_implementation
    return cfg


def shape_of(config: Any) -> ModelShape:
    """The `ModelShape` of a ``PhiConfig`` (e.g. one read from a checkpoint)."""
    head_dim = config.hidden_size // config.num_attention_heads
    factor = (config.rope_parameters or {}).get("partial_rotary_factor", 0.5)
    return ModelShape(config.num_hidden_layers, config.hidden_size, config.intermediate_size,
                      config.num_attention_heads, config.max_position_embeddings,
                      int(head_dim * factor), float(config.resid_pdrop))


def build_model(config: Any, device: Any = None) -> Any:
    """A freshly initialised ``PhiForCausalLM`` (fp32 master weights), on ``device``."""
    import torch
    from transformers import PhiForCausalLM

    with torch.device(device or "cpu"):
        model = PhiForCausalLM(config)
    return model


def fuse_activations(model: Any) -> int:
    """Swap transformers' ``gelu_new`` modules (tanh-approximate GELU written as
    seven element-wise ops: pow, mul, add, tanh, ...) for the same function as
    one fused kernel (``F.gelu(approximate="tanh")``, transformers'
    ``gelu_pytorch_tanh``). Applied from outside the model, for training only:
    the config and checkpoints keep ``hidden_act = "gelu_new"``, and the
    outputs agree to float rounding. On the demo's tiny model on a CPU this is
    ~16% of a training step (bench/RESULTS.md). Returns the modules swapped."""
    from transformers.activations import NewGELUActivation, PytorchGELUTanh

    swapped = 0
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is NewGELUActivation:
                setattr(parent, name, PytorchGELUTanh())
                swapped += 1
    return swapped


def rotary_in_compute_dtype(model: Any) -> None:
    """Under autocast, hand the attention its rotary ``cos``/``sin`` in the
    autocast dtype (bf16) rather than fp32. transformers computes them in
    fp32 and returns them in the hidden states' dtype, which under autocast is
    fp32: the bf16 queries and keys are then promoted to fp32 for the
    rotation, concatenated in fp32 and cast back to bf16 for attention -- on a
    CPU ~10% of the demo's training step in casts. A bf16 model (FSDP mixed
    precision, or ``torch_dtype=bfloat16``) already rotates in bf16; this does
    the same under autocast. Without autocast nothing changes. Training only,
    like `fuse_activations`: a forward hook, no weights involved."""
    import torch

    def cast(module: Any, args: Any, output: Any) -> Any:
        device = output[0].device.type
        if not torch.is_autocast_enabled(device):
            return output
        dtype = torch.get_autocast_dtype(device)
        return tuple(t.to(dtype) for t in output)

    rotary = getattr(model.model, "rotary_emb", None)
    if rotary is not None and not getattr(rotary, "_phi1_compute_dtype", False):
        rotary.register_forward_hook(cast)
        rotary._phi1_compute_dtype = True


def residual_in_compute_dtype(model: Any) -> None:
    """Under autocast, cast the token embeddings to the autocast dtype, so the
    residual stream (and every LayerNorm reading it) is bf16, as in a bf16
    model or under FSDP mixed precision, instead of fp32: autocast leaves the
    fp32 embedding output alone, every attention and MLP output (bf16) is
    then added to it in fp32, and each Linear casts the fp32 LayerNorm output
    back to bf16. On the demo's tiny model on a CPU that is 7% of a training
    step; losses over 40 steps agreed to 0.006 (bench/RESULTS.md).
    Weights, their gradients and the optimizer stay fp32. Without autocast
    nothing changes. Training only, like `rotary_in_compute_dtype`."""
    import torch

    def cast(module: Any, args: Any, output: Any) -> Any:
        device = output.device.type
        if not torch.is_autocast_enabled(device):
            return output
        return output.to(torch.get_autocast_dtype(device))

    embed = model.get_input_embeddings()
    if embed is not None and not getattr(embed, "_phi1_compute_dtype", False):
        embed.register_forward_hook(cast)
        embed._phi1_compute_dtype = True


def count_params(config: Any) -> dict[str, int]:
    """Parameter counts of a config, without allocating weights (meta device)."""
    import torch
    from transformers import PhiForCausalLM

    with torch.device("meta"):
        model = PhiForCausalLM(config)
    total = sum(p.numel() for p in model.parameters())
    embedding = model.model.embed_tokens.weight.numel()
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding}


@dataclass(frozen=True)
class ModelFlops:
    """Training FLOPs of the model, PaLM appendix B: ``6N + 12·L·H·Q·T`` per token.

    ``dense`` = 6N, N counting every weight that does a matmul per token (all
    parameters but the input embedding: a table lookup costs no FLOPs; the
    untied LM head does). ``attention`` = 12·L·H·Q, times the length T of the
    sequence the token attends in (the score and value matmuls, forward and
    backward). A row of ``n`` real tokens costs ``n·dense + n²·attention``.
    """

    dense: float
    attention: float

    def per_token(self, seq_len: int) -> float:
        return self.dense + self.attention * seq_len

    def of_rows(self, real_tokens: float, sum_squared_lengths: float) -> float:
        """FLOPs of a batch with ``real_tokens`` non-padding tokens whose rows'
        real lengths squared sum to ``sum_squared_lengths`` (padding is free)."""
        return self.dense * real_tokens + self.attention * sum_squared_lengths


def model_flops(config: Any, n_params: int | None = None) -> ModelFlops:
    if n_params is None:
        n_params = count_params(config)["non_embedding"]
    L, H = config.num_hidden_layers, config.num_attention_heads
    Q = config.hidden_size // H
    return ModelFlops(6.0 * n_params, 12.0 * L * H * Q)


def flops_per_token(config: Any, seq_len: int, n_params: int | None = None) -> float:
    """Training FLOPs per token of a ``seq_len``-token row (`ModelFlops`)."""
    return model_flops(config, n_params).per_token(seq_len)


def describe(config: Any, seq_len: int) -> dict[str, Any]:
    """What the training stages print and record at start."""
    counts = count_params(config)
    shape = shape_of(config)
    return {
        **asdict(shape),
        "vocab_size": config.vocab_size,
        "params": counts["total"],
        "params_non_embedding": counts["non_embedding"],
        "flops_per_token": flops_per_token(config, seq_len, counts["non_embedding"]),
        "flops": asdict(model_flops(config, counts["non_embedding"])),
    }


def human_count(n: float) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))
