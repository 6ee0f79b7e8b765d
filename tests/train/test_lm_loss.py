"""The fused LM head + cross-entropy (`phi1.train.lm_loss`) against the unfused loss it replaces."""

from __future__ import annotations

import pytest
import torch

from phi1.model.config import ModelConfig
from phi1.model.presets import build_model, phi_config, resolve_shape, rotary_in_compute_dtype
from phi1.train import lm_loss
from phi1.train.data import IGNORE
from phi1.train.lm_loss import LinearCrossEntropy, defer_lm_head, logits_loss_sum, loss_sum


def _case(rows: int = 37, hidden: int = 24, vocab: int = 50, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(1, rows, hidden, generator=g, requires_grad=True)
    head = torch.nn.Linear(hidden, vocab)
    with torch.no_grad():
        head.weight.copy_(torch.randn(vocab, hidden, generator=g) * 0.3)
        head.bias.copy_(torch.randn(vocab, generator=g))
    labels = torch.randint(0, vocab, (1, rows), generator=g)
    labels[0, ::5] = IGNORE  # some positions are not targets
    return h, head, labels


def _grads(loss, h, head):
    loss.backward()
    out = (h.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone())
    h.grad = head.weight.grad = head.bias.grad = None
    return out


@pytest.mark.parametrize("chunk_elements", [50, 7 * 50, 1 << 22])  # one row a chunk, uneven chunks, one chunk
def test_fused_loss_and_gradients_equal_the_unfused_ones_fp32(monkeypatch, chunk_elements):
    h, head, labels = _case()
    want = logits_loss_sum(head(h), labels)
    want_g = _grads(want * 3.0, h, head)  # a scaled loss (loss scaling, averaging): gradients scale too
    monkeypatch.setitem(lm_loss.CHUNK_ELEMENTS, "cpu", chunk_elements)
    monkeypatch.setattr(lm_loss, "CPU_CACHE_MIN_ROWS", 1)  # take the element budget as it is
    got = loss_sum(h, labels, head)
    got_g = _grads(got * 3.0, h, head)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    for a, b in zip(got_g, want_g):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), (a - b).abs().max()


def test_fused_loss_under_bf16_autocast_matches_autocast_reference():
    h, head, labels = _case(rows=64, hidden=32, vocab=96)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = logits_loss_sum(head(h), labels)  # bf16 matmul, fp32 loss: what the loop did before
    want_g = _grads(want, h, head)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss_sum(h, labels, head)
    got_g = _grads(got, h, head)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(want.item(), rel=1e-4)  # same bf16 logits; only summation order differs
    for a, b in zip(got_g, want_g):
        assert a.dtype == torch.float32  # gradients come back in the parameters' dtype
        cos = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
        assert cos > 0.9999 and (a - b).abs().max() <= 0.02 * b.abs().max()


def test_no_targets_and_no_grad():
    h, head, labels = _case()
    none = torch.full_like(labels, IGNORE)
    loss = loss_sum(h, none, head)
    assert loss.item() == 0.0
    g = _grads(loss, h, head)
    assert all(t.abs().max().item() == 0.0 for t in g)
    with torch.no_grad():  # evaluation: the loss only, no gradient work
        assert loss_sum(h, labels, head).item() == pytest.approx(logits_loss_sum(head(h), labels).item(), rel=1e-6)
    # the head without a bias (a plain tied/untied Linear)
    nob = torch.nn.Linear(h.size(-1), 50, bias=False)
    assert LinearCrossEntropy.apply(h.reshape(-1, h.size(-1)), nob.weight, None,
                                    torch.full((h.size(1),), IGNORE), torch.float32, 8).item() == 0.0


def test_deferred_head_keeps_parameters_and_trains_like_the_model_loss():
    shape = resolve_shape(ModelConfig(preset="nano"), 32)
    torch.manual_seed(0)
    ref = build_model(phi_config(shape, 448))
    model = build_model(phi_config(shape, 448))
    model.load_state_dict(ref.state_dict())
    ids = torch.randint(0, 448, (3, 32))
    params_before = [id(p) for p in model.parameters()]
    keys_before = list(model.state_dict())
    assert defer_lm_head(model) and not defer_lm_head(model)  # idempotent
    assert [id(p) for p in model.parameters()] == params_before and list(model.state_dict()) == keys_before
    hidden = model(input_ids=ids).logits
    assert hidden.shape == (3, 32, shape.n_embd)  # the head's input, not vocabulary logits
    got = loss_sum(hidden, ids, model.lm_head) / (ids.numel() - 3)
    want = ref(input_ids=ids, labels=ids).loss  # transformers' own shifted mean cross-entropy
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    got.backward()
    want.backward()
    for (name, a), b in zip(model.named_parameters(), ref.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6), name


def _before_and_after(swap, inspect=None):
    """Logits of a nano model in fp32 and under bf16 autocast, before and after
    ``swap(model)`` (applied twice: it must take once); ``inspect(model)`` runs first."""
    shape = resolve_shape(ModelConfig(preset="nano"), 32)
    torch.manual_seed(0)
    model = build_model(phi_config(shape, 448)).eval()
    ids = torch.randint(0, 448, (2, 32))
    if inspect is not None:
        inspect(model)
    out = {}
    with torch.no_grad():
        for when in ("before", "after"):
            if when == "after":
                swap(model)
                swap(model)  # once only
            out["fp32_" + when] = model(input_ids=ids).logits
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out["bf16_" + when] = model(input_ids=ids).logits.float()
    return model, out


def test_rotary_in_compute_dtype_changes_only_autocast_runs():
    model, out = _before_and_after(rotary_in_compute_dtype)
    assert torch.equal(out["fp32_before"], out["fp32_after"])  # without autocast: untouched
    assert len(model.model.rotary_emb._forward_hooks) == 1
    # under autocast, only the rounding of cos/sin to bf16 differs
    diff = (out["bf16_after"] - out["bf16_before"]).abs().max()
    assert torch.allclose(out["bf16_after"], out["bf16_before"], atol=0.05), diff


def test_chunk_rows_keep_small_vocabularies_in_cache_and_large_ones_in_big_chunks():
    assert lm_loss.chunk_rows("cpu", 4096) == 256  # the demo: 1M fp32 logits a chunk
    assert lm_loss.chunk_rows("cpu", 51200) == lm_loss.CPU_MIN_ROWS  # phi-1: not 20 rows
    assert lm_loss.chunk_rows("cpu", 8192) == 128
    assert lm_loss.chunk_rows("cuda", 51200) == (1 << 25) // 51200  # GPUs unchanged
    assert lm_loss.chunk_rows("cpu", 1 << 30) == lm_loss.CPU_MIN_ROWS


def test_evaluation_does_no_gradient_work_and_no_position_without_target_is_scored():
    """Under no_grad only the head's matmul runs (an autograd.Function still sees
    needs_input_grad = True there, so the fused loss must not go through it)."""
    from torch.utils.flop_counter import FlopCounterMode

    h, head, labels = _case(rows=40, hidden=16, vocab=64)
    targets = int((labels[0, 1:] != IGNORE).sum())  # 31 of 40 positions predict a target
    one_matmul = 2 * targets * 16 * 64  # on a CPU, positions without a target get no logits
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        loss_sum(h, labels, head)
    assert counter.get_total_flops() == one_matmul
    with FlopCounterMode(display=False) as counter:
        loss_sum(h, labels, head)
    assert counter.get_total_flops() == 3 * one_matmul  # training: logits, grad of hidden, grad of weight


def test_residual_in_compute_dtype_changes_only_autocast_runs():
    from phi1.model.presets import residual_in_compute_dtype

    seen = []

    def watch(model):
        model.model.layers[0].register_forward_pre_hook(
            lambda m, args, kwargs: seen.append(args[0].dtype if args else kwargs["hidden_states"].dtype),
            with_kwargs=True)

    model, out = _before_and_after(residual_in_compute_dtype, watch)
    assert seen == [torch.float32, torch.float32, torch.float32, torch.bfloat16]
    assert torch.equal(out["fp32_before"], out["fp32_after"])  # without autocast: untouched
    assert len(model.model.embed_tokens._forward_hooks) == 1
    diff = (out["bf16_after"] - out["bf16_before"]).abs().max()
    assert torch.allclose(out["bf16_after"], out["bf16_before"], atol=0.1), diff
