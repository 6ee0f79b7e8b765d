"""bench/gpu_check.sh at toy sizes on the CPU: every section the GPU run
executes (the training loop's pretraining, FSDP2 in one torchrun process
with a sharded checkpoint and its export, the embedder, generation) runs
here, so the script is ready when a GPU machine is lent."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_runs_every_section_at_smoke_size(tmp_path):
    out = tmp_path / "results.md"
    env = {**os.environ, "PHI1_GPU_CHECK_SMOKE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.with_suffix(".json").read_text())
    for section in ("env", "pretrain", "fsdp", "embed", "generate"):
        assert results[section]["status"] == "ok", (section, results[section].get("error"))
    pre, fsdp = results["pretrain"], results["fsdp"]
    assert pre["parallel"] == "single" and pre["steady_tokens_per_s"] > 0 and pre["steady_mfu"] > 0
    assert pre["peak"]["source"] == "measured" and pre["checkpoint_format"] == "full"
    assert (fsdp["parallel"], fsdp["world_size"], fsdp["checkpoint_format"]) == ("fsdp", 1, "sharded")
    assert results["embed"]["docs"] == 16 and results["embed"]["docs_per_s"] > 0
    assert results["generate"]["new_tokens_per_s"] > 0
    text = out.read_text()
    assert text.startswith("### GPU check: cpu") and "SMOKE sizes" in text
    for row in ("| pretrain: nano", "| fsdp: nano", "| embed: all-MiniLM-L6-v2", "| generate: nano greedy"):
        assert row in text, row
    assert "FAILED" not in text


def test_gpu_check_refuses_a_machine_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine: the full check would run")
    env = {k: v for k, v in os.environ.items() if k != "PHI1_GPU_CHECK_SMOKE"}
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), str(tmp_path / "r.md")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "torch sees no CUDA device" in proc.stderr
    assert not (tmp_path / "r.md").exists()
