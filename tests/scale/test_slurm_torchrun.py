"""pretrain as a Slurm batch job running `srun torchrun` (the page's job
script): 2 processes on CPU (gloo), DDP and FSDP2, the same losses as one
process; a job cancelled with scancel after a checkpoint, submitted again,
resumes and ends with the same losses and weights."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scale_helpers import REPO, doc_blocks, sacct, squeue

sys.path.insert(0, str(REPO / "tests" / "train"))
from test_training_runs import one_thread  # noqa: E402  (the reference's threads = a torchrun rank's)
from training_fixtures import make_run  # noqa: E402

from phi1.cli import main  # noqa: E402

STEPS, CKPT = 16, 4
LOSS_TOL = 1e-6  # per-step training loss, as tests/train/test_training_distributed.py
WEIGHT_TOL = 1e-5  # after 16 AdamW steps: sums in another order drift by a few 1e-6


def _losses(run: Path) -> dict[int, float]:
    lines = [json.loads(x) for x in (run / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in lines if r["kind"] == "train"}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "pretrain" / "model" / "model.safetensors"))


def _sbatch(script: Path, cwd: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONUNBUFFERED": "1"}
    r = subprocess.run(["sbatch", "--parsable", str(script), *args], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().split(";")[0]


def _wait_job(job: str, timeout: float = 300) -> str:
    deadline = time.time() + timeout
    while squeue([job]):
        assert time.time() < deadline, f"Slurm job {job} still in the queue after {timeout}s"
        time.sleep(0.5)
    deadline = time.time() + 30  # accounting lags the queue by a moment
    while (state := sacct([job]).get(job, "")) in ("", "RUNNING", "PENDING", "COMPLETING"):
        assert time.time() < deadline, f"no final state for job {job} in sacct"
        time.sleep(0.5)
    return state


def test_pretrain_under_srun_torchrun_ddp_fsdp_and_scancel_resume(slurm_cluster, tmp_path):
    script = tmp_path / "pretrain.sbatch"
    script.write_text(doc_blocks()["torchrun-sbatch"])
    assert "srun torchrun" in script.read_text()
    # fp32: one process and two ranks then differ only in how gradients are summed
    opts = dict(steps=STEPS, ckpt=CKPT, seq_len=64, pretrain='humaneval_loss = false\nprecision = "fp32"')
    single = make_run(tmp_path, "single", **opts)
    shared = {"tokenizer": tmp_path / "single" / "tokenizer" / "tokenizer"}
    ddp = make_run(tmp_path, "ddp", shared=shared, **opts)
    fsdp = make_run(tmp_path, "fsdp", shared=shared, **opts)
    with one_thread():
        assert main(["pretrain", "--config", str(single)]) == 0
    reference = _losses(tmp_path / "single")
    assert sorted(reference) == list(range(1, STEPS + 1))

    # DDP: cancelled (scancel) once its first checkpoint is on disk ...
    job = _sbatch(script, tmp_path, str(ddp), "--set", "pretrain.parallel=ddp")
    first = tmp_path / "ddp" / "pretrain.partial" / "checkpoints" / f"step-{CKPT:07d}"
    deadline = time.time() + 300
    while not first.exists() and squeue([job]) and time.time() < deadline:
        time.sleep(0.05)
    subprocess.run(["scancel", job], check=True, timeout=30)
    assert _wait_job(job).startswith("CANCELLED")
    assert first.exists(), f"the job never wrote its first checkpoint (log: {tmp_path}/phi1-pretrain-{job}.out)"
    assert not (tmp_path / "ddp" / "pretrain" / "manifest.json").exists(), "finished before it could be cancelled"

    # ... then the same job script again: it resumes from the checkpoint and finishes
    again = _sbatch(script, tmp_path, str(ddp), "--set", "pretrain.parallel=ddp")
    log = tmp_path / f"phi1-pretrain-{again}.out"
    assert _wait_job(again) == "COMPLETED", log.read_text()[-3000:]
    out = log.read_text()
    assert "resuming interrupted attempt" in out and "resumed from" in out, out[-3000:]
    assert re.search(r"2 x 1 accumulation x 2 rank\(s\); fp32, ddp on cpu", out), out[-3000:]

    # FSDP2, uninterrupted
    sharded = _sbatch(script, tmp_path, str(fsdp), "--set", "pretrain.parallel=fsdp")
    log = tmp_path / f"phi1-pretrain-{sharded}.out"
    assert _wait_job(sharded) == "COMPLETED", log.read_text()[-3000:]
    assert re.search(r"2 x 1 accumulation x 2 rank\(s\); fp32, fsdp on cpu", log.read_text())

    ref_weights = _weights(tmp_path / "single")
    for name in ("ddp", "fsdp"):
        losses = _losses(tmp_path / name)
        assert sorted(losses) == list(range(1, STEPS + 1)), name  # no step lost or repeated by the resume
        for step, loss in reference.items():
            assert losses[step] == pytest.approx(loss, abs=LOSS_TOL), f"{name} step {step}"
        got = _weights(tmp_path / name)
        assert max((got[k] - ref_weights[k]).abs().max().item() for k in ref_weights) <= WEIGHT_TOL, name
        m = json.loads((tmp_path / name / "pretrain" / "manifest.json").read_text())
        assert m["world_size"] == 2 and m["parallel"] == name
    assert json.loads((tmp_path / "ddp" / "pretrain" / "manifest.json").read_text())["resumed"] is True
