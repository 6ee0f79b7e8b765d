"""Stage `annotate`: a teacher rates the educational value of a sample.

Reads ``ingest/docs/``; draws ``annotate.samples`` documents (seeded by
``run.seed``, stratified over ``annotate.size_strata`` size quantiles); asks
the teacher for a 0-5 score; writes ``annotate/labels.jsonl``::

    {"id", "score" (float or null), "raw", "teacher", "prompt_id", "valid"}

(+ ``"error"`` when an LLM request failed, ``"attempts"`` when re-asked).
Only ``valid`` labels train the classifier. With the ``llm`` teacher every
reply is cached in ``<run>/cache/llm.sqlite`` as it arrives: a killed run
re-run resends nothing that came back, a finished one re-run costs nothing.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from phi1.documents import read_documents, write_jsonl
from phi1.errors import InputError, Phi1Error
from phi1.stage import StageContext, StageResult
from phi1.quality.config import AnnotateConfig
from phi1.quality.teachers import REJECTED, Label, heuristic_labels, imported_labels, llm_labels

LABELS_FILE = "labels.jsonl"


def run(ctx: StageContext) -> StageResult:
    cfg: AnnotateConfig = ctx.section
    docs_dir = ctx.input("documents").path
    started = time.time()
    counts: dict[str, int] = {}
    metrics: dict[str, Any] = {}
    summary: list[str] = []

    if cfg.teacher == "labels":
        labels = _import(ctx, cfg, docs_dir, counts)
        prompt_id = "imported"
    else:
        if cfg.teacher == "llm":
            _check_llm(cfg)
        from phi1.quality.sampling import sample_folder

        # One character more than the teacher is shown, so a cut is visible.
        sample = sample_folder(docs_dir, cfg.samples, cfg.size_strata, ctx.config.run.seed, cfg.max_chars + 1)
        if not sample.docs:
            raise InputError(f"{docs_dir} holds no documents to annotate")
        counts["corpus_documents"] = sample.corpus_documents
        counts["sampled"] = len(sample.docs)
        edges = ", ".join(f"{e:,}" for e in sample.size_edges)
        ctx.log(f"sampled {len(sample.docs)} of {sample.corpus_documents} documents over "
                f"{len(sample.size_edges)} size strata (up to {edges} bytes)")
        if cfg.teacher == "heuristic":
            labels = heuristic_labels(sample.docs, cfg.max_chars, progress=ctx.is_main)
            prompt_id = labels[0].prompt_id
        else:
            labels, prompt_id = _llm(ctx, cfg, sample.docs, counts, metrics, summary)

    write_jsonl(ctx.work_dir / LABELS_FILE, (lab.to_json() for lab in labels))
    threshold = ctx.config.classifier.threshold
    valid = [lab.score for lab in labels if lab.valid and lab.score is not None]
    hist = Counter(min(5, max(0, int(s))) for s in valid)
    counts.update(labelled=len(labels), valid=len(valid), invalid=len(labels) - len(valid))
    metrics.update(
        teacher=cfg.teacher,
        prompt_id=prompt_id,
        score_histogram={str(b): hist.get(b, 0) for b in range(6)},
        mean_score=round(sum(valid) / len(valid), 4) if valid else None,
        threshold=threshold,
        positive_fraction=round(sum(s >= threshold for s in valid) / len(valid), 4) if valid else None,
    )
    share = f"{metrics['positive_fraction']:.0%}" if valid else "n/a"
    summary[:0] = [
        f"teacher {cfg.teacher} ({prompt_id}): {len(labels)} labelled, {len(valid)} valid, "
        f"{len(labels) - len(valid)} invalid in {time.time() - started:.1f}s",
        "scores " + " ".join(f"{b}:{hist.get(b, 0)}" for b in range(6))
        + (f"; mean {metrics['mean_score']:.2f}; {share} >= {threshold:g} (classifier.threshold)" if valid else ""),
    ]
    summary.append(f"labels: {ctx.run_dir / ctx.name / LABELS_FILE}")
    # Failed requests make the stage not current: a plain re-run asks exactly
    # those again (every reply received is served from the cache).
    return StageResult(counts=counts, metrics=metrics, summary=summary, failed=counts.get("failed", 0))


def _check_llm(cfg: AnnotateConfig) -> None:
    llm = cfg.llm
    if not llm.model:
        raise Phi1Error("annotate.teacher = 'llm' needs annotate.llm.model (the model to ask)")
    if not (llm.base_urls or llm.batch_export or llm.batch_import):
        raise Phi1Error("annotate.teacher = 'llm' needs annotate.llm.base_urls (an OpenAI-compatible endpoint, "
                        "e.g. [\"http://localhost:8000/v1\"]) or batch files (annotate.llm.batch_export / "
                        "batch_import); teacher = 'heuristic' runs offline")


def _llm(ctx: StageContext, cfg: AnnotateConfig, docs: list, counts: dict[str, int], metrics: dict[str, Any],
         summary: list[str]) -> tuple[list[Label], str]:
    from phi1.llm import resolve_cache_path
    from phi1.llm import describe_usage

    cache = resolve_cache_path(cfg.llm, ctx.run_dir)
    labels, report = llm_labels(docs, cfg.llm, cfg.prompt, cfg.max_chars, cfg.parse_retries, cache,
                                log=ctx.log, progress=ctx.is_main)
    usage = report.usage or {}
    failed = [lab for lab in labels if lab.error]
    rejected = [lab for lab in labels if (lab.invalid or "").startswith(REJECTED)]
    counts.update(failed=len(failed), rejected=len(rejected), reasked=report.reasked)
    metrics["llm"] = usage
    bad = failed + rejected  # either way no label: too many means the setup is wrong, not the documents
    if bad and len(bad) > cfg.max_failed_fraction * len(labels):
        first = bad[0].error or bad[0].invalid
        raise Phi1Error(
            f"{len(bad)} of {len(labels)} annotation requests failed ({len(rejected)} rejected by the endpoint; "
            f"annotate.max_failed_fraction = {cfg.max_failed_fraction:g}); first: {first}. Fix the cause and "
            f"re-run: replies already received are cached and are not sent again")
    if failed:
        ctx.log(f"{len(failed)} requests failed and are recorded as invalid for now (first: {failed[0].error}); "
                "a plain re-run asks exactly those again")
    cut = sum(1 for lab in labels if not lab.valid and lab.invalid == "cut at the token limit")
    counts["cut"] = cut
    summary.append(describe_usage(usage) + (f", {report.reasked} re-asked" if report.reasked else "")
                   + (f", {cut} still cut at the token limit (invalid)" if cut else ""))
    return labels, labels[0].prompt_id


def _import(ctx: StageContext, cfg: AnnotateConfig, docs_dir: Any, counts: dict[str, int]) -> list[Label]:
    if not cfg.labels_path:
        raise Phi1Error("annotate.teacher = 'labels' needs annotate.labels_path (a JSONL with id and score)")
    known = {doc.id for doc in read_documents(docs_dir)}
    labels, report = imported_labels(cfg.labels_path, known)
    counts.update(corpus_documents=len(known), imported=report.total, unknown_ids=len(report.unknown_ids))
    if report.unknown_ids:
        ctx.log(f"{len(report.unknown_ids)} of {report.total} labels in {cfg.labels_path} name documents that are "
                f"not in the ingest output; left out (first: {report.unknown_ids[0]!r})")
    return labels
