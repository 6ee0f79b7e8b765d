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
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[IGNORE, 1, 2, IGNORE, 3], [IGNORE, IGNORE, IGNORE, IGNORE, 4]])
    got = token_loss_sum(logits, labels)
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
