"""`embed` stage: one vector per document, for the classifier to train on.

Reads ``ingest/docs/`` (and ``annotate/labels.jsonl`` when
``embed.scope = "labelled"``); writes::

    embed/vectors.npy     float32 [n, dim], row i = document ids[i]
    embed/ids.json        document ids in row order
    embed/embedder.json   {name, dim, backend, normalize, max_tokens, key, ...}

Every vector also lands in the embedding cache
(``<run>/cache/embeddings/<name>-<key>/``, see `phi1.quality.cache`), which
outlives this stage's folder: a re-run, a second classifier, or the `filter`
stage finds the vectors there instead of running the model again.

``scope = "labelled"`` (default) embeds only the documents the teacher rated
(the paper: ~100k of the corpus); `filter` embeds the rest, spread over its
datatrove tasks. ``scope = "all"`` embeds every document here, in one process,
which leaves `filter` nothing but cache lookups.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from phi1.documents import Doc, read_documents, read_jsonl
from phi1.errors import InputError
from phi1.stage import StageContext, StageResult

VECTORS = "vectors.npy"
IDS = "ids.json"
EMBEDDER = "embedder.json"


def cache_root(cfg: Any, run_dir: str | Path) -> str | None:
    """Where the embedding cache lives (None when embed.cache is off)."""
    if not cfg.cache:
        return None
    return cfg.cache_dir or str(Path(run_dir) / "cache" / "embeddings")


def usable_labels(labels_path: Path) -> Iterator[dict[str, Any]]:
    """Label records a classifier can learn from: valid, with a finite numeric score."""
    for rec in read_jsonl(labels_path):
        score = rec.get("score")
        if rec.get("valid", True) and isinstance(score, (int, float)) and not isinstance(score, bool) \
                and np.isfinite(score) and rec.get("id") is not None:
            yield rec


def run(ctx: StageContext) -> StageResult:
    from tqdm import tqdm

    from phi1.quality.cache import open_cached_embedder
    from phi1.quality.embedders import build_embedder

    cfg = ctx.section
    docs_dir = ctx.input("documents").path
    wanted: set[str] | None = None
    if cfg.scope == "labelled":
        labels_path = ctx.input("labels").path
        wanted = {str(r["id"]) for r in usable_labels(labels_path)}
        if not wanted:
            raise InputError(f"{labels_path} has no valid labels to embed (embed.scope = 'labelled')")

    # First pass: which documents, in corpus order (sizes the output array).
    ids: list[str] = []
    seen: set[str] = set()
    duplicates = 0
    for doc in read_documents(docs_dir):
        if wanted is not None and doc.id not in wanted:
            continue
        if doc.id in seen:
            duplicates += 1
            continue
        seen.add(doc.id)
        ids.append(doc.id)
    if not ids:
        raise InputError(f"no documents to embed in {docs_dir}"
                         + (" match the labelled ids" if wanted is not None else ""))
    missing = len(wanted - seen) if wanted is not None else 0
    if missing:
        ctx.log(f"warning: {missing} labelled ids are not in {docs_dir}; they cannot be used")

    embedder = build_embedder(cfg)
    cached = open_cached_embedder(embedder, cache_root(cfg, ctx.run_dir))
    ctx.log(f"{len(ids)} documents ({cfg.scope}) with {embedder.backend}:{embedder.name} on {embedder.device} "
            f"in {embedder.precision} ({embedder.precision_reason})"
            + (f", cache {cached.cache.folder}" if cached.cache else ""))

    t0 = time.time()
    chunk = max(cfg.batch_size * 8, 256)
    out: np.ndarray | None = None
    row = 0
    nbytes = 0
    with tqdm(total=len(ids), desc="embed", unit="doc", disable=not ctx.is_main) as bar:
        for batch in _chunks(_selected(docs_dir, seen), chunk):
            vecs = cached.embed_documents([d.id for d in batch], [d.text for d in batch])
            if out is None:
                out = np.lib.format.open_memmap(ctx.work_dir / VECTORS, mode="w+", dtype=np.float32,
                                                shape=(len(ids), vecs.shape[1]))
            out[row:row + len(batch)] = vecs
            row += len(batch)
            nbytes += sum(len(d.text.encode("utf-8", "surrogatepass")) for d in batch)
            bar.update(len(batch))
    cached.flush()
    assert out is not None and row == len(ids)
    out.flush()
    seconds = time.time() - t0
    del out

    info = cached.describe()
    info["dim"] = int(np.load(ctx.work_dir / VECTORS, mmap_mode="r").shape[1])
    info.pop("device", None)
    (ctx.work_dir / IDS).write_text(json.dumps(ids))
    (ctx.work_dir / EMBEDDER).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")

    hits = len(ids) - cached.embedded
    rate = cached.embedded / seconds if seconds > 0 and cached.embedded else 0.0
    summary = [f"{len(ids)} vectors of dim {info['dim']} ({info['name']}): {cached.embedded} embedded "
               f"({rate:.1f} docs/s), {hits} from the cache",
               f"{embedder.precision} on {embedder.device}: {embedder.precision_reason}"]
    return StageResult(
        counts={"documents": len(ids), "embedded": cached.embedded, "cache_hits": hits,
                "labels_without_document": missing, "duplicate_ids": duplicates},
        metrics={"dim": info["dim"], "seconds": round(seconds, 3), "docs_per_s": round(rate, 2),
                 "bytes": nbytes},
        summary=summary,
        extra={"embedder": info, "precision": embedder.precision, "precision_reason": embedder.precision_reason},
    )


def _selected(docs_dir: Path, ids: set[str]) -> Iterator[Doc]:
    taken: set[str] = set()
    for doc in read_documents(docs_dir):
        if doc.id in ids and doc.id not in taken:
            taken.add(doc.id)
            yield doc


def _chunks(docs: Iterator[Doc], n: int) -> Iterator[list[Doc]]:
    buf: list[Doc] = []
    for d in docs:
        buf.append(d)
        if len(buf) >= n:
            yield buf
            buf = []
    if buf:
        yield buf


# --------------------------------------------------------------------------- reading


class EmbeddingTable:
    """The `embed` stage's output: vectors with an id -> row index."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        for name in (VECTORS, IDS, EMBEDDER):
            if not (folder / name).exists():
                raise InputError(f"{folder / name} not found: is {folder} the output of the embed stage?")
        self.folder = folder
        try:
            self.vectors = np.load(folder / VECTORS, mmap_mode="r")
            self.ids: list[str] = json.loads((folder / IDS).read_text())
            self.embedder: dict[str, Any] = json.loads((folder / EMBEDDER).read_text())
        except (OSError, ValueError, EOFError) as e:  # damaged after embed wrote it (JSONDecodeError is a ValueError)
            raise InputError(f"{folder} is damaged ({type(e).__name__}: {str(e)[:120]}): re-run embed "
                             "(phi1 run CONFIG --from embed)") from None
        if not isinstance(self.ids, list) or not isinstance(self.embedder, dict) or self.vectors.ndim != 2:
            raise InputError(f"{folder} is damaged (ids.json, embedder.json or vectors.npy has the wrong shape): "
                             "re-run embed (phi1 run CONFIG --from embed)")
        if len(self.ids) != len(self.vectors):
            raise InputError(f"{folder}: {len(self.ids)} ids for {len(self.vectors)} vectors")
        self.row = {doc_id: i for i, doc_id in enumerate(self.ids)}

    def get(self, ids: list[str]) -> np.ndarray:
        return np.asarray(self.vectors[[self.row[i] for i in ids]], dtype=np.float32)
