"""Real runs of the `pretrain` and `finetune` stages (nano preset, real tokens):
exact resume after SIGKILL, export round-trip with logits parity, finetune
keeping the best checkpoint, and the manifest metrics."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from phi1.cli import main
from training_fixtures import make_run

PHI1 = str(Path(sys.executable).with_name("phi1"))
STEPS, CKPT = 24, 3


@contextlib.contextmanager
def one_thread():
    """Same intra-op threads as the OMP_NUM_THREADS=1 subprocesses: same float results."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_losses(run: Path, stage: str = "pretrain") -> dict[int, float]:
    lines = [json.loads(x) for x in (run / stage / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in lines if r["kind"] == "train"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    opts = dict(steps=STEPS, ckpt=CKPT, seq_len=64, model="dropout = 0.1", with_mine=True)
    ref = make_run(root, "ref", **opts)
    killed = make_run(root, "killed", pretrain="humaneval_loss = false",
                      shared={"tokenizer": root / "ref" / "tokenizer" / "tokenizer"}, **opts)
    with one_thread():
        assert main(["pretrain", "--config", str(ref)]) == 0
    return {"root": root, "ref": ref, "killed": killed}


def test_sigkilled_pretrain_resumes_exactly(runs, capsys):
    root, cfg = runs["root"], runs["killed"]
    partial = root / "killed" / "pretrain.partial"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([PHI1, "pretrain", "--config", str(cfg)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = partial / "checkpoints" / f"step-{CKPT:07d}"
    deadline = time.time() + 120
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists(), "the run never wrote its first checkpoint"
    assert not (root / "killed" / "pretrain" / "manifest.json").exists(), "finished before it could be killed"

    # The resume changes execution fields only (device, logging sinks, parallelism): the
    # interrupted attempt and its checkpoints are reused, not discarded.
    with one_thread():
        assert main(["pretrain", "--config", str(cfg), "--set", "pretrain.device=cpu",
                     "--set", "pretrain.tensorboard=false", "--set", "pretrain.parallel=ddp"]) == 0
    out = capsys.readouterr().out
    assert "resuming interrupted attempt" in out and "resumed from" in out and "discarding" not in out

    ref, resumed = train_losses(root / "ref"), train_losses(root / "killed")
    assert sorted(resumed) == list(range(1, STEPS + 1))  # no step lost or repeated in the log
    for step in ref:
        assert resumed[step] == pytest.approx(ref[step], abs=1e-6), f"step {step}"
    # Dropout is on (0.1): equal losses after the resume need the RNG states back, too.
    from safetensors.torch import load_file

    a = load_file(str(root / "ref" / "pretrain" / "model" / "model.safetensors"))
    b = load_file(str(root / "killed" / "pretrain" / "model" / "model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    manifest = json.loads((root / "killed" / "pretrain" / "manifest.json").read_text())
    assert manifest["resumed"] is True
    ckpts = sorted(p.name for p in (root / "killed" / "pretrain" / "checkpoints").iterdir())
    assert ckpts == [f"step-{STEPS - CKPT:07d}", f"step-{STEPS:07d}"]  # keep_checkpoints = 2


def test_export_round_trip_same_logits(runs, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from phi1.model.presets import build_model
    from phi1.train.checkpoint import load_checkpoint
    from phi1.train.distributed import DistEnv, Parallelized

    run = runs["root"] / "ref" / "pretrain"
    ckpt = run / "checkpoints" / f"step-{STEPS:07d}"
    out = tmp_path / "exported"
    assert main(["export", str(ckpt), str(out)]) == 0
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json"):
        assert (out / name).is_file(), name

    for folder in (out, run / "model"):  # `phi1 export` and the stage's own export
        hf, info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
        assert type(hf).__name__ == "PhiForCausalLM" and hf.config.model_type == "phi"
        assert hf.config.rope_parameters["partial_rotary_factor"] == 0.5 and not hf.config.tie_word_embeddings

    # The training model: the loop's own loader on a fresh model built from the checkpoint config.
    from transformers import PhiConfig

    config = PhiConfig.from_pretrained(ckpt)
    config._attn_implementation = "sdpa"
    model = build_model(config)
    env = DistEnv(0, 1, 0, torch.device("cpu"))
    load_checkpoint(ckpt, Parallelized(model, model, "single"), None, env)
    tok = AutoTokenizer.from_pretrained(out)
    ids = torch.tensor([tok.encode("def add(a, b):\n    return a + b\n")[:48]])
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        want = model.eval()(input_ids=ids).logits
        got = hf(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == tok.eos_token_id == tok.convert_tokens_to_ids("<|endoftext|>")

    assert main(["export", str(tmp_path / "nope"), str(tmp_path / "x")]) == 1  # a one-line error


def test_pretrain_manifest_records_humaneval_loss(runs):
    m = json.loads((runs["root"] / "ref" / "pretrain" / "manifest.json").read_text())
    before, after = m["metrics"]["humaneval_solution_loss_before_pretraining"], m["metrics"]["humaneval_solution_loss"]
    assert before > after > 0  # it learned some Python
    assert m["evals"][0]["step"] == 0 and m["evals"][-1]["step"] == STEPS
    assert m["counts"]["steps"] == STEPS and m["counts"]["tokens"] == STEPS * 4 * 64
    assert m["model"]["params"] > 0 and m["model"]["flops_per_token"] > 0
    assert m["metrics"]["tokens_per_s"] > 0 and 0 < m["metrics"]["mfu"] < 1


def test_finetune_keeps_best_and_exports_it(runs, capsys):
    root = runs["root"]
    with one_thread():
        assert main(["finetune", "--config", str(runs["ref"])]) == 0
    out = capsys.readouterr().out
    assert "before pretraining ->" in out and "after finetuning" in out
    fin = root / "ref" / "finetune"
    m = json.loads((fin / "manifest.json").read_text())
    met = m["metrics"]
    for key in ("humaneval_solution_loss_before_pretraining", "humaneval_solution_loss_after_pretraining",
                "humaneval_solution_loss_after_finetuning"):
        assert isinstance(met[key], float), key
    evals = {e["step"]: e for e in m["evals"]}
    ckpt_evals = {s: e["val_loss"] for s, e in evals.items() if s and s % 2 == 0}
    best_step = min(ckpt_evals, key=ckpt_evals.get)
    assert met["best_step"] == best_step and met["val_loss"] == ckpt_evals[best_step]
    assert (fin / "checkpoints" / f"step-{best_step:07d}").is_dir()  # kept even if not the newest
    assert (fin / "model" / "model.safetensors").is_file()
    assert m["counts"]["train_exercises"] == 48 and m["counts"]["val_exercises"] == 8
    # Finetuning on exercises lowers the loss on held-out exercises.
    assert met["val_loss"] < met["val_loss_start"]
    # The exported model is the best checkpoint's weights.
    from safetensors.torch import load_file

    a = load_file(str(fin / "model" / "model.safetensors"))
    b = load_file(str(fin / "checkpoints" / f"step-{best_step:07d}" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in b)
