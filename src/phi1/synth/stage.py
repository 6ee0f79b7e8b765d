"""Stage `synth`: synthetic textbooks and CodeExercises (paper section 2.2).

Produces two datasets:

* ``synth.textbooks`` (documents): ``textbooks/part-*.jsonl.gz``;
* ``synth.exercises`` (exercises): ``exercises/train.jsonl.gz`` + ``val.jsonl.gz``.

Seeds are drawn without repeats from the seed space (`phi1.synth.seeds`),
turned into requests by versioned prompts (`phi1.synth.prompts`), answered by
an OpenAI-compatible endpoint through `phi1.llm` or by a local transformers
model (`phi1.synth.backends`), validated (`phi1.synth.validate`; exercises
run against their own asserts in the `execute` sandbox with [execute]'s
workers and limits), deduplicated exactly and with MinHash, also against
``synth.dedup_against`` (`phi1.synth.dedup`), and reported on
(`phi1.synth.report`). The manifest holds the cost estimate made before
anything was sent, the spend, every drop reason and the diversity report.

Without an endpoint (no ``[synth.llm] base_urls``, no batch files, and the
endpoint backend) the stage writes the prompts, a Batch API file and the seed
coverage, says so, and produces empty datasets: it never invents records.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from phi1.errors import Phi1Error
from phi1.stage import StageContext, StageResult
from phi1.synth.assemble import Assembled, References, assemble, exercise_references, write_empty
from phi1.synth.chunks import ChunkResult, ChunkWorker, finished_chunk, remove_parts
from phi1.synth.dedup import NUM_PERM, MinHasher
from phi1.synth.exercises import ExerciseRules
from phi1.synth.plan import KINDS, Plan, estimate, estimate_line, make_plans, requested_coverage, write_prompts
from phi1.synth.report import coverage_lines
from phi1.synth.seeds import SeedSpace
from phi1.synth.validate import CUT, REQUEST_FAILED

BATCH_FILE_REQUESTS = 50_000  # requests per exported Batch API file (OpenAI's limit per batch)


def has_endpoint(cfg: Any) -> bool:
    """Whether replies can come from somewhere: a local model, endpoints, or batch files."""
    llm = cfg.llm
    return cfg.backend == "transformers" or bool(llm.base_urls or llm.batch_import or llm.batch_export)


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.section
    started = time.time()
    space = SeedSpace.load(cfg.seed_space)
    plans = make_plans(cfg, space, ctx.config.run.seed)
    outputs = {"textbooks": ctx.output("textbooks"), "exercises": ctx.output("exercises")}
    sizes = space.sizes()
    metrics: dict[str, Any] = {"seed_space": {"fingerprint": space.fingerprint, "files": space.files, **sizes}}
    counts: dict[str, int] = {}
    summary: list[str] = []

    est = estimate(plans, cfg.llm) if plans else None
    if est is not None:
        metrics["estimate"] = est
        ctx.log(estimate_line(est))
    requested = {p.kind: requested_coverage(p) for p in plans}
    for kind, cov in requested.items():
        metrics.setdefault(kind, {})["requested_coverage"] = cov

    if not plans:
        for kind in KINDS:
            write_empty(kind, outputs[kind])
        summary.append("nothing asked for (synth.textbooks = synth.exercises = 0): empty datasets")
        return StageResult(counts, metrics, summary)

    if not has_endpoint(cfg):
        written = write_prompts(plans, ctx.work_dir, cfg.llm, ctx.log)
        for kind in KINDS:
            write_empty(kind, outputs[kind])
        metrics["prompts"] = written
        counts.update({f"{p.kind}_asked": p.count for p in plans})
        counts.update({f"{p.kind}_kept": 0 for p in plans})
        final = ctx.run_dir / ctx.name
        batch = (f" and a Batch API file ({', '.join(str(final / b) for b in written['batch'])})" if written["batch"]
                 else " (set [synth.llm] model to also get a Batch API file)")
        line = (f"no endpoint ([synth.llm] base_urls, batch files, or backend = 'transformers'): wrote "
                f"{sum(p.count for p in plans):,} prompts to {final / 'prompts'}{batch}; "
                "no records generated")
        ctx.log(line)
        summary += [line, estimate_line(est), *coverage_lines(requested)]
        return StageResult(counts, metrics, summary)

    from phi1.llm import resolve_cache_path

    cache = resolve_cache_path(cfg.llm, ctx.run_dir)
    backend = _backend(ctx, cfg, cache)
    pool = _LazyPool(ctx.config.execute, cfg.chunk_size, ctx.log)
    try:
        if cfg.backend == "endpoint" and cfg.llm.batch_export:
            _export_missing(plans, cfg, cache, backend, ctx)
        hasher = MinHasher(NUM_PERM)
        refs = _references(ctx, cfg, hasher) if any(p.kind == "exercises" for p in plans) else None
        rules = ExerciseRules(frozenset(cfg.allowed_imports), cfg.min_asserts, cfg.min_docstring_chars,
                              cfg.max_exercise_chars)
        embed = _embedder(ctx, cfg)
        assembled: dict[str, Assembled] = {}
        chunk_results: dict[str, list[ChunkResult]] = {}
        for plan in plans:
            worker = ChunkWorker(plan, backend, ctx.work_dir, rules=rules,
                                 min_textbook_chars=cfg.min_textbook_chars, pool=pool, hasher=hasher)
            chunk_results[plan.kind] = _run_chunks(ctx, plan, worker, cfg.chunk_size)
        failed = sum(len(c.failed) for cs in chunk_results.values() for c in cs)
        asked = sum(p.count for p in plans)
        if failed == asked:
            first = next(c.first_error for cs in chunk_results.values() for c in cs if c.first_error)
            if cfg.backend == "endpoint" and cfg.llm.batch_import and not cfg.llm.base_urls:
                # the usual cause offline: files from another export (other seeds, counts, model or prompts)
                raise Phi1Error(f"synth: none of the {asked} requests has a usable reply in synth.llm.batch_import "
                                f"({', '.join(cfg.llm.batch_import)}): they answer other requests (another "
                                f"export, or the config changed since: seeds, counts, model) or their lines "
                                f"failed (first: {first}); export again with synth.llm.batch_export")
            raise Phi1Error(f"synth: all {asked} requests failed (first: {first}); fix the cause and re-run "
                            "(replies already received are cached)")
        for plan in plans:
            assembled[plan.kind] = assemble(
                plan, chunk_results[plan.kind], ctx.work_dir, outputs[plan.kind], threshold=cfg.near_duplicate,
                references=refs if plan.kind == "exercises" else None,
                validation_fraction=ctx.config.run.validation_fraction, seed=ctx.config.run.seed,
                ngram_sample=cfg.ngram_sample, diversity_sample=cfg.diversity_sample, embed=embed,
                num_perm=NUM_PERM)
        for kind in KINDS:
            if kind not in assembled:
                write_empty(kind, outputs[kind])
        for a in assembled.values():
            failure = (a.report.get("nearest_neighbour") or {}).get("error")
            if failure:
                ctx.log(f"warning: no nearest-neighbour histogram for {a.kind} ([embed] model: {failure})")
        sandbox = pool.describe()
    finally:
        pool.close()
        backend.close()
    remove_parts(ctx.work_dir)

    usage = backend.usage
    metrics["llm"] = usage
    if sandbox:
        metrics["sandbox"] = sandbox
    data_cost: float | None = 0.0
    for plan in plans:
        a, chunks = assembled[plan.kind], chunk_results[plan.kind]
        kind_counts, kind_metrics, lines = _kind_report(plan, a, chunks)
        counts.update(kind_counts)
        metrics.setdefault(plan.kind, {}).update(kind_metrics)
        summary += lines
        cost = kind_metrics["data_cost_usd"]
        data_cost = None if cost is None or data_cost is None else data_cost + cost
    metrics["data_cost_usd"] = round(data_cost, 6) if data_cost is not None else None
    counts["failed"] = failed
    summary += coverage_lines({k: metrics[k]["coverage"] for k in assembled})
    summary.append(estimate_line(est))
    summary.append(_spend_line(usage))
    if failed:
        summary.append(f"{failed} requests failed and are counted as request_failed; a re-run sends exactly "
                       "those again")
    summary.append(f"-> {ctx.run_dir / ctx.name / 'textbooks'}/, {ctx.run_dir / ctx.name / 'exercises'}/ "
                   f"({time.time() - started:.0f}s)")
    return StageResult(counts, metrics, summary, failed=failed)


# --------------------------------------------------------------------------- pieces


def _backend(ctx: StageContext, cfg: Any, cache: Path | None) -> Any:
    from phi1.synth.backends import EndpointBackend, LocalBackend

    if cfg.backend == "transformers":
        return LocalBackend(cfg.local_model, cfg.llm, cache, device=cfg.device, dtype=cfg.dtype,
                            batch_size=cfg.batch_size, log=ctx.log, progress=ctx.is_main, seed=ctx.config.run.seed)
    if not cfg.llm.model:
        raise Phi1Error("synth needs [synth.llm] model (the model to ask, e.g. \"gpt-4o-mini\", or the name "
                        "vLLM serves)")
    return EndpointBackend(dataclasses.replace(cfg.llm, batch_export=""), cache, log=ctx.log,
                           progress=ctx.is_main)


def _export_missing(plans: list[Plan], cfg: Any, cache: Path | None, backend: Any, ctx: StageContext) -> None:
    """Batch mode: write every request missing from the cache (first asks, or
    re-asks of cut replies once the first replies are imported) to Batch API
    files of at most 50,000 requests, then stop the stage (`BatchExported`)."""
    from phi1.llm import BatchExported, LLMClient

    backend.import_batches()  # the main client imports (and prices) the batch outputs once
    base = Path(cfg.llm.batch_export)
    suffix = "".join(base.suffixes) or ".jsonl"
    stem = base.name[: len(base.name) - len("".join(base.suffixes))] if base.suffixes else base.name
    paths: list[Path] = []
    missing = 0
    for plan in plans:
        for group, start in enumerate(range(0, plan.count, BATCH_FILE_REQUESTS)):
            stop = min(plan.count, start + BATCH_FILE_REQUESTS)
            target = base.with_name(f"{stem}-{plan.kind}-{group:04d}{suffix}")
            group_cfg = dataclasses.replace(cfg.llm, batch_export=str(target), batch_import=[])
            with LLMClient(group_cfg, cache, desc=f"synth {plan.kind} (batch)", log=ctx.log) as client:
                requests = [plan.request(plan.seed(i)) for i in range(start, stop)]
                try:
                    asyncio.run(client.chat_many(requests, progress=ctx.is_main, reask_cut=True))
                except BatchExported as e:
                    paths += e.paths
                    missing += e.count
    if missing:
        raise BatchExported(paths, missing, section="synth.llm")


def _references(ctx: StageContext, cfg: Any, hasher: MinHasher) -> References | None:
    if not ctx.has_input("dedup_against"):
        return None
    ds = ctx.input("dedup_against")
    refs = exercise_references(Path(ds.path), hasher, ds.ref)
    ctx.log(f"deduplicating exercises against {len(refs):,} exercises of {ds.ref}")
    return refs


def _embedder(ctx: StageContext, cfg: Any) -> Any:
    if not cfg.diversity_sample:
        return None
    from phi1.quality.embedders import build_embedder

    holder: dict[str, Any] = {}

    def embed(texts: Any) -> Any:
        if "e" not in holder:
            holder["e"] = build_embedder(ctx.config.embed)
        return holder["e"].embed(list(texts))

    return embed


class _LazyPool:
    """The `execute` sandbox, started on the first exercise to validate."""

    def __init__(self, execute_cfg: Any, chunk_size: int, warn: Any):
        self.cfg = execute_cfg
        self.chunk_size = chunk_size
        self.warn = warn
        self.pool: Any = None

    def __call__(self) -> Any:
        if self.pool is None:
            from phi1.evaluate.execute import limits_for
            from phi1.evaluate.sandbox import SandboxPool

            workers = max(1, min(self.cfg.workers or (os.cpu_count() or 1), self.chunk_size))
            self.pool = SandboxPool(workers, limits_for(self.cfg), self.cfg.sandbox, warn=self.warn)
        return self.pool

    def describe(self) -> dict[str, Any] | None:
        return self.pool.describe() if self.pool is not None else None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


def _run_chunks(ctx: StageContext, plan: Plan, worker: ChunkWorker, size: int) -> list[ChunkResult]:
    chunks = plan.chunks(size)
    out = []
    resumed = 0
    for c, (start, stop) in enumerate(chunks):
        done = finished_chunk(ctx.work_dir, plan.kind, c, start, stop) if ctx.resumed else None
        if done is not None:
            out.append(done)
            resumed += 1
            continue
        res = worker.run(c, start, stop)
        out.append(res)
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(res.dropped.items())) or "none"
        ctx.log(f"{plan.kind} chunk {c + 1}/{len(chunks)} (seeds {start:,}-{stop - 1:,}): kept {res.kept} of "
                f"{stop - start}; dropped: {dropped}")
    if resumed:
        ctx.log(f"{plan.kind}: {resumed} of {len(chunks)} chunks were finished by the interrupted attempt")
    return out


def _kind_report(plan: Plan, a: Assembled, chunks: list[ChunkResult]
                 ) -> tuple[dict[str, int], dict[str, Any], list[str]]:
    k = plan.kind
    dropped: Counter = Counter()
    for c in chunks:
        dropped.update(c.dropped)
    validated = sum(c.kept for c in chunks)
    dropped.update(a.dropped)
    replies = plan.count - dropped[REQUEST_FAILED]
    invalid = sum(v for r, v in dropped.items() if r not in (REQUEST_FAILED,) and r not in a.dropped)
    costs = [c.cost_usd for c in chunks]
    cost = None if any(x is None for x in costs) else round(sum(costs), 6)  # type: ignore[arg-type]
    counts = {f"{k}_asked": plan.count, f"{k}_replies": replies, f"{k}_validated": validated,
              f"{k}_kept": a.kept, **{f"{k}_dropped_{r}": v for r, v in sorted(dropped.items())}}
    counts.update({f"{k}_{name.split('.')[0]}": n for name, n in a.written.items()} if k == "exercises"
                  else {f"{k}_shards": len(a.written)})
    metrics = {
        "asked": plan.count, "kept": a.kept, "dropped": dict(sorted(dropped.items())),
        "error_rate": round(invalid / replies, 4) if replies else None,
        "drop_rate": round((plan.count - a.kept) / plan.count, 4),
        "cut": dropped[CUT],
        "prompt_tokens": sum(c.prompt_tokens for c in chunks),
        "completion_tokens": sum(c.completion_tokens for c in chunks),
        "data_cost_usd": cost, "prompt_id": plan.prompt_id, "files": a.written, **a.report,
    }
    shown = ", ".join(f"{r} {v:,}" for r, v in sorted(dropped.items())) or "none"
    rate = f"{metrics['error_rate']:.1%}" if metrics["error_rate"] is not None else "n/a"
    lines = [f"{k}: kept {a.kept:,} of {plan.count:,} asked ({plan.prompt_id}; invalid replies {rate}); "
             f"dropped: {shown}"]
    if k == "exercises":
        lines.append(f"exercises: {a.written.get('train.jsonl.gz', 0):,} train, {a.written.get('val.jsonl.gz', 0):,}"
                     f" val; {a.report.get('name_followed', 0):,} define the function name their seed asked for")
    return counts, metrics, lines


def _spend_line(usage: dict[str, Any]) -> str:
    if usage.get("backend") == "transformers":
        return (f"local model {usage['model']}: {usage['generated']:,} replies generated, "
                f"{usage['cache_hits']:,} from cache, {usage['completion_tokens']:,} tokens, "
                f"{usage['seconds']:.0f}s")
    from phi1.llm.usage import describe_usage as describe

    return "spent: " + describe(usage)
