"""Training throughput: phi1's loop against a bare eager fp32 loop around the same model.

For each preset, on the available device, both loops in one process, one
step each in turn (so both see the same load of a shared machine):

* ours: the phases `phi1.train.loop.train` runs (`setup`, `train_step`,
  `log`), with the loop's defaults: precision "auto" (bf16 autocast where the
  CPU or GPU multiplies bf16 natively, else fp32), fused AdamW, compile
  "auto" (off for runs this short; ``--compile`` adds a compiled run), LR
  schedule, loss over target tokens, gradient clipping, metrics.jsonl;
* bare: the same transformers PhiForCausalLM (same initial weights) in eager
  fp32: ``forward -> HF loss -> backward -> AdamW step (torch's default) ->
  zero_grad``, nothing else. What a user writes first.

Prints tokens/s (from the median step time after warm-up) and MFU of both,
each against the peak at its own dtype (the GPU table, or this CPU's measured
matmul rate), and ours/bare four ways: of median steps, of the best steps,
the median of step-by-step pairs, and per CPU-second (steadiest when other
processes share the cores).

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
from phi1.train.loop import TrainInputs
from phi1.train.metrics import cpu_name, resolve_peak
from phi1.train.precision import choose_precision

# (vocab, seq_len, micro batch, measured steps)
CPU_SHAPES = {"tiny": (4096, 256, 16, 20), "phi-1-small": (51200, 128, 1, 6), "phi-1": (51200, 128, 1, 4),
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


def interleaved(config, device_pref: str, seq_len: int, micro: int, warmup: int, steps: int, *, precision: str,
                compile: bool | str, cache_dir: Path, repeats: int = 1) -> dict:
    """Both loops in one process, one step each in turn (the first alternating),
    so both see the same machine at the same moments: on a shared machine the
    other processes' load drifts, and runs taken one after the other compare
    different loads. ``repeats`` runs (fresh models each) pool their steps.

    ours: the phases `phi1.train.loop.train` runs (`setup`, then `train_step`
    and `log` every ``log_every`` steps; no evaluation or checkpoint falls in a
    benchmark's steps). bare: eager fp32 ``forward -> HF loss -> backward ->
    AdamW (torch's default) -> zero_grad``, same initial weights.
    """
    cfg = PretrainConfig(max_steps=warmup + steps, batch_size=micro, micro_batch_size=micro, lr=1e-4,
                         warmup_steps=1, checkpoint_every=10**9, eval_every=10**9, log_every=5,
                         humaneval_loss=False, tensorboard=False, device=device_pref, precision=precision,
                         compile=compile)
    data = RandomTokens(10_000, seq_len, config.vocab_size)
    times: dict[str, list[tuple[float, float]]] = {"ours": [], "bare": []}  # (wall, cpu) per measured step
    info: dict = {}
    for _ in range(repeats):
        info = _interleave_once(config, cfg, data, device_pref, micro, warmup, cache_dir, times)
    tokens = micro * seq_len
    out = dict(info)
    for name, t in times.items():
        wall, cpu = np.array([x[0] for x in t]), np.array([x[1] for x in t])
        out[name] = {"tokens_per_s": tokens / float(np.median(wall)), "best_tokens_per_s": tokens / float(wall.min()),
                     "tokens_per_cpu_s": tokens / float(np.median(cpu)), "step_seconds": [round(x, 4) for x in wall]}
    pairs = [b[0] / o[0] for b, o in zip(times["bare"], times["ours"])]
    out["ratio"] = out["ours"]["tokens_per_s"] / out["bare"]["tokens_per_s"]  # of median step times
    out["ratio_of_best"] = out["ours"]["best_tokens_per_s"] / out["bare"]["best_tokens_per_s"]
    out["ratio_cpu"] = out["ours"]["tokens_per_cpu_s"] / out["bare"]["tokens_per_cpu_s"]
    out["ratio_pairs_median"] = float(np.median(pairs))  # step by step, the same moment of the machine
    if out["compiled"]:  # the first step's time beyond a steady one
        out["compile_seconds"] = max(0.0, out["first_step_seconds"] - float(np.median([x[0] for x in times["ours"]])))
    return out


def _interleave_once(config, cfg, data, device_pref: str, micro: int, warmup: int, cache_dir: Path,
                     times: dict[str, list[tuple[float, float]]]) -> dict:
    with tempfile.TemporaryDirectory(prefix="phi1-bench-") as tmp, distributed_env(device_pref) as env:
        device = env.device
        torch.manual_seed(0)
        run = loop.setup(build_model(config, device), cfg, env, TrainInputs(data, pad_id=0), work_dir=Path(tmp),
                         seed=0, flops=model_flops(config), resume=False, select_best=False, tokenizer_dir=None,
                         cache_dir=cache_dir, name="bench", echo=lambda _m: None)
        torch.manual_seed(0)
        bare = build_model(config, device)
        bare.train()
        opt = torch.optim.AdamW(bare.parameters(), lr=1e-4)

        def bare_step(step: int) -> None:
            ids = torch.from_numpy(np.stack([data.example(step * micro + j).ids for j in range(micro)])).to(device)
            loss = bare(input_ids=ids, labels=ids, use_cache=False).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        def our_step(_step: int) -> None:
            loop.train_step(run)
            if run.step % cfg.log_every == 0:
                loop.log(run)

        run.watch.start()
        first = 0.0
        for step in range(cfg.max_steps):
            pair = [("bare", bare_step), ("ours", our_step)]
            for name, fn in (pair if step % 2 else pair[::-1]):
                _sync(device)
                t0, c0 = time.perf_counter(), time.process_time()
                fn(step)
                _sync(device)
                if step >= warmup:
                    times[name].append((time.perf_counter() - t0, time.process_time() - c0))
                elif step == 0 and name == "ours":
                    first = time.perf_counter() - t0  # compiling happens here
        run.watch.stop()
        run.log.close()
        info = {"precision": run.precision.name, "precision_reason": run.precision.reason,
                "compiled": run.compiled, "compile_reason": run.compile_reason, "peak": run.peak.flops,
                "first_step_seconds": first}
    return info


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
    ap.add_argument("--repeats", type=int, default=1, help="interleaved runs (fresh models); their steps are pooled")
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
        config = phi_config(resolve_shape(ModelConfig(preset=preset), seq_len=seq_len), vocab)
        n = count_params(config)
        flops = model_flops(config, n["non_embedding"]).per_token(seq_len)
        r = interleaved(config, args.device, seq_len, micro, args.warmup, steps, precision=args.precision,
                        compile="auto", cache_dir=cache, repeats=args.repeats)

        def mfu(tps: float, peak) -> float:
            return tps * flops / peak.flops if peak.flops else float("nan")

        ours, bare = r["ours"]["tokens_per_s"], r["bare"]["tokens_per_s"]
        row = {"preset": preset, "params": n["total"], "seq_len": seq_len, "micro_batch": micro, "steps": steps,
               "ours_precision": r["precision"], "ours_compiled": r["compiled"],
               "ours_tokens_per_s": round(ours, 1), "bare_tokens_per_s": round(bare, 1),
               "ours_mfu": mfu(ours, peak_ours), "bare_mfu": mfu(bare, peak_bare), "ratio": r["ratio"],
               "ratio_of_best": r["ratio_of_best"], "ratio_pairs_median": r["ratio_pairs_median"],
               "ratio_cpu": r["ratio_cpu"], "ours_steps_s": r["ours"]["step_seconds"],
               "bare_steps_s": r["bare"]["step_seconds"]}
        line = (f"{preset:<12} {n['total'] / 1e6:8.2f}M  seq {seq_len:<5} batch {micro:<3} "
                f"ours ({r['precision']}) {ours:10,.0f} tok/s (MFU {row['ours_mfu']:.1%})   "
                f"bare (fp32) {bare:10,.0f} tok/s (MFU {row['bare_mfu']:.1%})   ours/bare {row['ratio']:.2f}x "
                f"(best steps {row['ratio_of_best']:.2f}x; step pairs {row['ratio_pairs_median']:.2f}x; "
                f"per CPU-second {row['ratio_cpu']:.2f}x)")
        if args.compile:
            comp = interleaved(config, args.device, seq_len, micro, args.warmup, steps, precision=args.precision,
                               compile=True, cache_dir=cache)
            row.update(compiled_tokens_per_s=round(comp["ours"]["tokens_per_s"], 1),
                       compiled_ratio=comp["ratio"], compiled_reason=comp["compile_reason"],
                       compile_seconds=comp["compile_seconds"])
            line += (f"   ours+compile {comp['ours']['tokens_per_s']:10,.0f} tok/s ({comp['ratio']:.2f}x; compiling took "
                     f"{comp['compile_seconds']:.0f}s)")
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
