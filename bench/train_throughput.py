"""Training throughput: phi1's loop against a bare loop around the same model.

For each preset, on the available device, in one process:

* ours: `phi1.train.loop.train` exactly as `pretrain` runs it (LR schedule,
  loss over target tokens, clipping, metrics.jsonl, progress bar), on random
  tokens; tokens/s over the steps after warm-up, from its own metrics log;
* bare: the same transformers PhiForCausalLM (same init, same dtype policy)
  in ``forward -> loss -> backward -> AdamW step -> zero_grad``, nothing else.

Prints tokens/s and MFU of both and the ratio ours/bare (overhead must stay
within a few percent). The two loops alternate ``--repeats`` times and the
best run of each is compared (the median is shown too): on a shared machine
other processes only ever slow a run down, so the best is the least
disturbed measurement.

    python bench/train_throughput.py                      # tiny + phi-1-small, CPU-sized shapes
    python bench/train_throughput.py --presets phi-1-small --seq-len 2048 --micro-batch 8   # a GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from phi1.model.config import ModelConfig
from phi1.model.presets import build_model, count_params, flops_per_token, phi_config, resolve_shape
from phi1.train.config import PretrainConfig
from phi1.train.data import Example
from phi1.train.distributed import distributed_env
from phi1.train.loop import TrainInputs, resolve_precision, train
from phi1.train.metrics import peak_flops

# CPU-sized defaults: (vocab, seq_len, micro batch, measured steps)
CPU_SHAPES = {"tiny": (4096, 256, 16, 10), "phi-1-small": (51200, 128, 1, 4), "phi-1": (51200, 128, 1, 2),
              "nano": (448, 64, 8, 20)}
GPU_SHAPES = {"tiny": (4096, 256, 64, 50), "phi-1-small": (51200, 2048, 8, 20), "phi-1": (51200, 2048, 4, 10),
              "nano": (448, 64, 64, 50)}


class RandomTokens:
    """Fixed-length rows of random ids, generated per index (no memory, no disk)."""

    fixed_length = True

    def __init__(self, n: int, seq_len: int, vocab: int):
        self.n, self.seq_len, self.vocab = n, seq_len, vocab

    def __len__(self) -> int:
        return self.n

    def example(self, i: int) -> Example:
        return Example(np.random.default_rng(i).integers(0, self.vocab, self.seq_len, dtype=np.int64))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(config, device, precision, seq_len, micro, warmup, steps) -> float:
    """tokens/s of forward/backward/AdamW on random tokens."""
    torch.manual_seed(0)
    model = build_model(config, device)
    model.train()
    # The same AdamW kernels as ours (fused on CUDA, foreach on CPU): the comparison is the loop around them.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4,
                            **({"fused": True} if device.type == "cuda" else {"foreach": True}))
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    data = RandomTokens(10_000, seq_len, config.vocab_size)
    t0 = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            t0 = time.perf_counter()
        ids = torch.from_numpy(np.stack([data.example(step * micro + j).ids for j in range(micro)])).to(device)
        with torch.autocast(device.type, dtype=half) if half else torch.autocast(device.type, enabled=False):
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        if scaler:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(device)
    seconds = time.perf_counter() - t0
    del model, opt
    return steps * micro * seq_len / seconds


def our_loop(config, device_pref, seq_len, micro, warmup, steps, flops) -> float:
    """tokens/s of phi1's loop over the steps after warm-up (from its metrics log)."""
    cfg = PretrainConfig(max_steps=warmup + steps, batch_size=micro, micro_batch_size=micro, lr=1e-4,
                         warmup_steps=1, checkpoint_every=10**9, eval_every=10**9, log_every=warmup,
                         humaneval_loss=False, tensorboard=False, device=device_pref)
    with tempfile.TemporaryDirectory(prefix="phi1-bench-") as tmp, distributed_env(device_pref) as env:
        torch.manual_seed(0)
        model = build_model(config, env.device)
        train(model, cfg, env, TrainInputs(RandomTokens(10_000, seq_len, config.vocab_size), pad_id=0),
              work_dir=Path(tmp), seed=0, flops_per_token=flops, name="bench", echo=lambda _m: None)
        records = [json.loads(x) for x in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
        del model
    measured = [r for r in records if r["kind"] == "train" and r["step"] > warmup]
    tokens = steps * micro * seq_len
    seconds = sum((r["step"] - prev) * micro * seq_len / r["tokens_per_s"]
                  for prev, r in zip([warmup] + [m["step"] for m in measured], measured))
    return tokens / seconds


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
    ap.add_argument("--cpu-peak-flops", type=float, default=PretrainConfig().cpu_peak_flops)
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    precision = resolve_precision("auto", device)
    peak = peak_flops(device, precision, PretrainConfig(cpu_peak_flops=args.cpu_peak_flops))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    peak_text = f"peak {peak:.3g} FLOP/s" if peak else "peak unknown (no MFU)"
    print(f"device: {device.type} ({name}), {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{precision}; {peak_text}")
    shapes = GPU_SHAPES if device.type == "cuda" else CPU_SHAPES
    rows = []
    for preset in args.presets:
        vocab, seq_len, micro, steps = shapes[preset]
        seq_len, micro, steps = args.seq_len or seq_len, args.micro_batch or micro, args.steps or steps
        steps = -(-steps // args.warmup) * args.warmup  # whole log intervals
        shape = resolve_shape(ModelConfig(preset=preset), seq_len=seq_len)
        config = phi_config(shape, vocab)
        n = count_params(config)
        flops = flops_per_token(config, seq_len, n["non_embedding"])
        ours_runs, bare_runs = [], []
        for _ in range(args.repeats):
            bare_runs.append(bare_loop(config, device, precision, seq_len, micro, args.warmup, steps))
            ours_runs.append(our_loop(config, args.device, seq_len, micro, args.warmup, steps, flops))
        ours, bare = max(ours_runs), max(bare_runs)
        mfu = (lambda tps: tps * flops / peak if peak else float("nan"))
        row = {"preset": preset, "params": n["total"], "seq_len": seq_len, "micro_batch": micro, "steps": steps,
               "ours_tokens_per_s": round(ours, 1), "bare_tokens_per_s": round(bare, 1),
               "ours_runs": [round(x, 1) for x in ours_runs], "bare_runs": [round(x, 1) for x in bare_runs],
               "ours_mfu": mfu(ours), "bare_mfu": mfu(bare), "ratio": ours / bare,
               "ratio_of_medians": float(np.median(ours_runs) / np.median(bare_runs))}
        rows.append(row)
        print(f"{preset:<12} {n['total'] / 1e6:8.2f}M  seq {seq_len:<5} batch {micro:<3} "
              f"ours {ours:10,.0f} tok/s (MFU {row['ours_mfu']:.1%})   bare {bare:10,.0f} tok/s "
              f"(MFU {row['bare_mfu']:.1%})   ours/bare {row['ratio']:.3f} "
              f"(medians: {row['ratio_of_medians']:.3f})", flush=True)
    print(json.dumps({"device": name, "precision": precision, "results": rows}))


if __name__ == "__main__":
    main()
