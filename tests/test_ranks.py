"""Under torchrun every rank runs the pipeline; the ranks other than 0 wait for
each stage to be committed by rank 0 before they look at the next one.
These run the real code path: torchrun, `phi1.pipeline`, and for the second
test the real `phi1 run` command with the generate and execute stages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

_DRIVER = """
import sys, toy_stages
from phi1.config import load_config
from phi1.pipeline import Pipeline
cfg = load_config(None, ["run.root=" + sys.argv[1], "run.name=t", *sys.argv[2:]], stages=toy_stages.RANKED)
print("outcomes", Pipeline(cfg, stages=toy_stages.RANKED).run(), flush=True)
"""


def _torchrun(args: list[str], env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_ranks_wait_for_each_stage_to_be_committed(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER)
    # rank 0 is slow to write count (0.2 s per item); rank 1 has nothing to do in count
    # and must not look for count's output (double's input) before rank 0 has committed it
    proc = _torchrun([str(driver), str(tmp_path), "count.items=6", "count.delay=0.2", "triple.factor=3"],
                     env={"PYTHONPATH": str(TESTS)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("outcomes {'count': 'ran', 'double': 'ran', 'triple': 'ran'}") == 2
    for stage in ("double", "triple"):
        for rank in (0, 1):
            seen = json.loads((tmp_path / "t" / stage / f"seen-rank{rank}.json").read_text())
            assert seen == {"items": 6}, (stage, rank)
    # a second launch finds everything current on every rank
    proc = _torchrun([str(driver), str(tmp_path), "count.items=6", "triple.factor=3"],
                     env={"PYTHONPATH": str(TESTS)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("'count': 'current', 'double': 'current', 'triple': 'current'") == 2


def test_generate_then_execute_under_torchrun(tmp_path):
    sys.path.insert(0, str(TESTS / "evaluate"))
    try:
        from test_generate import build_tiny_model
    finally:
        sys.path.remove(str(TESTS / "evaluate"))
    model = build_tiny_model(tmp_path / "model")
    args = ["-m", "phi1.cli", "run", "configs/demo.toml", "--only", "generate", "execute",
            "--set", f"run.root={tmp_path}", "--set", "run.name=t", "--set", f"generate.model={model}",
            "--set", "generate.limit=4", "--set", "generate.max_new_tokens=8", "--set", "generate.batch_size=2",
            "--set", "execute.workers=1", "--set", "execute.canonical_check=false", "--set", "execute.contamination="]
    proc = _torchrun(args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = json.loads((tmp_path / "t" / "execute" / "manifest.json").read_text())
    assert m["status"] == "done" and m["counts"]
    results = (tmp_path / "t" / "execute" / "samples.jsonl_results.jsonl").read_text().splitlines()
    assert len(results) == 4
