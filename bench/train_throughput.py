"""Training throughput: phi1's loop against a bare eager fp32 loop around the same model.

For each preset, on the available device, in one process, alternating:

* ours: `phi1.train.loop.train` exactly as `pretrain` runs it, with its
  defaults: precision "auto" (bf16 autocast where the CPU or GPU multiplies
  bf16 natively, else fp32), fused AdamW, compile "auto" (off for runs this
  short; ``--compile`` adds a compiled run), LR schedule, loss over target
  tokens, clipping, metrics.jsonl, progress bar; on random tokens. tokens/s
  over the steps after warm-up, from its own metrics log.
* bare: the same transformers PhiForCausalLM (same init) in eager fp32:
  ``forward -> HF loss -> backward -> AdamW step (torch's default) ->
  zero_grad``, nothing else. What a user writes first.

Prints tokens/s and MFU of both (each against the peak at its own dtype:
the GPU table, or this CPU's measured matmul rate) and the ratio ours/bare.
The best of ``--repeats`` alternating runs of each is compared (medians
shown too): on a shared machine other processes only slow a run down.

    python bench/train_throughput.py                      # tiny + phi-1-small, CPU-sized shapes
    python bench/train_throughput.py --presets tiny --compile              # + a compiled run (slow to compile)
    python bench/train_throughput.py --presets phi-1-small --device cuda   # a GPU (bf16, SDPA, fused AdamW)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from phi1.model.config import ModelConfig
from phi1.model.presets import build_model, count_params, model_flops, phi_config, resolve_shape
from phi1.train.config import PretrainConfig
from phi1.train.data import Example
from phi1.train.distributed import distributed_env
from phi1.train import loop
from phi1.train.loop import TrainInputs, train
from phi1.train.metrics import cpu_name, resolve_peak
from phi1.train.precision import choose_precision

# (vocab, seq_len, micro batch, measured steps)
CPU_SHAPES = {"tiny": (4096, 256, 16, 10), "phi-1-small": (51200, 128, 1, 4), "phi-1": (51200, 128, 1, 2),
              "nano": (448, 64, 8, 20)}
GPU_SHAPES = {"tiny": (4096, 256, 64, 50), "phi-1-small": (51200, 2048, 8, 20), "phi-1": (51200, 2048, 4, 10),
              "nano": (448, 64, 64, 50)}


class RandomTokens:
    """Fixed-length rows of random ids, generated per index (no memory, no disk)."""

    uniform_targets = True

    def __init__(self, n: int, seq_len: int, vocab: int):
        self.n, self.seq_len, self.vocab = n, seq_len, vocab

    def __len__(self) -> int:
        return self.n

    def example(self, i: int) -> Example:
        return Example(np.random.default_rng(i).integers(0, self.vocab, self.seq_len, dtype=np.int64))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(config, device: torch.device, seq_len: int, micro: int, warmup: int, steps: int) -> dict:
    """tokens/s (wall and per CPU-second) of eager fp32 forward/backward/AdamW on random tokens."""
    torch.manual_seed(0)
    model = build_model(config, device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = RandomTokens(10_000, seq_len, config.vocab_size)
    t0 = c0 = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
        ids = torch.from_numpy(np.stack([data.example(step * micro + j).ids for j in range(micro)])).to(device)
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(device)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    del model, opt
    tokens = steps * micro * seq_len
    return {"tokens_per_s": tokens / seconds, "tokens_per_cpu_s": tokens / cpu}


def our_loop(config, device_pref: str, seq_len: int, micro: int, warmup: int, steps: int, *, precision: str,
             compile: bool | str, cache_dir: Path) -> dict:
    """phi1's loop: tokens/s over the steps after warm-up (from its metrics log), and what it chose."""
    cfg = PretrainConfig(max_steps=warmup + steps, batch_size=micro, micro_batch_size=micro, lr=1e-4,
                         warmup_steps=1, checkpoint_every=10**9, eval_every=10**9, log_every=warmup,
                         humaneval_loss=False, tensorboard=False, device=device_pref, precision=precision,
                         compile=compile)
    cpu = [0.0]
    step_fn = loop.train_step

    def timed_step(run) -> None:  # CPU time of the measured steps (the loop itself is untouched)
        c0 = time.process_time()
        step_fn(run)
        if run.step > warmup:
            cpu[0] += time.process_time() - c0

    loop.train_step = timed_step
    try:
        with tempfile.TemporaryDirectory(prefix="phi1-bench-") as tmp, distributed_env(device_pref) as env:
            torch.manual_seed(0)
            model = build_model(config, env.device)
            out = train(model, cfg, env, TrainInputs(RandomTokens(10_000, seq_len, config.vocab_size), pad_id=0),
                        work_dir=Path(tmp), seed=0, flops=model_flops(config), cache_dir=cache_dir, name="bench",
                        echo=lambda _m: None)
            records = [json.loads(x) for x in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
            del model
    finally:
        loop.train_step = step_fn
    measured = [r for r in records if r["kind"] == "train" and r["step"] > warmup]
    seconds = sum((r["step"] - prev) * micro * seq_len / r["tokens_per_s"]
                  for prev, r in zip([warmup] + [m["step"] for m in measured], measured))
    return {"tokens_per_s": steps * micro * seq_len / seconds, "tokens_per_cpu_s": steps * micro * seq_len / cpu[0],
            "precision": out.precision.name,
            "precision_reason": out.precision.reason, "compiled": out.compiled,
            "compile_seconds": out.compile_seconds, "peak": out.peak.flops}


def cpu_flags() -> str:
    """The CPU's vector and matrix extensions (/proc/cpuinfo), for the record."""
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
    except (OSError, StopIteration):
        return ""
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "avx_vnni")
    have = set(line.split(":", 1)[1].split())
    return " ".join(f for f in wanted if f in have)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "phi-1-small"])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--seq-len", type=int, default=0, help="0 = per-preset default for the device")
    ap.add_argument("--micro-batch", type=int, default=0)
    ap.add_argument("--steps", type=int, default=0, help="measured steps (after warm-up)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs of each loop; the best is kept")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="ours (bare is fp32)")
    ap.add_argument("--compile", action="store_true", help="also time ours with compile = true (once)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    cache = Path(tempfile.mkdtemp(prefix="phi1-bench-cache-"))  # one calibration per dtype for the whole bench
    ours_p = choose_precision(args.precision, device)
    peak_ours = resolve_peak(device, ours_p.name, 0.0, cache)
    peak_bare = resolve_peak(device, "fp32", 0.0, cache)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"device: {device.type} ({name}); flags: {cpu_flags() or 'n/a'}; {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    print(f"ours: {ours_p.name} ({ours_p.reason}); MFU against {peak_ours.label()}")
    print(f"bare: fp32 eager; MFU against {peak_bare.label()}")
    shapes = GPU_SHAPES if device.type == "cuda" else CPU_SHAPES
    rows = []
    for preset in args.presets:
        vocab, seq_len, micro, steps = shapes[preset]
        seq_len, micro, steps = args.seq_len or seq_len, args.micro_batch or micro, args.steps or steps
        steps = -(-steps // args.warmup) * args.warmup  # whole log intervals
        config = phi_config(resolve_shape(ModelConfig(preset=preset), seq_len=seq_len), vocab)
        n = count_params(config)
        flops = model_flops(config, n["non_embedding"]).per_token(seq_len)
        ours_all, bare_all, info = [], [], {}
        for _ in range(args.repeats):
            bare_all.append(bare_loop(config, device, seq_len, micro, args.warmup, steps))
            info = our_loop(config, args.device, seq_len, micro, args.warmup, steps, precision=args.precision,
                            compile="auto", cache_dir=cache)
            ours_all.append(info)
        ours_runs, bare_runs = [r["tokens_per_s"] for r in ours_all], [r["tokens_per_s"] for r in bare_all]
        ours, bare = max(ours_runs), max(bare_runs)
        ours_cpu = max(r["tokens_per_cpu_s"] for r in ours_all)
        bare_cpu = max(r["tokens_per_cpu_s"] for r in bare_all)

        def mfu(tps: float, peak) -> float:
            return tps * flops / peak.flops if peak.flops else float("nan")

        row = {"preset": preset, "params": n["total"], "seq_len": seq_len, "micro_batch": micro, "steps": steps,
               "ours_precision": info["precision"], "ours_compiled": info["compiled"],
               "ours_tokens_per_s": round(ours, 1), "bare_tokens_per_s": round(bare, 1),
               "ours_runs": [round(x, 1) for x in ours_runs], "bare_runs": [round(x, 1) for x in bare_runs],
               "ours_mfu": mfu(ours, peak_ours), "bare_mfu": mfu(bare, peak_bare), "ratio": ours / bare,
               "ratio_of_medians": float(np.median(ours_runs) / np.median(bare_runs)),
               "ours_tokens_per_cpu_s": round(ours_cpu, 1), "bare_tokens_per_cpu_s": round(bare_cpu, 1),
               "cpu_time_ratio": ours_cpu / bare_cpu}
        line = (f"{preset:<12} {n['total'] / 1e6:8.2f}M  seq {seq_len:<5} batch {micro:<3} "
                f"ours ({info['precision']}) {ours:10,.0f} tok/s (MFU {row['ours_mfu']:.1%})   "
                f"bare (fp32) {bare:10,.0f} tok/s (MFU {row['bare_mfu']:.1%})   ours/bare {row['ratio']:.2f}x "
                f"(medians: {row['ratio_of_medians']:.2f}x; per CPU-second: {row['cpu_time_ratio']:.2f}x)")
        if args.compile:
            # Enough steps after the first (compiling) one for a steady figure.
            comp = our_loop(config, args.device, seq_len, micro, args.warmup, steps, precision=args.precision,
                            compile=True, cache_dir=cache)
            row.update(compiled_tokens_per_s=round(comp["tokens_per_s"], 1),
                       compile_seconds=comp["compile_seconds"], compiled_ratio=comp["tokens_per_s"] / bare)
            line += (f"   ours+compile {comp['tokens_per_s']:10,.0f} tok/s ({row['compiled_ratio']:.2f}x; "
                     f"compiling took {comp['compile_seconds'] or 0:.0f}s)")
        rows.append(row)
        print(line, flush=True)
    result = {"device": name, "flags": cpu_flags(), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "precision": ours_p.name, "precision_reason": ours_p.reason, "peak_ours": peak_ours.as_dict(),
              "peak_bare": peak_bare.as_dict(), "results": rows}
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
