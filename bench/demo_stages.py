"""The demo's stage time: this checkout's `phi1 run configs/demo.toml` against
an earlier commit's (by default the round-one code, e11eca5), same machine,
same venv, in one run.

Each side runs from a clean clone at its commit (``git clone`` of this
repository; the working tree is not used, so commit first), as the whole
command a user types (`phi1 run configs/demo.toml`, interpreter start-up
included), into its own fresh run root. The two alternate, the first
alternating by round, so both meet the same load on a shared machine.
Printed: each stage's seconds from its manifest (``timings.seconds``), the
sum over all stages, the sum over the stages both run, the command's wall
time, and ours/baseline for each.

    python bench/demo_stages.py                    # 1 round, baseline e11eca5
    python bench/demo_stages.py --rounds 2 --baseline e11eca5 --json out.json

The set-up part of `make demo` (venv, pip) is excluded: both sides use the
venv running this script (``sys.executable``), with ``PYTHONPATH`` pointing
at the side's ``src``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def clone(commit: str, into: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(REPO), str(into)], check=True)
    subprocess.run(["git", "-C", str(into), "checkout", "-q", commit], check=True)
    return into


def run_demo(checkout: Path, root: Path) -> dict:
    """Run the checkout's demo into ``root``; its per-stage seconds and wall time."""
    env = dict(os.environ, PYTHONPATH=str(checkout / "src"))
    cmd = [sys.executable, "-m", "phi1.cli", "run", "configs/demo.toml", "--set", f"run.root={root}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=checkout, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"demo failed in {checkout} (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
    stages = {}
    for manifest in (root / "demo").glob("*/manifest.json"):
        m = json.loads(manifest.read_text())
        if m.get("status") == "done" and "seconds" in m.get("timings", {}):
            stages[m.get("stage", manifest.parent.name)] = m["timings"]["seconds"]
    return {"wall_s": wall, "stages": stages}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default="e11eca5", help="commit to compare against (default: round one)")
    ap.add_argument("--ours", default="HEAD", help="commit of ours (default HEAD; commit your changes first)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--json", help="write the raw figures here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="phi1-demo-bench-") as tmp:
        tmp = Path(tmp)
        sides = {"ours": clone(args.ours, tmp / "ours"), "baseline": clone(args.baseline, tmp / "baseline")}
        results: dict[str, list[dict]] = {"ours": [], "baseline": []}
        for r in range(args.rounds):
            order = ["ours", "baseline"] if r % 2 == 0 else ["baseline", "ours"]
            for side in order:
                res = run_demo(sides[side], tmp / f"runs-{side}-{r}")
                results[side].append(res)
                print(f"round {r + 1} {side:8s}: {sum(res['stages'].values()):7.1f} s of stages, "
                      f"{res['wall_s']:7.1f} s wall", flush=True)

    def med(side: str, key) -> float:
        return statistics.median(key(res) for res in results[side])

    ours_st = set(results["ours"][0]["stages"])
    base_st = set(results["baseline"][0]["stages"])
    shared = sorted(ours_st & base_st)
    print(f"\nstage time, median of {args.rounds} round(s) (seconds, from each stage's manifest)")
    print(f"{'stage':12s} {'ours':>8s} {'baseline':>9s} {'ratio':>7s}")
    for st in sorted(ours_st | base_st, key=lambda s: -med("ours", lambda r: r["stages"].get(s, 0.0))):
        o = med("ours", lambda r: r["stages"].get(st, 0.0)) if st in ours_st else None
        b = med("baseline", lambda r: r["stages"].get(st, 0.0)) if st in base_st else None
        ratio = f"{b / o:6.2f}x" if o and b else "      -"
        print(f"{st:12s} {o if o is not None else float('nan'):8.1f} {b if b is not None else float('nan'):9.1f} {ratio}")
    total_o = med("ours", lambda r: sum(r["stages"].values()))
    total_b = med("baseline", lambda r: sum(r["stages"].values()))
    shared_o = med("ours", lambda r: sum(r["stages"][s] for s in shared))
    shared_b = med("baseline", lambda r: sum(r["stages"][s] for s in shared))
    wall_o, wall_b = med("ours", lambda r: r["wall_s"]), med("baseline", lambda r: r["wall_s"])
    print(f"\nall stages   ours {total_o:6.1f} s ({len(ours_st)} stages)  baseline {total_b:6.1f} s "
          f"({len(base_st)} stages)  baseline/ours {total_b / total_o:.2f}x")
    print(f"shared {len(shared)}    ours {shared_o:6.1f} s  baseline {shared_b:6.1f} s  baseline/ours "
          f"{shared_b / shared_o:.2f}x")
    print(f"wall         ours {wall_o:6.1f} s  baseline {wall_b:6.1f} s  baseline/ours {wall_b / wall_o:.2f}x "
          f"(whole command, start-up included)")
    if args.json:
        Path(args.json).write_text(json.dumps({"baseline": args.baseline, "ours": args.ours, "results": results},
                                              indent=1))


if __name__ == "__main__":
    main()
