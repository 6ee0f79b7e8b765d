"""`filter` stage: score every ingested document and keep the textbook-quality ones.

Reads ``ingest/docs/`` with datatrove's reader, the `classifier` stage's
model and the `embed` settings; writes::

    filter/docs/*.jsonl.gz       kept documents; metadata gains "quality_score"
    filter/excluded/*.jsonl.gz   dropped documents with their "quality_score"
    filter/scores/<rank>.npz     every document's id, score and size (per task)
    filter/logs/...              datatrove logs, stats and completion markers

It is a datatrove pipeline, run by the executor in ``[filter.executor]``
(local processes, Slurm array jobs or Ray), so the corpus is split into
``tasks`` shards scored in parallel. Each task loads the embedder and the
classifier once, then scores documents in batches of ``filter.batch_size``:
vectors come from the embedding cache when `embed` (or an earlier filter
run) already computed them, from the model otherwise, and new ones are added
to the cache.

Two modes:

* ``threshold``: one pass; keep documents whose score is >= the threshold.
* ``keep_fraction``: keep the top share of the corpus (the paper kept ~6B of
  ~35B tokens, ~17%). The cut-off is a quantile over *all* scores, which no
  single task sees, so this runs in two datatrove passes: pass 1 scores every
  document and writes ``scores/<rank>.npz``; pass 2 (which Slurm starts only
  after pass 1, through a job dependency) computes the same cut-off in every
  task from all score files, then keeps its documents at or above it using
  the recorded scores (no second embedding).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from phi1.errors import InputError, Phi1Error
from phi1.files import write_atomic
from phi1.stage import StageContext, StageResult

SCORE_KEY = "quality_score"
DEFAULT_BYTES_PER_TOKEN = 3.5  # when the documents' producer did not record its estimate

from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.utils.batching import batched


def doc_size(doc: Any) -> int:
    size = doc.metadata.get("size")
    if isinstance(size, int) and size >= 0:
        return size
    return len(doc.text.encode("utf-8", "surrogatepass"))


# --------------------------------------------------------------------------- per-task scoring


class _TaskScorer:
    """Embedder (behind the cache) + classifier, loaded once per datatrove task."""

    def __init__(self, embed_cfg: Any, model_dir: str, cache_root: str | None, rank: int, threads: int | None):
        from phi1.quality.cache import open_cached_embedder
        from phi1.quality.classifier import QualityModel
        from phi1.quality.embedders import build_embedder

        self.model = QualityModel.load(model_dir)
        if threads and hasattr(self.model.estimator, "n_jobs"):
            self.model.estimator.n_jobs = threads  # tasks share the machine: no forest using every core
        self.embedder = build_embedder(embed_cfg, rank=rank, threads=threads)
        self.cached = open_cached_embedder(self.embedder, cache_root)

    def score(self, docs: list[Any]) -> np.ndarray:
        vectors = self.cached.embed_documents([str(d.id) for d in docs], [d.text for d in docs])
        return self.model.score(vectors, self.embedder.name)

    def close(self) -> None:
        self.cached.flush()
        self.embedder.close()


class _ScoreRecorder:
    """Collects (id, score, size) of one task; written once, when the task finished."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.scores: list[float] = []
        self.sizes: list[int] = []
        self.ties: list[int] = []

    def add(self, docs: list[Any], scores: np.ndarray) -> None:
        for d, s in zip(docs, scores):
            self.ids.append(str(d.id))
            self.scores.append(float(s))
            self.sizes.append(doc_size(d))
            self.ties.append(tiebreak(str(d.id)))

    def save(self, folder: str, rank: int) -> None:
        buf = io.BytesIO()
        np.savez(buf, id=np.array(self.ids, dtype=str), score=np.array(self.scores, dtype=np.float64),
                 size=np.array(self.sizes, dtype=np.int64), tie=np.array(self.ties, dtype=np.uint64))
        write_atomic(Path(folder) / f"{rank:05d}.npz", buf.getvalue())


def read_scores(folder: str | Path, world_size: int | None = None, with_ids: bool = False) -> dict[str, np.ndarray]:
    """All tasks' recorded scores, concatenated in rank order."""
    folder = Path(folder)
    files = sorted(folder.glob("[0-9][0-9][0-9][0-9][0-9].npz"))
    if world_size is not None:
        present = {int(p.stem) for p in files}
        missing = sorted(set(range(world_size)) - present)
        if missing:
            raise Phi1Error(f"scores of tasks {missing[:10]} are missing in {folder}: the scoring pass did not finish")
        files = [p for p in files if int(p.stem) < world_size]
    keys = ("score", "size", "tie") + (("id",) if with_ids else ())
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for p in files:
        with np.load(p, allow_pickle=False) as z:
            for k in keys:
                parts[k].append(z[k])
    empty = {"score": np.float64, "size": np.int64, "tie": np.uint64, "id": str}
    return {k: (np.concatenate(v) if v else np.zeros(0, dtype=empty[k])) for k, v in parts.items()}


def tiebreak(doc_id: str) -> int:
    """A fixed pseudo-random rank per document, to split ties at the cut-off."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


@dataclass(frozen=True)
class Cutoff:
    """Keep a document when ``score > score_cut``, or ``score == score_cut`` and its tie rank <= ``tie_cut``.

    A forest's probabilities take few distinct values (multiples of 1/trees),
    so many documents can share the cut-off score; the tie rank keeps exactly
    the requested share instead of all of them.
    """

    score: float
    tie: int = 2**64 - 1

    def keeps(self, scores: np.ndarray, ties: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, dtype=np.float64)
        return (scores > self.score) | ((scores == self.score) & (np.asarray(ties, dtype=np.uint64) <= np.uint64(self.tie)))


def keep_cutoff(scores: np.ndarray, sizes: np.ndarray, ties: np.ndarray, fraction: float, fraction_of: str) -> Cutoff:
    """The cut-off keeping the top `fraction` of documents (or of their bytes, ~tokens)."""
    if len(scores) == 0:
        return Cutoff(float("inf"), 0)
    order = np.lexsort((np.asarray(ties, dtype=np.uint64), -np.asarray(scores, dtype=np.float64)))
    weights = sizes[order].astype(np.float64) if fraction_of == "tokens" else np.ones(len(scores))
    if weights.sum() <= 0:
        weights = np.ones(len(scores))
    cum = np.cumsum(weights)
    # The first prefix of the ranking that reaches the fraction (float slack so 1.0 keeps all).
    k = min(int(np.searchsorted(cum, fraction * cum[-1] * (1 - 1e-12))), len(scores) - 1)
    return Cutoff(float(scores[order[k]]), int(ties[order[k]]))


# --------------------------------------------------------------------------- datatrove steps


class QualityScorer(PipelineStep):
    """Pass 1 of keep_fraction: score every document, record the scores, pass nothing on."""

    name = "🎓 quality scorer"
    type = "🔢 - SCORER"

    def __init__(self, embed_cfg: Any, model_dir: str, cache_root: str | None, scores_dir: str,
                 batch_size: int = 64, threads: int | None = None):
        super().__init__()
        self.embed_cfg = embed_cfg
        self.model_dir = model_dir
        self.cache_root = cache_root
        self.scores_dir = scores_dir
        self.batch_size = batch_size
        self.threads = threads

    def run(self, data: Any, rank: int = 0, world_size: int = 1) -> Any:
        scorer = _TaskScorer(self.embed_cfg, self.model_dir, self.cache_root, rank, self.threads)
        recorder = _ScoreRecorder()
        try:
            for batch in batched(data, self.batch_size):
                before = scorer.cached.embedded
                with self.track_time("batch"):
                    recorder.add(batch, scorer.score(batch))
                self.stat_update("documents", value=len(batch))
                self.stat_update("embedded", value=scorer.cached.embedded - before)
        finally:
            scorer.close()  # keep the cache entries even when the task fails half-way
        recorder.save(self.scores_dir, rank)
        return
        yield  # a generator that passes nothing downstream


class QualityFilter(BaseFilter):
    """Keeps documents whose quality score is >= the cut-off; stores the score in metadata.

    The cut-off is `threshold`, or (``keep_fraction`` set) the quantile of all
    recorded scores in `scores_dir`; with ``use_recorded`` the scores of pass 1
    are reused instead of embedding again.
    """

    name = "🎓 quality filter"

    def __init__(self, embed_cfg: Any, model_dir: str, cache_root: str | None, scores_dir: str,
                 threshold: float | None = None, keep_fraction: float | None = None,
                 fraction_of: str = "tokens", use_recorded: bool = False, exclusion_writer: Any = None,
                 batch_size: int = 64, threads: int | None = None):
        super().__init__(exclusion_writer=exclusion_writer, batch_size=batch_size)
        if (threshold is None) == (keep_fraction is None):
            raise ValueError("QualityFilter needs exactly one of threshold, keep_fraction")
        self.embed_cfg = embed_cfg
        self.model_dir = model_dir
        self.cache_root = cache_root
        self.scores_dir = scores_dir
        self.threshold = threshold
        self.keep_fraction = keep_fraction
        self.fraction_of = fraction_of
        self.use_recorded = use_recorded
        self.threads = threads
        self._rank = 0
        self._scorer: _TaskScorer | None = None
        self._recorded: dict[str, float] = {}
        self._recorder: _ScoreRecorder | None = None
        self._cutoff = Cutoff(float("inf"), 0)

    def _scores(self, batch: list[Any]) -> np.ndarray:
        out = np.full(len(batch), np.nan)
        for i, d in enumerate(batch):
            out[i] = self._recorded.get(str(d.id), np.nan)
        todo = np.nonzero(np.isnan(out))[0]
        if len(todo):  # not recorded (or not using records): embed + predict, loading lazily
            if self._scorer is None:
                self._scorer = _TaskScorer(self.embed_cfg, self.model_dir, self.cache_root, self._rank, self.threads)
            before = self._scorer.cached.embedded
            out[todo] = self._scorer.score([batch[i] for i in todo])
            self.stat_update("embedded", value=self._scorer.cached.embedded - before)
        return out

    def filter_batch(self, batch: list[Any]) -> list[bool | tuple[bool, str]]:
        scores = self._scores(batch)
        if self._recorder is not None:
            self._recorder.add(batch, scores)
        keep = self._cutoff.keeps(scores, np.array([tiebreak(str(d.id)) for d in batch], dtype=np.uint64))
        results: list[bool | tuple[bool, str]] = []
        for doc, s, k in zip(batch, scores, keep):
            doc.metadata[SCORE_KEY] = round(float(s), 6)
            results.append(True if k else (False, "low_quality"))
        return results

    def filter(self, doc: Any) -> bool | tuple[bool, str]:
        return self.filter_batch([doc])[0]

    def run(self, data: Any, rank: int = 0, world_size: int = 1) -> Any:
        self._rank = rank
        own = Path(self.scores_dir) / f"{rank:05d}.npz"
        if self.use_recorded and own.exists():
            with np.load(own, allow_pickle=False) as z:
                self._recorded = dict(zip(z["id"].tolist(), z["score"].tolist()))
        if self.keep_fraction is not None:
            # Every task computes the same cut-off from the same files: no extra job between the passes.
            rec = read_scores(self.scores_dir, world_size)
            self._cutoff = keep_cutoff(rec["score"], rec["size"], rec["tie"], self.keep_fraction, self.fraction_of)
        else:
            self._cutoff = Cutoff(float(self.threshold))
        if not self.use_recorded:
            self._recorder = _ScoreRecorder()
        try:
            yield from super().run(data, rank, world_size)
        finally:
            if self._scorer is not None:
                self._scorer.close()
                self._scorer = None
        if self._recorder is not None:
            self._recorder.save(self.scores_dir, rank)


# --------------------------------------------------------------------------- stage


def doc_reader(folder: Path) -> Any:
    """datatrove reader for a docs/ folder written as jsonl(.gz) or parquet."""
    if not folder.is_dir():
        raise InputError(f"document folder not found: {folder}")
    names = [p.name for p in folder.iterdir() if p.is_file()]
    if any(n.endswith(".parquet") for n in names):
        from datatrove.pipeline.readers import ParquetReader

        reader = ParquetReader(str(folder), glob_pattern="*.parquet")
        reader.add_file_path = False
        return reader
    if not any(".jsonl" in n for n in names):
        raise InputError(f"no *.jsonl.gz or *.parquet document shards in {folder}")
    from datatrove.pipeline.readers import JsonlReader

    return JsonlReader(str(folder), glob_pattern="*.jsonl*", add_file_path=False)


def run(ctx: StageContext) -> StageResult:
    from datatrove.pipeline.writers import JsonlWriter

    from phi1.devices import resolve_device, resolve_precision
    from phi1.executors import build_executor, merged_stats, run_executors, threads_per_task, stat_totals
    from phi1.quality.classifier import QualityModel
    from phi1.quality.embed import cache_root
    from phi1.quality.embedders import build_embedder

    cfg = ctx.section
    config = ctx.config
    # Absolute paths: Slurm/Ray tasks do not start in this directory.
    documents = ctx.input("documents")
    docs_in = documents.path.resolve()
    model_dir = ctx.input("classifier").path.resolve()
    model = QualityModel.load(model_dir)
    # Fail here, in one line, rather than in every task: the classifier must match [embed]
    # (the name is known without loading the model; each task checks the dimension too).
    embed_name = build_embedder(config.embed).name
    model.check_embedder(embed_name, int(model.embedder.get("dim", -1)))
    embed_info = {"name": embed_name}
    threshold = cfg.threshold
    if threshold is None:
        threshold = 0.5 if model.task == "binary" else model.threshold

    out = ctx.work_dir.resolve()
    scores_dir = str(out / "scores")
    cache = cache_root(config.embed, ctx.run_dir.resolve())
    common = dict(embed_cfg=config.embed, model_dir=str(model_dir), cache_root=cache and str(Path(cache).resolve()),
                  scores_dir=scores_dir, batch_size=cfg.batch_size, threads=threads_per_task(cfg.executor))
    job = f"{config.run.name}-filter"

    def keeping_pipeline(filter_step: QualityFilter) -> list:
        return [doc_reader(docs_in), filter_step, JsonlWriter(str(out / "docs"))]

    def excluded() -> Any:
        return JsonlWriter(str(out / "excluded")) if cfg.write_excluded else None

    if cfg.mode == "threshold":
        step = QualityFilter(threshold=threshold, exclusion_writer=excluded(), **common)
        ex = build_executor(cfg.executor, keeping_pipeline(step), out / "logs" / "filter", job)
        chain = [("score + filter", ex)]
    else:
        score = QualityScorer(**common)
        ex1 = build_executor(cfg.executor, [doc_reader(docs_in), score], out / "logs" / "score", f"{job}-score")
        step = QualityFilter(keep_fraction=cfg.keep_fraction, fraction_of=cfg.fraction_of, use_recorded=True,
                             exclusion_writer=excluded(), **common)
        ex2 = build_executor(cfg.executor, keeping_pipeline(step), out / "logs" / "filter", f"{job}-keep",
                             depends=ex1)
        chain = [("score", ex1), ("keep top", ex2)]
    # What 'auto' resolves to here; a task on another node (Slurm, Ray) resolves it on its own CPU/GPU.
    precision, precision_why = resolve_precision(config.embed.precision, resolve_device(config.embed.device),
                                                 key="embed.precision")
    ctx.log(f"scoring {docs_in} with {model.kind} ({model.task}) on {config.embed.backend}:"
            f"{embed_info.get('name')} in {precision} — {cfg.executor.kind} executor, {cfg.executor.tasks} tasks")
    run_executors(chain, echo=ctx.log)
    (out / "docs").mkdir(exist_ok=True)  # a task that kept nothing writes no shard

    rec = read_scores(scores_dir, cfg.executor.tasks)
    scores, sizes = rec["score"], rec["size"]
    cut = Cutoff(float(threshold)) if cfg.mode == "threshold" else keep_cutoff(
        scores, sizes, rec["tie"], cfg.keep_fraction, cfg.fraction_of)
    cutoff = cut.score
    kept = cut.keeps(scores, rec["tie"])
    upstream = documents.manifest
    # the bytes/token estimate the documents were counted with (ingest's setting), so the funnel adds up
    bpt = float(upstream.get("bytes_per_token") or upstream.get("metrics", {}).get("bytes_per_token")
                or DEFAULT_BYTES_PER_TOKEN)
    n_in, n_kept = int(len(scores)), int(kept.sum())
    b_in, b_kept = int(sizes.sum()), int(sizes[kept].sum())
    t_in, t_kept = int(round(b_in / bpt)), int(round(b_kept / bpt))
    if n_in and not n_kept:
        ctx.log(f"warning: no document reached the cut-off {cutoff:.4g}; filter/docs is empty")
    q = np.quantile(scores, [0.1, 0.5, 0.9]).tolist() if n_in else [None] * 3
    counts = {"documents_in": n_in, "documents_kept": n_kept, "documents_dropped": n_in - n_kept,
              "bytes_in": b_in, "bytes_kept": b_kept, "tokens_in_est": t_in, "tokens_kept_est": t_kept}
    metrics = {
        "keep_rate_documents": round(n_kept / n_in, 4) if n_in else 0.0,
        "keep_rate_tokens": round(b_kept / b_in, 4) if b_in else 0.0,
        "cutoff": cutoff, "mode": cfg.mode,
        "score_p10": q[0], "score_p50": q[1], "score_p90": q[2],
    }
    summary = [
        f"kept {n_kept:,} of {n_in:,} documents ({metrics['keep_rate_documents']:.1%}), "
        f"~{t_kept:,} of ~{t_in:,} tokens ({metrics['keep_rate_tokens']:.1%}) at score >= {cutoff:.4g}",
        f"kept -> {out.name.removesuffix('.partial')}/docs/, dropped -> "
        + ("excluded/ (with scores)" if cfg.write_excluded else "not written (filter.write_excluded = false)"),
    ]
    steps = {s["name"]: {k: v.get("total") for k, v in s["stats"].items() if isinstance(v, dict)}
             for s in merged_stats(out / "logs" / "filter")}
    embedded = int(sum(stat_totals(out / "logs" / name).get("embedded", 0) for name in ("score", "filter")))
    counts["embedded"] = embedded
    summary.append(f"{embedded:,} documents embedded here, {n_in - embedded:,} vectors from the cache; "
                   f"{precision} on this machine: {precision_why}")
    return StageResult(counts=counts, metrics=metrics, summary=summary,
                       extra={"datatrove_stats": steps, "bytes_per_token": bpt, "precision": precision,
                              "precision_reason": precision_why})
