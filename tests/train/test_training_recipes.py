"""Recipes through the real stages (nano preset): bf16 autocast trains like
fp32, and finetuning in both layouts reports real tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from phi1.cli import main
from training_fixtures import make_run

STEPS = 12


def phi1(argv: list[str]) -> int:
    """The CLI with one torch thread: on 2 shared cores, OpenMP barriers between two threads cost
    more than the nano model's matmuls."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(argv)
    finally:
        torch.set_num_threads(before)


def _log(run: Path, stage: str) -> list[dict]:
    return [json.loads(x) for x in (run / stage / "metrics.jsonl").read_text().splitlines()]


def _manifest(run: Path, stage: str) -> dict:
    return json.loads((run / stage / "manifest.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipes")
    opts = dict(steps=STEPS, ckpt=STEPS, seq_len=64, with_mine=True)
    fp32 = make_run(root, "fp32", pretrain='humaneval_loss = false\nprecision = "fp32"', **opts)
    shared = {"tokenizer": root / "fp32" / "tokenizer" / "tokenizer"}
    bf16 = make_run(root, "bf16", pretrain='humaneval_loss = false\nprecision = "bf16"', shared=shared, **opts)
    for cfg in (fp32, bf16):
        assert phi1(["pretrain", "--config", str(cfg)]) == 0
    return {"root": root, "fp32": fp32, "bf16": bf16}


def test_bf16_and_fp32_training_losses_stay_close(runs):
    root = runs["root"]
    losses = {p: [r["loss"] for r in _log(root / p, "pretrain") if r["kind"] == "train"] for p in ("fp32", "bf16")}
    assert len(losses["fp32"]) == len(losses["bf16"]) == STEPS
    gaps = [abs(a - b) for a, b in zip(losses["fp32"], losses["bf16"])]
    assert max(gaps) < 0.01, gaps  # bf16 matmuls; fp32 master weights, loss and optimizer (measured: < 1e-3)
    assert losses["bf16"][-1] < losses["bf16"][0] - 0.5  # and it learns as fp32 does
    vals = {p: _manifest(root / p, "pretrain")["metrics"]["val_loss"] for p in ("fp32", "bf16")}
    assert abs(vals["fp32"] - vals["bf16"]) < 0.01, vals
    for p in ("fp32", "bf16"):
        m = _manifest(root / p, "pretrain")
        assert m["precision"] == p and "pretrain.precision" in m["precision_reason"]
        assert m["peak"]["source"] == "measured" and m["metrics"]["mfu_peak_flops"] == m["peak"]["flops"] > 0
        summary = " ".join(m["summary"])
        assert f"{p} 2048x2048 matmul measured on this CPU" in summary and f"{p} (" in summary


def test_finetune_layouts_report_real_tokens(runs):
    root, cfg = runs["root"], runs["fp32"]
    quick = ["--set", "finetune.humaneval_loss=false"]
    assert phi1(["finetune", "--config", str(cfg), "--set", "finetune.layout=padded",
                 "--set", "finetune.loss_on=solution", *quick]) == 0
    padded = _manifest(root / "fp32", "finetune")
    assert padded["layout"] == "padded" and padded["loss_on"] == "solution"
    c, met = padded["counts"], padded["metrics"]
    assert c["train_rows"] == c["train_exercises"] == 48 and c["dropped_tokens"] == 0
    # 4 steps x 8 exercises of ~25 tokens, padded to a multiple of 8 per micro-batch: padding is not counted.
    assert 0 < met["padding_share"] < 0.5 and c["tokens"] < 4 * 8 * 64
    train_lines = [r for r in _log(root / "fp32", "finetune") if r["kind"] == "train"]
    assert sum(r["tokens"] - p["tokens"] for p, r in zip([{"tokens": 0}] + train_lines, train_lines)) == c["tokens"]

    assert phi1(["finetune", "--config", str(cfg), "--set", "finetune.layout=packed",
                 "--set", "finetune.loss_on=all", *quick]) == 0
    packed = _manifest(root / "fp32", "finetune")
    c, met = packed["counts"], packed["metrics"]
    assert packed["layout"] == "packed" and packed["loss_on"] == "all"
    assert c["tokens"] == 4 * 8 * 64 and met["padding_share"] == 0  # full 64-token rows, the paper's layout
    assert c["train_rows"] == c["train_exercise_tokens"] // 64 and c["train_exercises"] == 48
    assert met["val_loss"] < met["val_loss_start"]  # it learned the held-out exercises


@pytest.mark.slow  # Inductor builds C++ kernels: ~60 s on 2 busy cores the first time, ~10 s from its cache
def test_compiled_layers_train_like_eager(tmp_path):
    from phi1.model.config import ModelConfig
    from phi1.model.presets import build_model, model_flops, phi_config, resolve_shape
    from phi1.train.config import PretrainConfig
    from phi1.train.data import Example, ExampleList
    from phi1.train.distributed import DistEnv
    from phi1.train.loop import TrainInputs, train

    config = phi_config(resolve_shape(ModelConfig(preset="nano"), seq_len=64), 448)
    gen = torch.Generator().manual_seed(0)
    rows = ExampleList([Example(torch.randint(0, 448, (64,), generator=gen).numpy()) for _ in range(16)])
    env = DistEnv(0, 1, 0, torch.device("cpu"))
    runs = {}
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for compiled in (False, True):
            cfg = PretrainConfig(max_steps=4, batch_size=4, micro_batch_size=4, lr=3e-3, warmup_steps=1,
                                 checkpoint_every=4, eval_every=1000, log_every=1, humaneval_loss=False,
                                 tensorboard=False, precision="fp32", peak_flops=1e12, compile=compiled)
            torch.manual_seed(0)
            out = train(build_model(config), cfg, env, TrainInputs(rows, pad_id=0), work_dir=tmp_path / str(compiled),
                        seed=0, flops=model_flops(config), echo=lambda _m: None)
            runs[compiled] = (out, [r["loss"] for r in _log(tmp_path, str(compiled)) if r["kind"] == "train"])
    finally:
        torch.set_num_threads(before)
    (eager, eager_losses), (comp, comp_losses) = runs[False], runs[True]
    assert not eager.compiled and comp.compiled and comp.compile_reason == "compile = true in the config"
    assert comp.compile_seconds is not None and eager.compile_seconds is None
    assert max(abs(a - b) for a, b in zip(eager_losses, comp_losses)) < 1e-3  # fused kernels round differently
