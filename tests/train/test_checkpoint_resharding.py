"""Checkpoints resume under another parallelism: single process <-> DDP <->
FSDP2, full and sharded (torch.distributed.checkpoint) formats, on CPU with
gloo and 2 processes. Every resumed run must continue the uninterrupted one:
the same losses after the resume and the same final weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from phi1.cli import main
from phi1.train.checkpoint import format_of, full_weights, step_dir
from resume_worker import run_phase
from training_fixtures import make_tokenized, make_tokenizer

WORKER = Path(__file__).with_name("resume_worker.py")


def _losses(work: Path) -> dict[int, float]:
    lines = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in lines if r["kind"] == "train"}


def _final(work: Path) -> dict[str, torch.Tensor]:
    return full_weights(step_dir(work / "checkpoints", 4))


def test_checkpoints_resume_under_any_parallelism(tmp_path):
    tokenized = tmp_path / "tokenize"
    make_tokenized(tokenized, make_tokenizer(tmp_path / "tok"), seq_len=64)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the OMP_NUM_THREADS=1 ranks: the same float results
    try:
        ref = tmp_path / "single"  # the uninterrupted run: 4 steps, full checkpoints at 2 and 4
        run_phase({"dir": str(ref), "parallel": "auto", "max_steps": 4}, tokenized)
        at2 = str(step_dir(ref / "checkpoints", 2))
        plan = {"tokenized": str(tokenized), "phases": [
            # single -> DDP and single -> FSDP2 (which saves sharded)
            {"dir": str(tmp_path / "single-ddp"), "parallel": "ddp", "max_steps": 4, "copy_from": at2},
            {"dir": str(tmp_path / "single-fsdp"), "parallel": "fsdp", "max_steps": 4, "copy_from": at2},
            # FSDP2 from scratch to step 2, sharded; then sharded -> DDP
            {"dir": str(tmp_path / "fsdp"), "parallel": "fsdp", "max_steps": 2},
            {"dir": str(tmp_path / "fsdp-ddp"), "parallel": "ddp", "max_steps": 4,
             "copy_from": str(step_dir(tmp_path / "fsdp" / "checkpoints", 2))},
            # DDP -> FSDP2 with a full checkpoint
            {"dir": str(tmp_path / "ddp-fsdp"), "parallel": "fsdp", "max_steps": 4, "format": "full",
             "copy_from": str(step_dir(tmp_path / "single-ddp" / "checkpoints", 2))},
        ]}
        (tmp_path / "plan.json").write_text(json.dumps(plan))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                               str(WORKER), str(tmp_path / "plan.json")], env=env, capture_output=True, text=True,
                              timeout=400)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        # sharded (written by 2 FSDP ranks) -> one process
        run_phase({"dir": str(tmp_path / "fsdp-single"), "parallel": "auto", "max_steps": 4,
                   "copy_from": str(step_dir(tmp_path / "fsdp" / "checkpoints", 2))}, tokenized)
    finally:
        torch.set_num_threads(before)

    assert format_of(step_dir(tmp_path / "fsdp" / "checkpoints", 2)) == "sharded"
    assert format_of(step_dir(tmp_path / "single-fsdp" / "checkpoints", 4)) == "sharded"
    assert format_of(step_dir(tmp_path / "ddp-fsdp" / "checkpoints", 4)) == "full"
    ref_losses, ref_w = _losses(ref), _final(ref)
    for name, world, parallel in (("single-ddp", 2, "ddp"), ("single-fsdp", 2, "fsdp"), ("fsdp-ddp", 2, "ddp"),
                                  ("ddp-fsdp", 2, "fsdp"), ("fsdp-single", 1, "single")):
        work = tmp_path / name
        out = json.loads((work / "outcome.json").read_text())
        assert (out["world"], out["parallel"]) == (world, parallel), name
        got = _losses(work)
        assert sorted(got) == [3, 4], name  # resumed at step 2: it trained steps 3 and 4 only
        for step in (3, 4):
            assert got[step] == pytest.approx(ref_losses[step], abs=1e-5), f"{name} step {step}"
        w = _final(work)
        assert w.keys() == ref_w.keys()
        diff = max((w[k] - ref_w[k]).abs().max().item() for k in ref_w)
        assert diff <= 2e-5, f"{name}: max weight difference {diff:.2e} from the uninterrupted run"
    first = _losses(tmp_path / "fsdp")
    assert first[1] == pytest.approx(ref_losses[1], abs=1e-5) and first[2] == pytest.approx(ref_losses[2], abs=1e-5)

    # `phi1 export` gathers a sharded checkpoint in one process into a Hugging Face folder.
    out = tmp_path / "exported"
    assert main(["export", str(step_dir(tmp_path / "single-fsdp" / "checkpoints", 4)), str(out),
                 "--tokenizer", str(tmp_path / "tok")]) == 0
    from safetensors.torch import load_file

    exported = load_file(str(out / "model.safetensors"))
    assert max((exported[k] - ref_w[k]).abs().max().item() for k in ref_w) <= 2e-5
