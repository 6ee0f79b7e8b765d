"""`phi1.model.attention`: causal attention as two bmms for short-context CPU
training, against the SDPA path it replaces and falls back to."""

from __future__ import annotations

import json

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from phi1.model.attention import MAX_POSITIONS, NAME, bmm_causal_attention, use_bmm_attention
from phi1.model.config import ModelConfig
from phi1.model.presets import build_model, phi_config, resolve_shape


class _Attn(torch.nn.Module):
    is_causal = True
    num_key_value_groups = 1


def _qkv(b=3, h=2, t=40, d=16, dtype=torch.bfloat16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, t, h, d, generator=g).to(dtype).transpose(1, 2).requires_grad_() for _ in range(3)]


def _reference(q, k, v):
    """fp32 causal attention (the math, no kernel), [b, t, h, d]."""
    out = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    return out.transpose(1, 2)


def test_outputs_and_gradients_match_fp32_attention_to_bf16_rounding():
    q, k, v = _qkv()
    go = torch.randn(3, 40, 2, 16)
    qr, kr, vr = (x.detach().float().requires_grad_() for x in (q, k, v))
    ref = _reference(qr, kr, vr)
    ref.backward(go)
    out, weights = bmm_causal_attention(_Attn(), q, k, v, None, scaling=16 ** -0.5)
    assert weights is None and out.dtype == torch.bfloat16 and out.shape == (3, 40, 2, 16) and out.is_contiguous()
    out.float().backward(go)
    assert (out.float() - ref).abs().max() < 0.03
    for got, want in ((q.grad, qr.grad), (k.grad, kr.grad), (v.grad, vr.grad)):
        cos = torch.nn.functional.cosine_similarity(got.float().flatten(), want.flatten(), dim=0)
        assert cos > 0.999 and (got.float() - want).abs().max() <= 0.03 * want.abs().max()
    # causal: a change to the last position's key and value leaves every earlier output alone
    k2, v2 = k.detach().clone(), v.detach().clone()
    k2[:, :, -1] += 5
    v2[:, :, -1] -= 5
    with torch.enable_grad():
        out2, _ = bmm_causal_attention(_Attn(), q.detach(), k2, v2, None, scaling=0.25)
        out1, _ = bmm_causal_attention(_Attn(), q.detach(), k.detach(), v.detach(), None, scaling=0.25)
    assert torch.equal(out1[:, :-1], out2[:, :-1]) and not torch.equal(out1[:, -1], out2[:, -1])


@pytest.mark.parametrize("case", ["mask", "no_grad", "fp32", "too_long", "dropout", "kv_cache", "gqa", "not_causal"])
def test_everything_else_is_transformers_sdpa_exactly(case):
    t = MAX_POSITIONS + 1 if case == "too_long" else 24
    dtype = torch.float32 if case == "fp32" else torch.bfloat16
    q, k, v = (x.detach() for x in _qkv(b=2, h=2, t=t, d=8, dtype=dtype))
    module, mask, kwargs = _Attn(), None, {}
    if case == "mask":
        mask = torch.ones(2, 1, t, t, dtype=torch.bool).tril()
        mask[0, :, :, :3] = False
    elif case == "dropout":
        kwargs["dropout"] = 0.1
        torch.manual_seed(0)
    elif case == "kv_cache":
        q = q[:, :, -1:]
    elif case == "gqa":
        module.num_key_value_groups = 2
        k, v = k[:, :1], v[:, :1]
    elif case == "not_causal":
        module.is_causal = False
    grad = torch.no_grad() if case == "no_grad" else torch.enable_grad()
    with grad:
        torch.manual_seed(0)
        got, _ = bmm_causal_attention(module, q, k, v, mask, scaling=0.3, **kwargs)
        torch.manual_seed(0)
        want, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=0.3, **kwargs)
    assert torch.equal(got, want)


def _nano(impl="sdpa"):
    shape = resolve_shape(ModelConfig(preset="nano"), 64)
    torch.manual_seed(0)
    return build_model(phi_config(shape, 448, attn_implementation=impl))


def test_a_model_trains_alike_and_saves_sdpa(tmp_path):
    ref, model = _nano(), _nano()
    assert use_bmm_attention(model) and model.config._attn_implementation == NAME
    assert use_bmm_attention(model) is False  # once
    ids = torch.randint(0, 448, (4, 64))
    losses = []
    for m in (ref, model):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = m(input_ids=ids, labels=ids).loss
        loss.backward()
        losses.append(loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=2e-3)
    for (name, a), b in zip(model.named_parameters(), ref.parameters()):
        cos = torch.nn.functional.cosine_similarity(a.grad.flatten(), b.grad.flatten(), dim=0)
        assert cos > 0.99, name
    with torch.no_grad():  # evaluation and padded batches are SDPA's, unchanged
        mask = torch.ones_like(ids)
        mask[0, 50:] = 0
        for kw in ({}, {"attention_mask": mask}):
            assert torch.equal(model(input_ids=ids, **kw).logits, ref(input_ids=ids, **kw).logits)
    model.config.save_pretrained(tmp_path)
    assert NAME not in (tmp_path / "config.json").read_text()
    assert "phi1" not in json.dumps(model.config.to_dict())


def test_only_sdpa_models_switch():
    model = _nano("eager")
    assert use_bmm_attention(model) is False and model.config._attn_implementation == "eager"
