"""Decontamination throughput: AST match rate pairs/s and n-gram scan MB/s.

    python bench/decontam_throughput.py [--files N] [--peer-records 12] [--peer-seconds 40] [--ngram-mb 8]

Pairs: HumanEval (164 problems) x exercises mined from the standard library
(every module-level function with a docstring: phi1's offline CodeExercises
stand-in). Everything is measured in this one run:

* ours: `phi1.decontam.ast_match.AstIndex` (linearized normalized ASTs,
  rapidfuzz Levenshtein with score_cutoff = 0.8, length bands, 2 threads) on
  all pairs, and on the peers' pair subset;
* rapidfuzz on plain ``ast.dump`` strings (same cutoff, same cdist, 2 threads);
* zss (Zhang-Shasha) and apted tree edit distance on the same normalized
  trees, over 2 processes (both are pure Python), on the subset: every
  problem x ``--peer-records`` exercises, stopped after ``--peer-seconds``.

Per-snippet preparation (parsing, linearizing, building trees, dumping) is
timed apart from the pair comparisons; the headline is comparisons only, and
ours end to end (linearize + match) is printed too. The n-gram scan (ours:
vocabulary ids + vectorised hashes) is compared with lm-evaluation-harness's
janitor approach (13-gram strings looked up in a set), same texts, same hits.
"""

from __future__ import annotations

import argparse
import ast
import multiprocessing as mp
import os
import re
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from phi1.decontam.ast_match import AstIndex, linearize, node_children, node_label, parse_snippet  # noqa: E402
from phi1.decontam.ngram import NgramIndex  # noqa: E402
from phi1.evaluate.problems import load_problems  # noqa: E402

CUTOFF = 0.8
THRESHOLDS = (0.8, 0.85, 0.9, 0.95)


def stdlib_files(limit: int) -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts and "test" not in p.parts)
    return files[:limit] if limit else files


def mine_exercises(files: list[Path]) -> list[str]:
    from phi1.synth.mine import MineOptions, mine_source

    out = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        recs, _ = mine_source(text, str(f), str(f), MineOptions(self_contained=False))
        out += [r.text for r in recs]
    return out


def near_copies(problems: list[str], n: int, seed: int = 0) -> list[str]:
    """``n`` edited copies of problems (0-3 statement deletions, duplications or
    operator swaps each), like synthetic exercises close to the benchmark."""
    import copy
    import random

    rng = random.Random(seed)
    out = []
    while len(out) < n:
        tree = ast.parse(rng.choice(problems))
        for _ in range(rng.randint(0, 3)):
            bodies = [x for x in ast.walk(tree) if isinstance(getattr(x, "body", None), list) and len(x.body) > 1]
            r = rng.random()
            if r < 0.4 and bodies:
                b = rng.choice(bodies)
                del b.body[rng.randrange(len(b.body))]
            elif r < 0.7 and bodies:
                b = rng.choice(bodies)
                i = rng.randrange(len(b.body))
                b.body.insert(i, copy.deepcopy(b.body[i]))
            else:
                ops = [x for x in ast.walk(tree) if isinstance(x, ast.BinOp)]
                if ops:
                    rng.choice(ops).op = rng.choice([ast.Add(), ast.Sub(), ast.Mult(), ast.Mod()])
        out.append(ast.unparse(tree) + "\n")
    return out


# --------------------------------------------------------------------------- peers


def zss_tree(node: ast.AST):
    import zss

    n = zss.Node(node_label(node))
    for c in node_children(node):
        n.addkid(zss_tree(c))
    return n


def _apted_config():
    from apted import Config

    class ZssNodes(Config):
        def rename(self, a, b):
            return int(a.label != b.label)

        def children(self, node):
            return node.children

    return ZssNodes()


def _ted_chunk(args):
    kind, pairs = args
    import zss

    out = []
    if kind == "zss":
        for a, b in pairs:
            out.append(zss.simple_distance(a, b))
    else:
        from apted import APTED

        cfg = _apted_config()
        for a, b in pairs:
            out.append(APTED(a, b, cfg).compute_edit_distance())
    return out


def tree_size(n) -> int:
    return 1 + sum(tree_size(c) for c in n.children)


def run_ted(kind: str, trees_p, trees_r, budget_s: float, workers: int = 2) -> tuple[int, float, list]:
    pairs = [(a, b) for b in trees_r for a in trees_p]
    chunks = [pairs[i:i + 16] for i in range(0, len(pairs), 16)]
    done, dists = 0, []
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(workers) as pool:
        for res in pool.imap(_ted_chunk, [(kind, c) for c in chunks]):
            dists += res
            done += len(res)
            if time.perf_counter() - t0 > budget_s:
                pool.terminate()
                break
    return done, time.perf_counter() - t0, dists


# --------------------------------------------------------------------------- n-grams

_JANITOR_PUNCT = re.compile(r"[^a-z0-9_\s]")


def janitor_index(texts: list[str], n: int) -> dict[str, set[int]]:
    """lm-evaluation-harness's janitor, adapted: normalise, split, n-gram strings in a dict."""
    dirt: dict[str, set[int]] = {}
    for i, t in enumerate(texts):
        w = _JANITOR_PUNCT.sub(" ", t.lower()).split()
        for k in range(len(w) - n + 1):
            dirt.setdefault(" ".join(w[k:k + n]), set()).add(i)
    return dirt


def janitor_hits(dirt: dict[str, set[int]], text: str, n: int) -> list[int]:
    w = _JANITOR_PUNCT.sub(" ", text.lower()).split()
    found: set[int] = set()
    for k in range(len(w) - n + 1):
        hit = dirt.get(" ".join(w[k:k + n]))
        if hit:
            found |= hit
    return sorted(found)


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=0, help="stdlib files to mine (0 = all)")
    ap.add_argument("--peer-records", type=int, default=12, help="exercises in the peers' subset (x 164 problems)")
    ap.add_argument("--peer-seconds", type=float, default=40.0, help="time budget per tree-edit-distance peer")
    ap.add_argument("--ngram-mb", type=float, default=8.0, help="MB of stdlib source for the n-gram scan")
    ap.add_argument("--planted", type=float, default=0.3, help="share of near copies of problems among the "
                    "exercises (a contaminated set: more pairs reach the cutoff and cost more)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; workers {args.workers}")

    problems = [p.prompt + p.canonical_solution for p in load_problems("humaneval").values()]
    t = time.perf_counter()
    exercises = mine_exercises(stdlib_files(args.files))
    mined = len(exercises)
    exercises += near_copies(problems, int(mined * args.planted / max(1e-9, 1 - args.planted)))
    np.random.default_rng(1).shuffle(exercises)
    print(f"{len(problems)} problems x {len(exercises):,} exercises: {mined:,} mined from the stdlib + "
          f"{len(exercises) - mined:,} near copies of problems ({time.perf_counter() - t:.0f}s to build)")

    # ---- ours: linearize + match, all pairs
    t = time.perf_counter()
    lin_p = [linearize(s) for s in problems]
    lin_r = [linearize(s) for s in exercises]
    t_lin = time.perf_counter() - t
    idx = AstIndex(lin_p, CUTOFF, THRESHOLDS, min_nodes=1, workers=args.workers)
    best = None
    for _ in range(3):
        t = time.perf_counter()
        m = idx.match(lin_r)
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    pairs = m.pairs
    ours = pairs / best
    print(f"\nAST match rate, all {pairs:,} pairs (best of 3):")
    print(f"  ours (rapidfuzz, cutoff {CUTOFF}, length bands): {ours:,.0f} pairs/s "
          f"({best:.2f}s; {m.compared / pairs:.0%} of pairs inside the bands)")
    print("  exercises flagged: " + ", ".join(f"τ={t}: {int((m.rate >= t - 1e-9).sum()):,}" for t in THRESHOLDS))
    print(f"  ours end to end incl. linearizing {len(problems) + len(exercises):,} snippets "
          f"({t_lin:.1f}s): {pairs / (best + t_lin):,.0f} pairs/s")
    million = 1_000_000 * len(problems) / ours
    print(f"  -> HumanEval x 1M exercises: {million / 60:.1f} min of matching "
          f"(+ linearizing 1M snippets: {1e6 * t_lin / (len(problems) + len(exercises)) / 60:.1f} min on one core)")

    # ---- rapidfuzz on plain ast.dump, all pairs (same cutoff and threads)
    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein

    t = time.perf_counter()
    dump_p = [ast.dump(ast.parse(s)) for s in problems]
    dump_r = [ast.dump(ast.parse(s)) for s in exercises]
    t_dump = time.perf_counter() - t
    sub = dump_r[: max(200, len(dump_r) // 10)]
    t = time.perf_counter()
    process.cdist(dump_p, sub, scorer=Levenshtein.normalized_similarity, score_cutoff=CUTOFF,
                  dtype=np.float32, workers=args.workers)
    dt = time.perf_counter() - t
    dump_rate = len(dump_p) * len(sub) / dt
    print(f"  rapidfuzz on ast.dump strings (cutoff {CUTOFF}, {len(dump_p) * len(sub):,} pairs; dumps built in "
          f"{t_dump:.1f}s): {dump_rate:,.0f} pairs/s   -> ours {ours / dump_rate:,.1f}x")

    # ---- tree edit distance peers, on the subset; ours on the same subset
    rng = np.random.default_rng(0)
    pick = rng.choice(len(exercises), size=min(args.peer_records, len(exercises)), replace=False)
    sub_r = [exercises[i] for i in pick]
    t = time.perf_counter()
    trees_p = [zss_tree(parse_snippet(s)) for s in problems]
    trees_r = [zss_tree(parse_snippet(s)) for s in sub_r]
    t_trees = time.perf_counter() - t
    n_sub = len(problems) * len(sub_r)
    sub_lin = [lin_r[i] for i in pick]
    reps = max(1, int(2e6 // n_sub))
    t = time.perf_counter()
    for _ in range(reps):
        AstIndex(lin_p, CUTOFF, THRESHOLDS, min_nodes=1, workers=args.workers).match(sub_lin)
    ours_sub = n_sub * reps / (time.perf_counter() - t)
    print(f"\nsame {n_sub:,} pairs ({len(sub_r)} exercises x {len(problems)} problems; trees built in {t_trees:.1f}s):")
    print(f"  ours: {ours_sub:,.0f} pairs/s (with index build, repeated {reps}x)")
    ours_rates = np.array([[Levenshtein.normalized_similarity(p, r) for p in lin_p] for r in sub_lin]).ravel()
    for kind in ("zss", "apted"):
        done, secs, dists = run_ted(kind, trees_p, trees_r, args.peer_seconds, args.workers)
        rate = done / secs
        sizes = [(tree_size(a), tree_size(b)) for b in trees_r for a in trees_p][:done]
        ted_rates = np.array([1 - d / max(a, b) for d, (a, b) in zip(dists, sizes)])
        corr = float(np.corrcoef(ted_rates, ours_rates[:done])[0, 1]) if done > 2 else float("nan")
        print(f"  {kind} tree edit distance ({args.workers} processes): {rate:,.0f} pairs/s over {done:,} pairs "
              f"in {secs:.1f}s   -> ours {ours_sub / rate:,.0f}x (correlation of 1-TED/size with our rate: "
              f"{corr:.2f})")

    # ---- n-gram scan
    texts, size = [], 0
    for f in stdlib_files(0):
        try:
            s = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        texts.append(s)
        size += len(s.encode("utf-8"))
        if size >= args.ngram_mb * 1e6:
            break
    bench_texts = [p.prompt + p.canonical_solution + "\n" + p.test for p in load_problems("humaneval").values()]
    index = NgramIndex.build(bench_texts, 13)
    dirt = janitor_index(bench_texts, 13)
    t = time.perf_counter()
    ours_hits = [index.hits(s)[0] for s in texts]
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    peer_hits = [janitor_hits(dirt, s, 13) for s in texts]
    t_peer = time.perf_counter() - t
    same = ours_hits == peer_hits
    print(f"\nn-gram scan (13-grams vs HumanEval prompt+solution+tests), {size / 1e6:.1f} MB of stdlib source, one core:")
    print(f"  ours: {size / 1e6 / t_ours:.1f} MB/s; janitor-style string n-grams: {size / 1e6 / t_peer:.1f} MB/s"
          f"   -> ours {t_peer / t_ours:.1f}x; same hits: {same} "
          f"({sum(bool(h) for h in ours_hits)} files share a 13-gram)")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
