"""Stage `ingest`: read the sources, clean, deduplicate -> ``ingest/docs/``.

A chain of datatrove executors (local, Slurm or Ray, from ``[ingest.executor]``):

1. clean (N tasks): readers -> encoding/size/generated/data/syntax filters ->
   exact signatures -> ``tmp/clean/<rank>.jsonl.gz``
2. exact: find (``exact_finder_tasks``): duplicate ids from the signatures
3. exact: filter (N): drop copies -> MinHash signatures -> ``tmp/exact/<rank>``
4. near: buckets (``num_buckets x workers_per_bucket``): LSH matches
5. near: cluster (1): union-find, one survivor per cluster
6. near: filter (N): drop near duplicates -> ``docs/<rank>.jsonl.gz`` (or .parquet)

Steps drop out when exact or MinHash dedup is disabled. Every datatrove log,
completion marker and stats file lives in ``<work_dir>/logs/<step>/``, so a
killed run re-run with the same config skips finished tasks. The funnel is
computed from per-task stats files (which survive a resume), written into the
manifest and printed as a short table.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phi1.corpus.config import FILTER_REASONS, IngestConfig
from phi1.corpus.sources import ResolvedSource, fingerprint_source, resolve_sources
from phi1.errors import InputError, Phi1Error
from phi1.stage import StageContext, StageResult



def fingerprint_sources(config: Any) -> str:
    """Cheap fingerprint of the configured sources: paths, sizes, mtimes (and
    the interpreter version for the stdlib default). Never raises: a missing
    path fingerprints as missing and the stage reports it when it runs."""
    section: IngestConfig = config.ingest
    h = hashlib.sha256()
    for src in section.sources:
        try:
            h.update(fingerprint_source(src).encode())
        except OSError as e:
            h.update(f"error:{e}".encode())
    return h.hexdigest()[:32]


# --------------------------------------------------------------------------- plan


@dataclass
class IngestPlan:
    steps: list[tuple[str, Any]] = field(default_factory=list)  # (label, datatrove executor)
    log_dirs: list[Path] = field(default_factory=list)


def record_adapter(self: Any, doc: Any) -> dict:
    """The document record of the folder contract: id, text, metadata{source, path, size[, duplicate_count]}."""
    meta = {k: doc.metadata[k] for k in ("source", "path", "size") if k in doc.metadata}
    if "duplicate_count" in doc.metadata:
        meta["duplicate_count"] = int(doc.metadata["duplicate_count"])
    return {"id": doc.id, "text": doc.text, "metadata": meta}


def _final_writer(cfg: IngestConfig, docs_dir: Path):
    if cfg.output_format == "parquet":
        import pyarrow as pa
        from datatrove.pipeline.writers import ParquetWriter

        meta = pa.struct([("source", pa.string()), ("path", pa.string()), ("size", pa.int64()),
                          ("duplicate_count", pa.int64())])
        schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("metadata", meta)])
        return ParquetWriter(str(docs_dir), adapter=record_adapter, schema=schema, compression="zstd")
    from datatrove.pipeline.writers import JsonlWriter

    return JsonlWriter(str(docs_dir), adapter=record_adapter)


def build_plan(cfg: IngestConfig, sources: list[ResolvedSource], work: Path, job_prefix: str) -> IngestPlan:
    """The datatrove executors of one ingest run, in dependency order."""
    from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster
    from datatrove.pipeline.dedup.exact_dedup import ExactDedupFilter, ExactFindDedups
    from datatrove.pipeline.dedup.minhash import MinhashConfig as DTMinhashConfig
    from datatrove.pipeline.writers import JsonlWriter

    from phi1.corpus.dedup import (
        CodeWordTokenizer, ExactSignatureTee, MinhashSignatureTee, QuietMinhashDedupFilter,
        RankShardReader, Tally, exact_dedup_config,
    )
    from phi1.corpus.filters import build_filters
    from phi1.corpus.readers import build_readers
    from phi1.executors import build_executor

    tmp, logs = work / "tmp", work / "logs"
    ex_cfg = cfg.executor
    n = ex_cfg.tasks
    exact, near = cfg.exact_dedup, cfg.minhash.enabled
    exact_cfg = exact_dedup_config()
    mh = DTMinhashConfig(n_grams=cfg.minhash.n_grams, num_buckets=cfg.minhash.num_buckets,
                         hashes_per_bucket=cfg.minhash.hashes_per_bucket, seed=cfg.minhash.seed)
    plan = IngestPlan()

    def add(label: str, pipeline: list, tasks: int) -> None:
        slug = f"{len(plan.steps) + 1}-{label.replace(': ', '-').replace(' ', '-')}"
        depends = plan.steps[-1][1] if plan.steps else None
        ex = build_executor(ex_cfg, pipeline, logs / slug, f"{job_prefix}-{slug}", depends=depends, tasks=tasks)
        plan.steps.append((label, ex))
        plan.log_dirs.append(logs / slug)

    def minhash_tee() -> Any:
        return MinhashSignatureTee(str(tmp / "minhash_sigs"), config=mh, language=CodeWordTokenizer())

    def finish() -> list:
        return [Tally("kept"), _final_writer(cfg, work / "docs")]

    def stash(name: str) -> Any:
        return JsonlWriter(str(tmp / name), adapter=record_adapter)

    clean = build_readers(sources, str(work / "problems"), max_read_bytes=cfg.max_bytes,
                          progress_dir=str(tmp / "progress"))
    clean += [Tally("read"), *build_filters(cfg), Tally("clean")]
    if exact:
        clean += [ExactSignatureTee(str(tmp / "exact_sigs"), exact_cfg, finder_workers=cfg.exact_finder_tasks),
                  stash("clean")]
    elif near:
        clean += [minhash_tee(), stash("clean")]
    else:
        clean += finish()
    add("clean", clean, n)
    if exact:
        add("exact: find", [ExactFindDedups(str(tmp / "exact_sigs"), str(tmp / "exact_dups"), exact_cfg)],
            cfg.exact_finder_tasks)
        step = [RankShardReader(tmp / "clean"), ExactDedupFilter(str(tmp / "exact_dups"), exact_cfg), Tally("exact")]
        step += [minhash_tee(), stash("exact")] if near else finish()
        add("exact: filter", step, n)
    if near:
        add("near: buckets", [MinhashDedupBuckets(str(tmp / "minhash_sigs"), str(tmp / "minhash_buckets"), config=mh)],
            cfg.minhash.num_buckets * cfg.minhash.workers_per_bucket)
        add("near: cluster", [MinhashDedupCluster(str(tmp / "minhash_buckets"), str(tmp / "minhash_remove"), config=mh)],
            1)
        add("near: filter", [RankShardReader(tmp / ("exact" if exact else "clean")),
                             QuietMinhashDedupFilter(str(tmp / "minhash_remove")), *finish()], n)
    return plan


# --------------------------------------------------------------------------- funnel


def _counters(log_dirs: list[Path]) -> dict[str, float]:
    """Sum of every named counter over all steps and finished tasks."""
    from phi1.executors import stat_totals

    out: dict[str, float] = {}
    for d in log_dirs:
        for key, val in stat_totals(d).items():
            out[key] = out.get(key, 0) + val
    return out


@dataclass
class Funnel:
    read_docs: int = 0
    read_bytes: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    kept_docs: int = 0
    kept_bytes: int = 0
    broken_records: int = 0


def compute_funnel(cfg: IngestConfig, log_dirs: list[Path]) -> Funnel:
    c = _counters(log_dirs)
    f = Funnel(read_docs=int(c.get("read_docs", 0)), read_bytes=int(c.get("read_bytes", 0)),
               kept_docs=int(c.get("kept_docs", 0)), kept_bytes=int(c.get("kept_bytes", 0)),
               broken_records=int(c.get("broken_records", 0)))
    for r in FILTER_REASONS:
        f.dropped[r] = int(c.get(f"dropped_{r}", 0))
    clean = int(c.get("clean_docs", 0))
    after_exact = int(c.get("exact_docs", clean)) if cfg.exact_dedup else clean
    if cfg.exact_dedup:
        f.dropped["exact_duplicate"] = clean - after_exact
    if cfg.minhash.enabled:
        f.dropped["near_duplicate"] = after_exact - f.kept_docs
    return f


def read_problems(problems_dir: Path) -> dict[str, dict[str, Any]]:
    """Problems saved by the readers, merged per (source, file)."""
    merged: dict[str, dict[str, Any]] = {}
    for p in sorted(problems_dir.glob("*.json")):
        for path, e in json.loads(p.read_text()).items():
            m = merged.setdefault(path, {"count": 0, "first": []})
            m["count"] += e["count"]
            m["first"].extend(e["first"])
    for m in merged.values():
        m["first"] = m["first"][:5]
    return merged


def funnel_table(f: Funnel, bytes_per_token: float) -> list[str]:
    def mb(b: int) -> str:
        return f"{b / 1e6:,.1f} MB"

    lines = [f"{'documents in':<20}{f.read_docs:>10,}   {mb(f.read_bytes)}"]
    for reason, n in f.dropped.items():
        if n:
            lines.append(f"  - {reason:<16}{n:>10,}")
    pct = 100.0 * f.kept_docs / f.read_docs if f.read_docs else 0.0
    tokens = f.kept_bytes / bytes_per_token
    lines.append(f"{'kept':<20}{f.kept_docs:>10,}   {mb(f.kept_bytes)}  ({pct:.1f}% of documents; "
                 f"~{_human(tokens)} tokens at {bytes_per_token:g} bytes/token)")
    return lines


def _human(x: float) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= div:
            return f"{x / div:.1f}{unit}"
    return f"{x:.0f}"


# --------------------------------------------------------------------------- stage


def run(ctx: StageContext) -> StageResult:
    from phi1.corpus.readers import files_done
    from phi1.executors import completed_ranks, quiet_datatrove_console, run_executors

    cfg: IngestConfig = ctx.section
    work = ctx.work_dir
    t0 = time.time()
    sources = resolve_sources(cfg.sources, work / "tmp" / "sources")
    for s in sources:
        ctx.log(f"source {s.describe()}")
    ex = cfg.executor
    with quiet_datatrove_console():
        plan = build_plan(cfg, sources, work, f"phi1-{ctx.config.run.name}-ingest")
    ctx.log(f"{len(plan.steps)} datatrove steps on the {ex.kind} executor: {ex.tasks} tasks, "
            f"{'all' if ex.workers == -1 else ex.workers} at once; logs in {work / 'logs'}")
    if ctx.resumed:
        done = [f"{label} {len(completed_ranks(d))}/{e.world_size}"
                for (label, e), d in zip(plan.steps, plan.log_dirs) if completed_ranks(d)]
        ctx.log("resuming: finished tasks are skipped" + (f" ({', '.join(done)})" if done else ""))

    steps: list = list(plan.steps)
    if all(s.kind != "hf_disk" for s in sources):  # the clean step's bar counts files read
        units = sum(s.n_units for s in sources)
        unit = "file" if all(s.kind != "parquet" for s in sources) else "unit"
        steps[0] = (*steps[0], lambda: (files_done(work / "tmp" / "progress"), units, unit))
    if ex.kind == "slurm":  # submit the whole chain at once; Slurm orders it by dependencies
        run_executors(steps, echo=ctx.log)
    else:  # stop early on an empty corpus instead of deduplicating nothing
        run_executors(steps[:1], echo=ctx.log, total=len(steps))
        _check_not_empty(compute_funnel(cfg, plan.log_dirs[:1]), sources, work)
        run_executors(steps[1:], echo=ctx.log, first=2, total=len(steps))

    funnel = compute_funnel(cfg, plan.log_dirs)
    _check_not_empty(funnel, sources, work)
    problems = read_problems(work / "problems")
    accounted = funnel.kept_docs + sum(funnel.dropped.values())
    if accounted != funnel.read_docs:  # every document is kept or dropped for one reason
        raise Phi1Error(f"ingest funnel does not add up: {funnel.read_docs} read, {accounted} kept+dropped "
                         f"(stats in {work / 'logs'}); re-run with --force")
    if funnel.kept_docs == 0:
        reasons = ", ".join(f"{r} {n}" for r, n in funnel.dropped.items() if n)
        raise InputError(f"ingest kept no documents out of {funnel.read_docs} ({reasons}); "
                         "loosen the [ingest] limits or check the sources")
    if not cfg.keep_intermediate:
        shutil.rmtree(work / "tmp", ignore_errors=True)

    shards = sorted(p.name for p in (work / "docs").iterdir() if p.is_file())
    seconds = time.time() - t0
    tokens = funnel.kept_bytes / cfg.bytes_per_token
    summary = funnel_table(funnel, cfg.bytes_per_token)
    if funnel.broken_records:
        summary.append(_problems_line(funnel.broken_records, problems))
    summary.append(f"{len(shards)} shards in {ctx.run_dir / ctx.name / 'docs'} ({seconds:.1f}s)")
    counts = {"documents_in": funnel.read_docs, "kept": funnel.kept_docs,
              "broken_records": funnel.broken_records, "shards": len(shards),
              **{f"dropped_{r}": n for r, n in funnel.dropped.items()}}
    metrics = {"bytes_in": funnel.read_bytes, "bytes_kept": funnel.kept_bytes,
               "tokens_estimate": int(tokens), "bytes_per_token": cfg.bytes_per_token,
               "keep_rate": round(funnel.kept_docs / funnel.read_docs, 6),
               "docs_per_second": round(funnel.read_docs / seconds, 1) if seconds > 0 else None}
    extra = {"funnel": {"documents_in": funnel.read_docs, "bytes_in": funnel.read_bytes,
                        "dropped": funnel.dropped, "kept": funnel.kept_docs, "bytes_kept": funnel.kept_bytes},
             "sources": [{"name": s.name, "kind": s.kind, "root": s.root, "files": s.n_files, "units": s.n_units,
                          "bytes": s.n_bytes}
                         for s in sources],
             "problems": problems,
             "output": {"format": cfg.output_format, "folder": "docs", "shards": shards}}
    return StageResult(counts=counts, metrics=metrics, summary=summary, extra=extra)


def _problems_line(n: int, problems: dict[str, dict[str, Any]]) -> str:
    parts = []
    for path, e in list(problems.items())[:3]:
        where = ", ".join(x["at"] for x in e["first"][:3])
        parts.append(f"{path} ({where}{', ...' if e['count'] > 3 else ''})")
    more = f" and {len(problems) - 3} more files" if len(problems) > 3 else ""
    return f"skipped {n} broken records: {'; '.join(parts)}{more} (all in manifest.json 'problems')"


def _check_not_empty(funnel: Funnel, sources: list[ResolvedSource], work: Path) -> None:
    if funnel.read_docs:
        return
    what = "; ".join(s.describe() for s in sources)
    why = ""
    if funnel.broken_records:
        why = f" (all {funnel.broken_records} records were broken: " + \
              _problems_line(funnel.broken_records, read_problems(work / "problems")) + ")"
    raise InputError(f"empty corpus: 0 documents read from {what}{why}")
