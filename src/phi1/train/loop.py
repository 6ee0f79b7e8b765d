"""The training loop, shared by `pretrain` and `finetune`.

Plain PyTorch, one process per device, read top to bottom:

    for step in range(start, max_steps):
        set the learning rate of this step (warmup, then decay)
        this rank's slice of global batch `step`, in micro-batches
        forward + backward each micro-batch (gradients sync on the last one)
        clip the global gradient norm, AdamW step
        every log_every: loss, lr, grad norm, tokens/s, MFU -> metrics.jsonl
        every eval_every: validation loss, HumanEval-solution loss
        every checkpoint_every: checkpoint (model, optimizer, RNG, step)

The loss of a step is the mean over every target token of the global batch,
whatever the split into ranks and micro-batches: each micro-batch
contributes ``sum of its token losses * world / (targets in the global
batch)``, and DDP/FSDP average gradients over ranks. So one process with
accumulation and N ranks compute the same update, and exercises of uneven
length weigh by their tokens.
"""

from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from phi1.errors import Phi1Error
from phi1.train.checkpoint import (
    CHECKPOINTS,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    reseed,
    save_checkpoint,
    step_dir,
)
from phi1.train.data import IGNORE, ExampleSource, GlobalBatchSampler, collate, micro_batches
from phi1.train.distributed import DistEnv, Parallelized, all_reduce_sum, broadcast_object, parallelize
from phi1.train.humaneval_loss import METRIC as HUMANEVAL
from phi1.train.metrics import MetricsLog, Stopwatch, mfu, peak_flops
from phi1.train.optim import LRSchedule, build_optimizer, set_lr


@dataclass
class TrainInputs:
    train: ExampleSource
    pad_id: int
    val: ExampleSource | None = None  # the fixed validation sample
    humaneval: ExampleSource | None = None


@dataclass
class TrainOutcome:
    step: int
    final_checkpoint: Path
    best_checkpoint: Path | None
    best: dict[str, Any] | None
    evals: list[dict[str, Any]]
    train_loss: float | None
    tokens: int
    train_seconds: float
    precision: str
    parallel: str
    peak_flops: float | None
    flops_per_token: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds > 0 else 0.0

    def first_eval(self) -> dict[str, Any]:
        return self.evals[0] if self.evals else {}

    def last_eval(self) -> dict[str, Any]:
        return self.evals[-1] if self.evals else {}


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision != "auto":
        if device.type == "cpu" and precision == "fp16":
            raise Phi1Error("precision = 'fp16' needs a GPU; use fp32 or bf16 on CPU")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of next-token cross-entropies over target positions (fp32).

    The labels are shifted, not the logits: slicing ``logits[:, :-1]`` would
    copy the largest tensor of the step ([batch, seq, vocab]).
    """
    vocab = logits.size(-1)
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE)
    return F.cross_entropy(logits.float().reshape(-1, vocab), targets.reshape(-1), ignore_index=IGNORE,
                           reduction="sum")


class _Interval:
    """Sums over the steps since the last log line, kept on the device so the
    loop never waits for the GPU except when it logs or checkpoints."""

    def __init__(self, device: torch.device):
        self.t = torch.zeros(5, dtype=torch.float64, device=device)  # loss, targets, tokens, gnorm, steps

    def add(self, local_loss: torch.Tensor, counts: torch.Tensor, gnorm: torch.Tensor) -> None:
        self.t[0] += local_loss.double()
        self.t[1:3] += counts.to(self.t.device, torch.float64)
        self.t[3] += gnorm.double()
        self.t[4] += 1

    def global_values(self, env: DistEnv) -> list[float]:
        """(loss sum over all ranks, targets, tokens, grad-norm sum, steps)."""
        t = self.t.clone()
        t[0] = all_reduce_sum(t[0:1].clone(), env)[0]
        return t.tolist()

    def load(self, values: list[float], env: DistEnv) -> None:
        self.t = torch.tensor(values, dtype=torch.float64, device=self.t.device)
        if not env.is_main:  # the saved loss is the all-rank sum: count it once
            self.t[0] = 0.0

    def reset(self) -> None:
        self.t.zero_()


@torch.no_grad()
def evaluate(parallel: Parallelized, source: ExampleSource, micro_batch_size: int, pad_id: int,
             env: DistEnv, autocast: Callable[[], Any]) -> float | None:
    """Token-weighted mean loss over ``source``, its batches spread over ranks.

    Every rank runs the same number of forwards (FSDP gathers weights
    collectively), padding with zero-weight batches.
    """
    n = len(source)
    if n == 0:
        return None
    order = sorted(range(n), key=lambda i: len(source.example(i).ids))  # less padding
    chunks = [order[k:k + micro_batch_size] for k in range(0, n, micro_batch_size)]
    mine = chunks[env.rank::env.world_size]
    rounds = math.ceil(len(chunks) / env.world_size)
    model = parallel.model
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=env.device)
    for r in range(rounds):
        idx = mine[r] if r < len(mine) else chunks[0]
        b = collate([source.example(i) for i in idx], pad_id).to(env.device)
        with autocast():
            logits = model(input_ids=b.input_ids, use_cache=False).logits
        if r < len(mine):
            total[0] += token_loss_sum(logits, b.labels).double()
            total[1] += b.n_targets
    all_reduce_sum(total, env)
    model.train(was_training)
    return (total[0] / total[1]).item() if total[1] > 0 else None


def train(
    model: torch.nn.Module,
    cfg: Any,
    env: DistEnv,
    inputs: TrainInputs,
    *,
    work_dir: Path,
    seed: int,
    flops_per_token: float,
    resume: bool = False,
    select_best: bool = False,
    tokenizer_dir: Path | None = None,
    name: str = "train",
    echo: Callable[[str], None] = print,
) -> TrainOutcome:
    """Train ``model`` (a plain PhiForCausalLM on ``env.device``) for ``cfg.max_steps``.

    ``resume``: continue from the newest checkpoint under ``work_dir`` (rank 0
    decides). ``select_best``: evaluate at every checkpoint and keep the one
    with the lowest validation loss (finetune). Collective: every rank calls it.
    """
    say = echo if env.is_main else (lambda _msg: None)
    world = env.world_size
    if cfg.batch_size % (cfg.micro_batch_size * world):
        raise Phi1Error(f"{name}.batch_size = {cfg.batch_size} must be a multiple of micro_batch_size x ranks "
                        f"= {cfg.micro_batch_size} x {world}")
    accum = cfg.batch_size // (cfg.micro_batch_size * world)
    precision = resolve_precision(cfg.precision, env.device)
    use_fsdp = cfg.parallel == "fsdp" and world > 1
    if precision == "fp16" and use_fsdp:
        raise Phi1Error(f"{name}: fp16 with parallel = 'fsdp' is not supported; use bf16 (or ddp)")
    if env.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    # FSDP casts weights to bf16 itself (MixedPrecisionPolicy); otherwise autocast does.
    parallel = parallelize(model, env, cfg, param_dtype=half if use_fsdp else None)

    def autocast() -> Any:
        if half is None or use_fsdp:
            return contextlib.nullcontext()
        return torch.autocast(env.device.type, dtype=half)

    optimizer = build_optimizer(parallel.model, cfg, env.device.type)
    scaler = torch.amp.GradScaler(env.device.type) if precision == "fp16" else None
    schedule = LRSchedule.from_config(cfg)
    ckpt_root = Path(work_dir) / CHECKPOINTS
    log = MetricsLog(Path(work_dir), enabled=env.is_main, tensorboard=cfg.tensorboard)
    peak = peak_flops(env.device, precision, cfg)
    interval = _Interval(env.device)

    state: dict[str, Any] = {"step": 0, "seed": seed, "evals": [], "best": None, "tokens": 0,
                             "train_seconds": 0.0, "interval": [0.0] * 5, "last_train_loss": None}
    start_from = broadcast_object(str(latest_checkpoint(ckpt_root) or "") if resume and env.is_main else "", env)
    if start_from:
        state = load_checkpoint(Path(start_from), parallel, optimizer, env)
        interval.load(state["interval"], env)
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        log.truncate_after(state["step"])
        say(f"resumed from {start_from} (step {state['step']})")
    else:
        reseed(seed, env.rank)
        log.truncate_after(-1)
    say(f"{name}: {cfg.max_steps} steps of {cfg.batch_size} sequences = {cfg.micro_batch_size} x {accum} "
        f"accumulation x {world} rank(s); {precision}, {parallel.kind} on {env.device.type}"
        f"{', compiled' if cfg.compile else ''}{', activation checkpointing' if cfg.activation_checkpointing else ''}")

    sampler = GlobalBatchSampler(len(inputs.train), cfg.batch_size, seed)
    fixed = bool(getattr(inputs.train, "fixed_length", False))
    pin = env.device.type == "cuda"
    params = [p for p in parallel.model.parameters() if p.requires_grad]
    clip = cfg.grad_clip if cfg.grad_clip > 0 else math.inf

    def run_eval(step: int) -> dict[str, Any]:
        rec: dict[str, Any] = {"step": step, "kind": "eval"}
        if inputs.val is not None and len(inputs.val):
            rec["val_loss"] = evaluate(parallel, inputs.val, cfg.micro_batch_size, inputs.pad_id, env, autocast)
        if inputs.humaneval is not None and len(inputs.humaneval):
            rec[HUMANEVAL] = evaluate(parallel, inputs.humaneval, cfg.micro_batch_size, inputs.pad_id, env,
                                      autocast)
        state["evals"].append(rec)
        log.write(rec)
        say(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in rec.items()
                                          if k not in ("step", "kind") and v is not None))
        return rec

    step = int(state["step"])
    if step == 0 and not state["evals"]:
        run_eval(0)  # before any training: the baseline of every curve

    bar = _progress(env, cfg.max_steps, step, name)
    trained_before = float(state["train_seconds"])
    watch = Stopwatch()  # training time of this process; evaluation and checkpoints paused out
    watch.start()
    interval_started = -float(state.get("interval_seconds", 0.0))
    parallel.forward_module.train()
    while step < cfg.max_steps:
        lr = schedule(step)
        set_lr(optimizer, lr)
        batches = micro_batches(inputs.train, sampler.local_batch(step, env.rank, world), cfg.micro_batch_size,
                                inputs.pad_id, pin=pin)
        counts = torch.tensor([sum(b.n_targets for b in batches), sum(b.n_tokens for b in batches)],
                              dtype=torch.float64)
        if fixed:  # every rank holds the same number of full rows: no need to ask the others
            counts = counts * world
            scale: Any = world / float(counts[0])
            counts = _to_device(counts, env.device)
        else:
            counts = all_reduce_sum(_to_device(counts, env.device), env)
            scale = world / counts[0].float()
        local_loss = torch.zeros((), dtype=torch.float32, device=env.device)
        for j, b in enumerate(batches):
            b = b.to(env.device)
            with parallel.no_grad_sync(j < len(batches) - 1):
                with autocast():
                    logits = parallel.forward_module(input_ids=b.input_ids, use_cache=False).logits
                loss_sum = token_loss_sum(logits, b.labels)
                loss = loss_sum * scale
                (scaler.scale(loss) if scaler is not None else loss).backward()
            local_loss += loss_sum.detach()
            del logits, loss
        if scaler is not None:
            scaler.unscale_(optimizer)
        gnorm = torch.nn.utils.clip_grad_norm_(params, clip)
        if hasattr(gnorm, "full_tensor"):  # FSDP: a DTensor
            gnorm = gnorm.full_tensor()
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        interval.add(local_loss, counts, gnorm)
        step += 1
        if bar is not None:
            bar.update(1)

        if step % cfg.log_every == 0 or step == cfg.max_steps:
            loss_sum_all, targets, tokens, gnorm_sum, n = interval.global_values(env)
            seconds = max(watch.read() - interval_started, 1e-9)
            tps = tokens / seconds
            rec = {"step": step, "kind": "train", "loss": loss_sum_all / max(targets, 1), "lr": lr,
                   "grad_norm": gnorm_sum / max(n, 1), "tokens_per_s": tps,
                   "mfu": mfu(tps / world, flops_per_token, peak), "epoch": sampler.epoch_of(step),
                   "tokens": int(state["tokens"] + tokens)}
            log.write(rec)
            state["tokens"] += int(tokens)
            state["last_train_loss"] = rec["loss"]
            interval.reset()
            interval_started = watch.read()
            if bar is not None:
                bar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{lr:.2e}", tok_s=f"{tps:,.0f}", refresh=False)

        ckpt_due = step % cfg.checkpoint_every == 0 or step == cfg.max_steps
        eval_due = step % cfg.eval_every == 0 or step == cfg.max_steps or (select_best and ckpt_due)
        if not (ckpt_due or eval_due):
            continue
        watch.stop()
        rec = run_eval(step) if eval_due else {}
        if ckpt_due:
            if select_best and _better(rec.get("val_loss"), state["best"]):
                state["best"] = {"step": step, "val_loss": rec.get("val_loss"), HUMANEVAL: rec.get(HUMANEVAL)}
            state["step"] = step
            state["interval"] = interval.global_values(env)
            state["interval_seconds"] = watch.read() - interval_started
            state["train_seconds"] = trained_before + watch.read()
            if scaler is not None:
                state["scaler"] = scaler.state_dict()
            save_checkpoint(ckpt_root, step, parallel, optimizer, state, env, tokenizer_dir)
            if env.is_main:
                keep = {state["best"]["step"]} if state.get("best") else set()
                prune_checkpoints(ckpt_root, cfg.keep_checkpoints, keep)
        watch.start()
    if bar is not None:
        bar.close()
    state["train_seconds"] = trained_before + watch.stop()
    log.close()

    best = state.get("best")
    return TrainOutcome(
        step=step,
        final_checkpoint=step_dir(ckpt_root, cfg.max_steps),
        best_checkpoint=step_dir(ckpt_root, best["step"]) if best else None,
        best=best,
        evals=list(state["evals"]),
        train_loss=state.get("last_train_loss"),
        tokens=int(state["tokens"]),
        train_seconds=float(state["train_seconds"]),
        precision=precision,
        parallel=parallel.kind,
        peak_flops=peak,
        flops_per_token=flops_per_token,
    )


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host-to-GPU copy that does not make the host wait for the GPU's queue."""
    if device.type != "cuda":
        return t
    return t.pin_memory().to(device, non_blocking=True)


def _better(val: float | None, best: dict[str, Any] | None) -> bool:
    """Is a checkpoint with validation loss ``val`` better than ``best``?
    Without validation data the newest checkpoint wins."""
    if best is None:
        return True
    if val is None:
        return best.get("val_loss") is None
    return best.get("val_loss") is None or val < best["val_loss"]


def _progress(env: DistEnv, total: int, initial: int, name: str) -> Any:
    if not env.is_main:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=name, unit="step", file=sys.stderr, dynamic_ncols=True,
                mininterval=1.0)
