"""Model presets: the paper's sizes, overrides, and the PhiForCausalLM they build."""

from __future__ import annotations

import pytest

from phi1.errors import Phi1Error
from phi1.model.config import ModelConfig
from phi1.model.presets import (PRESETS, count_params, flops_per_token, pad_to_multiple, phi_config,
                                resolve_shape)


def _config(preset: str, vocab: int = 51200, **overrides):
    shape = resolve_shape(ModelConfig(preset=preset, **overrides))
    return shape, phi_config(shape, vocab)


def test_phi1_is_the_papers_13b_model():
    shape, cfg = _config("phi-1")
    assert (shape.n_layer, shape.n_embd, shape.n_inner, shape.n_head, shape.head_dim) == (24, 2048, 8192, 32, 64)
    assert cfg.model_type == "phi" and cfg.hidden_act == "gelu_new" and not cfg.tie_word_embeddings
    assert cfg.rope_parameters["partial_rotary_factor"] == 0.5  # rotary on 32 of 64 head dims
    assert cfg.max_position_embeddings == 2048 and cfg.vocab_size == 51200
    counts = count_params(cfg)  # meta device: no 5 GB allocation
    # 1,418,270,720: the size of the released microsoft/phi-1 (untied LM head with bias).
    assert counts["total"] == 1_418_270_720
    assert 1.25e9 < counts["non_embedding"] < 1.35e9


def test_phi1_small_is_350m():
    shape, cfg = _config("phi-1-small")
    assert (shape.n_layer, shape.n_embd, shape.n_inner, shape.n_head, shape.head_dim) == (20, 1024, 4096, 16, 64)
    total = count_params(cfg)["total"]
    assert 340e6 < total < 365e6


def test_small_presets_and_overrides():
    _, tiny = _config("tiny", vocab=4096)
    assert 1e6 < count_params(tiny)["total"] < 10e6
    _, nano = _config("nano", vocab=448)
    assert count_params(nano)["total"] < 1e6
    shape = resolve_shape(ModelConfig(preset="phi-1-small", n_layer=4, dropout=0.0), seq_len=512)
    assert shape.n_layer == 4 and shape.dropout == 0.0 and shape.n_embd == 1024
    assert shape.max_position_embeddings == 512  # the data's row length unless overridden
    shape = resolve_shape(ModelConfig(preset="tiny", max_position_embeddings=1024), seq_len=256)
    assert shape.max_position_embeddings == 1024


def test_vocab_is_padded_to_64():
    assert pad_to_multiple(50257) == 50304
    assert pad_to_multiple(51200) == 51200
    _, cfg = _config("nano", vocab=300)
    assert cfg.vocab_size == 320


def test_flops_per_token_is_palm_formula():
    _, cfg = _config("phi-1")
    n = count_params(cfg)["non_embedding"]
    assert flops_per_token(cfg, 2048, n) == 6 * n + 12 * 24 * 32 * 64 * 2048


def test_bad_presets_are_one_line_errors():
    with pytest.raises(Phi1Error, match="not a preset.*phi-1-small"):
        resolve_shape(ModelConfig(preset="phi-2"))
    with pytest.raises(Phi1Error, match="not divisible"):
        resolve_shape(ModelConfig(preset="nano", n_head=3))
    assert set(PRESETS) == {"phi-1", "phi-1-small", "tiny", "nano"}


def test_fused_gelu_is_the_same_function():
    import torch
    from transformers import PhiConfig, PhiForCausalLM

    from phi1.model.presets import fuse_activations

    torch.manual_seed(0)
    cfg = PhiConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                    max_position_embeddings=64)
    model = PhiForCausalLM(cfg).eval()
    x = torch.randint(0, 128, (2, 24))
    with torch.no_grad():
        before = model(input_ids=x).logits
        assert fuse_activations(model) == 2 and fuse_activations(model) == 0
        after = model(input_ids=x).logits
    assert model.config.hidden_act == "gelu_new"  # checkpoints and exports keep the paper's activation
    assert torch.allclose(before, after, atol=1e-5), (before - after).abs().max()
