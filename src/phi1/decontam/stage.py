"""The `decontam` stage: training datasets against the benchmark, per τ.

Reads the exercise and document datasets named in ``decontam.inputs`` and the
problems of ``decontam.problems``; writes into its folder::

    similarity/<input>/<rank>.jsonl.gz  one similarity row per record (the table)
    tally/<input>/<rank>.json           per-task, per-problem tallies (merged below)
    problem_vectors.npy                 the problems' unit embeddings (embedding signal)
    problems.jsonl                      one row per problem: best match per signal,
                                        counts, similar_at (what Table 3 splits on)
    summary.json                        thresholds, per-input counts and fractions per τ
    evidence.html | evidence.md         flagged pairs side by side with their scores
    flagged/<input>.ids                 ids flagged at prune_tau
    pruned/<input>/                     dataset ``decontam.<input>``: the input without
                                        the records flagged at prune_tau, same kind
    logs/                               datatrove logs, stats, completion markers

The scan is a datatrove pipeline per input (reader -> `ContaminationScan`),
run by ``[decontam.executor]``; documents are pruned by a second datatrove
pass, exercises by a streaming copy.
"""

from __future__ import annotations

import os
import time
from typing import Any

from phi1.decontam.config import pruned_name
from phi1.errors import InputError
from phi1.stage import DOCUMENTS, EXERCISES, StageContext, StageResult

SUMMARY_FILE = "summary.json"
PROBLEMS_FILE = "problems.jsonl"


def _reader(dataset: Any) -> Any:
    from phi1.decontam.steps import exercise_reader
    from phi1.quality.filter import doc_reader

    path = dataset.path.resolve()
    return exercise_reader(path) if dataset.kind == EXERCISES else doc_reader(path)


def run(ctx: StageContext) -> StageResult:
    from phi1.decontam.evidence import score_pairs, write_evidence
    from phi1.decontam.pruning import flagged_ids, prune_exercises, read_rows, write_ids
    from phi1.decontam.scan import ProblemIndex, options_from_config, problem_rows, summary_lines
    from phi1.decontam.steps import ContaminationScan, FlaggedFilter, read_tallies
    from phi1.evaluate.problems import load_problems
    from phi1.executors import build_executor, run_executors
    from phi1.files import write_json_atomic
    from phi1.documents import write_jsonl

    cfg = ctx.section
    config = ctx.config
    t0 = time.time()
    datasets = ctx.mixture("inputs")
    for d in datasets:
        if d.kind not in (EXERCISES, DOCUMENTS):
            raise InputError(f"decontam.inputs: {d.ref!r} is {d.kind}; decontam checks exercises and documents")
    problems = load_problems(cfg.problems)  # a bad problem file fails here, in one line, not in every task
    from phi1.executors import threads_per_task

    threads = threads_per_task(cfg.executor)
    options = options_from_config(cfg, workers=threads)
    out = ctx.work_dir.resolve()
    job = f"{config.run.name}-decontam"

    # 0. the problems, embedded once here (the tasks read the vectors; the evidence needs them too)
    embedder = None
    vectors_file = None
    if options.uses("embedding"):
        import numpy as np

        from phi1.decontam.embedding import build_normalized_embedder

        embedder = build_normalized_embedder(config.embed, threads=os.cpu_count())
    index = ProblemIndex.build(problems.values(), options, embedder)
    if index.vectors is not None:
        vectors_file = out / "problem_vectors.npy"
        np.save(vectors_file, index.vectors)
        embedder.close()  # free it while the tasks run theirs; the evidence reloads it if it needs it

    # 1. scan every input (one datatrove pipeline each, chained for Slurm)
    chain: list[tuple[str, Any]] = []
    prev = None
    for d in datasets:
        step = ContaminationScan(cfg.problems, options, str(out / "similarity" / d.ref), str(out / "tally" / d.ref),
                                 embed_cfg=config.embed, batch_size=cfg.batch_size, threads=threads,
                                 problem_vectors=str(vectors_file) if vectors_file else None)
        ex = build_executor(cfg.executor, [_reader(d), step], out / "logs" / f"scan-{d.ref}", f"{job}-{d.ref}",
                            depends=prev)
        chain.append((f"scan {d.ref}", ex))
        prev = ex
    ctx.log(f"{len(datasets)} dataset(s) ({', '.join(d.ref for d in datasets)}) against {len(problems)} problems "
            f"of {cfg.problems!r}; signals {', '.join(options.signals)}; τ {', '.join(f'{t:g}' for t in cfg.taus)}")
    run_executors(chain, echo=ctx.log)
    seconds = time.time() - t0

    # 2. merge the tasks' tallies; per-input counts per τ from the rows
    k = cfg.evidence_per_problem
    tally = None
    per_input: dict[str, Any] = {}
    flagged_sets: dict[str, set[str]] = {}
    for d in datasets:
        t = read_tallies(out / "tally" / d.ref, cfg.executor.tasks, k)
        per_input[d.ref] = {"kind": d.kind, "records": t.records, "snippets": t.snippets, "flagged": {
            key: {"records": n, "fraction": round(n / t.records, 6) if t.records else 0.0}
            for key, n in t.flagged.items()}}
        tally = t if tally is None else tally.merge(t, k)
        flagged_sets[d.ref] = flagged_ids(read_rows(out / "similarity" / d.ref), options.prune_tau)
    assert tally is not None
    rows = problem_rows(tally, index, options)
    write_jsonl(out / PROBLEMS_FILE, rows)

    # 3. prune at prune_tau
    prune_chain: list[tuple[str, Any]] = []
    pruned: dict[str, Any] = {}
    for d in datasets:
        ids = flagged_sets[d.ref]
        ids_file = out / "flagged" / f"{d.ref}.ids"
        write_ids(ids_file, ids)
        dst = ctx.output(pruned_name(d.ref))
        if d.kind == EXERCISES:
            pruned[d.ref] = prune_exercises(d.path, dst, ids).to_json()
        else:
            from datatrove.pipeline.writers import JsonlWriter

            ex = build_executor(cfg.executor, [_reader(d), FlaggedFilter(str(ids_file)), JsonlWriter(str(dst))],
                                out / "logs" / f"prune-{d.ref}", f"{job}-prune-{d.ref}",
                                depends=prune_chain[-1][1] if prune_chain else None)
            prune_chain.append((f"prune {d.ref}", ex))
            pruned[d.ref] = {"dropped_ids": len(ids)}
    if prune_chain:
        run_executors(prune_chain, echo=ctx.log)
        for d in datasets:
            if d.kind == DOCUMENTS:
                ctx.output(pruned_name(d.ref)).mkdir(parents=True, exist_ok=True)  # all dropped: still a dataset
                recs = per_input[d.ref]["records"]
                dropped = per_input[d.ref]["flagged"][f"{options.prune_tau:g}"]["records"]
                pruned[d.ref].update({"kept": recs - dropped, "dropped": dropped})

    # 4. evidence
    ev_name = "evidence.html" if cfg.evidence == "html" else "evidence.md"
    pairs = [p for ps in tally.evidence.values() for p in ps]
    lines = summary_lines(tally, index, options)
    evidence = score_pairs(pairs, index, options, embedder)
    if embedder is not None:
        embedder.close()
    write_evidence(out / ev_name, evidence, cfg.evidence,
                   [f"{', '.join(d.ref for d in datasets)} against {cfg.problems}"] + lines)

    summary = {"taus": [float(t) for t in cfg.taus], "prune_tau": float(cfg.prune_tau), "problems": cfg.problems,
               "thresholds": list(options.thresholds), "signals": list(options.signals), "inputs": per_input,
               "pruned": pruned, "similar_problems": {f"{t:g}": int(tally.similar(t, options).sum())
                                                      for t in options.thresholds}}
    write_json_atomic(out / SUMMARY_FILE, summary)

    total = tally.records
    total_flagged = {f"{t:g}": sum(v["flagged"][f"{t:g}"]["records"] for v in per_input.values())
                     for t in options.thresholds}
    counts = {"records": total, "snippets": tally.snippets, "problems": len(problems), "evidence_pairs": len(evidence),
              **{f"flagged@{t}": n for t, n in total_flagged.items()},
              "pruned": sum(int(p.get("dropped", 0)) for p in pruned.values())}
    metrics = {"fraction_flagged": {t: round(n / total, 6) if total else 0.0 for t, n in total_flagged.items()},
               "similar_problems": summary["similar_problems"],
               "ast_pairs_per_s": round(tally.ast_pairs / tally.ast_seconds) if tally.ast_seconds > 0 else None,
               "seconds_scan": round(seconds, 1)}
    out_lines = lines + [
        f"pruned at τ={cfg.prune_tau:g}: " + "; ".join(
            f"decontam.{ref} keeps {p.get('kept', 0):,} (drops {p.get('dropped', 0):,})" for ref, p in pruned.items()),
        f"table -> similarity/, per problem -> {PROBLEMS_FILE}, evidence ({len(evidence)} pairs) -> {ev_name}",
    ]
    return StageResult(counts=counts, metrics=metrics, summary=out_lines,
                       extra={"decontam": summary, "per_problem_file": PROBLEMS_FILE})
