"""The loop's parts on their own: schedule, batch order, loss masks, MFU, config checks."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from phi1.config import ConfigError, load_config
from phi1.train.data import (IGNORE, Example, GlobalBatchSampler, collate, encode_with_mask,
                             eval_indices, load_examples, save_examples)
from phi1.train.loop import token_loss_sum
from phi1.train.optim import LRSchedule, build_optimizer
from training_fixtures import make_tokenizer


def test_linear_schedule_warms_up_then_decays_to_min():
    s = LRSchedule(lr=1e-3, min_lr=1e-5, warmup_steps=10, decay_steps=110, kind="linear")
    assert s(0) == pytest.approx(1e-4)
    assert s(9) == pytest.approx(1e-3)  # warmup reaches the peak on its last step
    assert s(10) == pytest.approx(1e-3)
    assert s(60) == pytest.approx((1e-3 + 1e-5) / 2)
    assert s(110) == pytest.approx(1e-5) and s(500) == pytest.approx(1e-5)
    lrs = [s(i) for i in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # monotone decay


def test_cosine_and_constant_schedules():
    c = LRSchedule(lr=1.0, min_lr=0.0, warmup_steps=0, decay_steps=100, kind="cosine")
    assert c(0) == pytest.approx(1.0) and c(50) == pytest.approx(0.5) and c(100) == pytest.approx(0.0)
    assert c(25) > 0.5 > c(75)  # cosine: slow, fast, slow
    k = LRSchedule(lr=2e-4, min_lr=0.0, warmup_steps=4, decay_steps=100, kind="constant")
    assert k(1) == pytest.approx(1e-4) and k(4) == k(99) == pytest.approx(2e-4)


def test_weight_decay_only_on_matrices():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    opt = build_optimizer(model, SimpleNamespace(weight_decay=0.1, lr=1e-3, beta1=0.9, beta2=0.95, eps=1e-8))
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    assert opt.param_groups[0]["weight_decay"] == 0.1 and opt.param_groups[1]["weight_decay"] == 0.0
    assert decayed == {id(model[0].weight), id(model[1].weight)}
    assert len(opt.param_groups[1]["params"]) == 3  # linear bias, norm weight and bias


def test_batch_order_is_a_function_of_seed_and_step():
    s = GlobalBatchSampler(n=10, batch_size=4, seed=1)
    again = GlobalBatchSampler(n=10, batch_size=4, seed=1)
    assert [s.global_batch(k).tolist() for k in range(6)] == [again.global_batch(k).tolist() for k in (0, 1, 2, 3, 4, 5)]
    assert s.global_batch(3).tolist() == GlobalBatchSampler(10, 4, 1).global_batch(3).tolist()  # no history
    first_epoch = np.concatenate([s.global_batch(0), s.global_batch(1), s.global_batch(2)[:2]])
    assert sorted(first_epoch.tolist()) == list(range(10))  # every example once per epoch
    assert s.global_batch(0).tolist() != GlobalBatchSampler(10, 4, 2).global_batch(0).tolist()
    parts = [s.local_batch(5, r, 2).tolist() for r in range(2)]
    assert parts[0] + parts[1] == s.global_batch(5).tolist()  # ranks split the global batch


def test_solution_only_mask_and_labels(tmp_path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(make_tokenizer(tmp_path / "tok") / "tokenizer.json"))
    eot = tok.token_to_id("<|endoftext|>")
    prompt = 'def area(r):\n    """Area of a circle of radius r."""\n'
    solution = "    return 3.14159 * r * r\n"
    (ex,), cut = encode_with_mask(tok, [(prompt, solution)], loss_on="solution", eot_id=eot, max_len=512)
    assert cut == 0 and ex.ids[-1] == eot and ex.mask[-1]
    assert tok.decode(ex.ids[:-1].tolist()) == prompt + solution
    targets = ex.ids[ex.mask][:-1].tolist()
    assert tok.decode(targets).strip() == solution.strip()  # only the body (boundary token may hold the newline)
    assert not ex.mask[: len(tok.encode(prompt).ids) - 1].any()
    (full,), _ = encode_with_mask(tok, [(prompt, solution)], loss_on="all", eot_id=eot, max_len=512)
    assert full.mask.all() and full.ids.tolist() == ex.ids.tolist()
    (tail,), cut = encode_with_mask(tok, [(prompt, solution)], loss_on="solution", eot_id=None, max_len=12,
                                    keep="tail")
    assert cut == 1 and len(tail.ids) == 12 and tail.mask[-1]

    batch = collate([ex, Example(np.arange(3))], pad_id=eot)
    assert batch.input_ids.shape[1] % 8 == 0 and batch.input_ids.shape[1] >= len(ex.ids)
    lab = batch.labels
    assert (lab[0, : len(ex.ids)] != IGNORE).sum().item() == int(ex.mask[1:].sum())
    assert lab[1].tolist()[:3] == [IGNORE, 1, 2] and (lab[1, 3:] == IGNORE).all()  # padding is never a target
    assert batch.n_targets == int(ex.mask[1:].sum()) + 2


def test_loss_sum_counts_only_targets():
    hidden = torch.randn(2, 5, 4)
    head = torch.nn.Linear(4, 7)
    logits = head(hidden).detach()
    labels = torch.tensor([[IGNORE, 1, 2, IGNORE, 3], [IGNORE, IGNORE, IGNORE, IGNORE, 4]])
    got = token_loss_sum(hidden, labels, head)
    want = sum(torch.nn.functional.cross_entropy(logits[b, t - 1:t], labels[b, t:t + 1])
               for b, t in [(0, 1), (0, 2), (0, 4), (1, 4)])
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_examples_round_trip_and_eval_sample(tmp_path):
    exs = [Example(np.array([1, 2, 3]), np.array([False, True, True])), Example(np.array([70000, 5]),
                                                                                np.array([True, True]))]
    save_examples(tmp_path / "x.npz", exs)
    back = load_examples(tmp_path / "x.npz")
    assert [e.ids.tolist() for e in back] == [[1, 2, 3], [70000, 5]]
    assert [e.mask.tolist() for e in back] == [[False, True, True], [True, True]]
    assert len(back) == 2 and back.example(1).ids.dtype == np.int64
    assert eval_indices(1000, 4).tolist() == [0, 333, 666, 999] and len(eval_indices(5, 0)) == 5


def test_config_checks_and_paper_defaults(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[pretrain]\nbatch_size = 10\nmicro_batch_size = 4\n")
    with pytest.raises(ConfigError, match="batch_size = 10 is not a multiple of micro_batch_size = 4"):
        load_config(p)
    for name in ("phi-1", "phi-1-small"):
        cfg = load_config(f"configs/{name}.toml")
        pre, fin = cfg.pretrain, cfg.finetune
        assert (pre.batch_size, pre.lr, pre.warmup_steps, pre.schedule, pre.weight_decay) == (1024, 1e-3, 750,
                                                                                               "linear", 0.1)
        assert cfg.tokenize.seq_len == 2048 and cfg.model.preset == name
        assert (fin.batch_size, fin.lr, fin.warmup_steps, fin.weight_decay, fin.max_steps, fin.checkpoint_every) \
            == (256, 1e-4, 50, 0.01, 6000, 1000)
    assert load_config("configs/phi-1.toml").pretrain.max_steps == 24000
    assert math.isclose(load_config("configs/phi-1.toml").model.dropout, -1.0)  # the preset's 0.1


def test_schedule_horizon_is_separate_from_the_stop():
    from phi1.train.config import PretrainConfig

    paper = LRSchedule.from_config(PretrainConfig(max_steps=24000, decay_steps=36000, warmup_steps=750, lr=1e-3))
    assert paper.decay_steps == 36000
    assert paper(24000) == pytest.approx(1e-3 * (1 - (24000 - 750) / (36000 - 750)))  # ~1/3 of the peak: no decay to 0
    assert paper(36000) == pytest.approx(0.0) and paper(40000) == pytest.approx(0.0)
    assert LRSchedule.from_config(PretrainConfig(max_steps=100, warmup_steps=10)).decay_steps == 100  # 0 = max_steps
    with pytest.raises(ValueError, match="decay_steps = 5 must be after warmup_steps = 10"):
        PretrainConfig(max_steps=100, warmup_steps=10, decay_steps=5)


def test_padding_never_counts_as_tokens():
    from phi1.model.presets import ModelFlops

    batch = collate([Example(np.arange(3)), Example(np.arange(10))], pad_id=0)
    assert batch.n_positions == 2 * 16 and batch.n_tokens == 13 and batch.sq_tokens == 3**2 + 10**2
    f = ModelFlops(dense=6.0e6, attention=100.0)
    assert f.of_rows(batch.n_tokens, batch.sq_tokens) == 6.0e6 * 13 + 100.0 * (9 + 100)
    full = collate([Example(np.arange(8)), Example(np.arange(8))], pad_id=0)  # packed rows: no padding
    assert f.of_rows(full.n_tokens, full.sq_tokens) == pytest.approx(16 * f.per_token(8))


def test_peak_comes_from_config_table_or_a_cached_calibration(tmp_path, monkeypatch):
    from phi1.train import metrics

    assert metrics.resolve_peak(torch.device("cpu"), "bf16", 5e12, tmp_path).source == "config"
    h100 = metrics.gpu_peak("NVIDIA H100 80GB HBM3", "bf16")
    assert (h100.flops, h100.source) == (989e12, "table")
    assert metrics.gpu_peak("NVIDIA H100 PCIe", "bf16").flops == 756e12  # not the SXM row
    assert metrics.gpu_peak("NVIDIA H100 80GB HBM3", "fp32").flops == 494.7e12  # tf32
    unknown = metrics.gpu_peak("Some Future GPU", "bf16")
    assert unknown.flops is None and "peak_flops" in unknown.detail and "no peak" in unknown.label()

    calls = []

    def fake_measure(dtype, **_kw):
        calls.append(dtype)
        return {torch.float32: 2e11, torch.bfloat16: 9e11}[dtype]

    monkeypatch.setattr(metrics, "measure_matmul_flops", fake_measure)
    bf16 = metrics.cpu_peak("bf16", tmp_path)
    assert (bf16.flops, bf16.source) == (9e11, "measured") and "bf16 2048x2048 matmul" in bf16.label()
    assert metrics.cpu_peak("fp32", tmp_path).flops == 2e11  # another dtype, another calibration
    again = metrics.cpu_peak("bf16", tmp_path)
    assert again.flops == 9e11 and "cached" in again.detail and calls == [torch.bfloat16, torch.float32]
    (tmp_path / metrics.CALIBRATION_FILE).write_text("{not json")  # a damaged cache is measured again
    assert metrics.cpu_peak("bf16", tmp_path).flops == 9e11 and len(calls) == 3
    assert metrics.mfu(4.5e11, 9e11) == pytest.approx(0.5) and metrics.mfu(1.0, None) is None


def test_calibration_measures_a_real_matmul():
    from phi1.train.metrics import measure_matmul_flops

    assert measure_matmul_flops(torch.float32, n=256, budget_s=0.01) > 1e8  # any CPU does 0.1 GFLOP/s


def test_precision_auto_follows_the_cpu(monkeypatch):
    from phi1 import devices
    from phi1.errors import Phi1Error
    from phi1.train.precision import choose_precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(devices, "cpu_bf16_support", lambda: (True, "bf16: the CPU reports AMX-BF16"))
    p = choose_precision("auto", cpu)
    assert p.name == "bf16" and p.half == torch.bfloat16 and "AMX-BF16" in p.reason
    monkeypatch.setattr(devices, "cpu_bf16_support", lambda: (False, "fp32: no native bf16 matmul"))
    p = choose_precision("auto", cpu)
    assert p.name == "fp32" and p.half is None and "no native bf16" in p.reason
    assert choose_precision("bf16", cpu).name == "bf16"  # asked for: taken, slow or not
    with pytest.raises(Phi1Error, match="pretrain.precision = 'fp16' needs a GPU"):
        choose_precision("fp16", cpu, key="pretrain.precision")


def test_compile_rule():
    from phi1.train.compiling import COMPILE_SECONDS, PAYBACK, compile_decision

    assert compile_decision(True, device_type="cpu", remaining_steps=1, step_flops=1.0, peak_flops=1.0)[0]
    assert not compile_decision(False, device_type="cuda", remaining_steps=10**6, step_flops=1e15,
                                peak_flops=1e15)[0]
    # auto: projected training time (at 50% MFU) against PAYBACK x the compile estimate
    step_s = 2.0  # a 1e15-FLOP step at 50% of 1e15 FLOP/s
    enough = math.ceil(PAYBACK * COMPILE_SECONDS["cuda"] / step_s)
    on, why = compile_decision("auto", device_type="cuda", remaining_steps=enough, step_flops=1e15, peak_flops=1e15)
    assert on and why.startswith("auto:") and ">=" in why
    off, why = compile_decision("auto", device_type="cuda", remaining_steps=enough - 1, step_flops=1e15,
                                peak_flops=1e15)
    assert not off and "<" in why
    assert not compile_decision("auto", device_type="cpu", remaining_steps=10**9, step_flops=1.0, peak_flops=None)[0]


def test_checkpoint_format_rule():
    from phi1.train.checkpoint import checkpoint_format

    assert checkpoint_format("auto", "fsdp") == "sharded"
    assert checkpoint_format("auto", "ddp") == checkpoint_format("auto", "single") == "full"
    assert checkpoint_format("sharded", "single") == "sharded" and checkpoint_format("full", "fsdp") == "full"


def test_docs_training_page_names_every_loop_option():
    import dataclasses
    from pathlib import Path

    from phi1.train.config import FinetuneConfig, PretrainConfig

    page = (Path(__file__).resolve().parents[2] / "docs" / "training.md").read_text()
    names = {f.name for cls in (PretrainConfig, FinetuneConfig) for f in dataclasses.fields(cls)}
    missing = sorted(n for n in names if f"`{n}`" not in page)
    assert not missing, f"docs/training.md does not name: {missing}"
