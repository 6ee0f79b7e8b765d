"""The training loop, shared by `pretrain` and `finetune`.

Plain PyTorch, one process per device. `train` reads top to bottom as its
phases (each a function below, in this order):

    run = setup(...)            precision, compile, DDP/FSDP2, AdamW, schedule, peak FLOP/s,
                                resume from the newest checkpoint (or seed a fresh start)
    evaluate(run)               step 0: the baseline of every curve
    while run.step < max_steps:
        train_step(run)         this rank's slice of global batch `step` in micro-batches,
                                forward + backward (gradients sync on the last), clip, AdamW
        log(run)                every log_every: loss, lr, grad norm, tokens/s, MFU -> metrics.jsonl
        evaluate(run)           every eval_every: validation loss, HumanEval-solution loss
        checkpoint(run)         every checkpoint_every: model, optimizer, RNG, step
    finish(run)

The loss of a step is the mean over every target token of the global batch,
whatever the split into ranks and micro-batches: each micro-batch
contributes ``sum of its token losses * world / (targets in the global
batch)``, and DDP/FSDP average gradients over ranks. So one process with
accumulation and N ranks compute the same update, and exercises of uneven
length weigh by their tokens.

Throughput counts real tokens only: padding is computed but never counted,
in tokens/s or in MFU (`phi1.train.metrics`).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from phi1.errors import Phi1Error
from phi1.model.presets import ModelFlops
from phi1.train.checkpoint import (
    CHECKPOINTS,
    checkpoint_format,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    reseed,
    save_checkpoint,
    step_dir,
)
from phi1.train.compiling import compile_decision
from phi1.train.data import ExampleSource, GlobalBatchSampler, collate, micro_batches
from phi1.train.distributed import DistEnv, Parallelized, all_reduce_sum, broadcast_object, parallelize
from phi1.train.humaneval_loss import METRIC as HUMANEVAL
from phi1.train.lm_loss import loss_sum
from phi1.train.metrics import MetricsLog, Peak, Stopwatch, mfu, resolve_peak
from phi1.train.optim import LRSchedule, build_optimizer, set_lr
from phi1.train.precision import Precision, choose_precision


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
    tokens: int  # real (non-padding) tokens trained on, all ranks
    positions: int  # positions computed, padding included
    model_flops: float  # model FLOPs of those tokens, all ranks (phi1.model.presets.ModelFlops)
    train_seconds: float
    world_size: int
    precision: Precision
    parallel: str
    peak: Peak
    compiled: bool
    compile_reason: str
    compile_seconds: float | None
    checkpoint_format: str

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds > 0 else 0.0

    @property
    def mfu(self) -> float | None:
        if self.train_seconds <= 0:
            return None
        return mfu(self.model_flops / self.train_seconds / self.world_size, self.peak.flops)

    @property
    def padding_share(self) -> float:
        return 1.0 - self.tokens / self.positions if self.positions else 0.0

    def first_eval(self) -> dict[str, Any]:
        return self.evals[0] if self.evals else {}

    def last_eval(self) -> dict[str, Any]:
        return self.evals[-1] if self.evals else {}


# Sums kept on the device between log lines, so the loop never waits for the
# GPU except when it logs or checkpoints. The loss is this rank's; the counts
# are already global (all ranks).
LOSS, TARGETS, TOKENS, SQ_TOKENS, POSITIONS, GNORM, STEPS = range(7)


@dataclass
class Run:
    """Everything the phases share. ``state`` is what a checkpoint saves
    (``trainer.json``) and a resumed run continues from."""

    cfg: Any
    env: DistEnv
    inputs: TrainInputs
    name: str
    say: Callable[[str], None]
    parallel: Parallelized
    params: list[torch.nn.Parameter]  # the trainable ones: gradient clipping
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    schedule: LRSchedule
    precision: Precision
    autocast: Callable[[], Any]
    peak: Peak
    flops: ModelFlops
    compiled: bool
    compile_reason: str
    ckpt_root: Path
    ckpt_format: str
    tokenizer_dir: Path | None
    select_best: bool
    log: MetricsLog
    sampler: GlobalBatchSampler
    state: dict[str, Any]
    interval: torch.Tensor
    watch: Stopwatch = field(default_factory=Stopwatch)  # training time of this process
    trained_before: float = 0.0  # training seconds of earlier attempts (resumed)
    interval_started: float = 0.0  # watch reading at the last log line
    step_times: list[float] = field(default_factory=list)  # the first steps of this process (compile time)
    lr: float = 0.0
    bar: Any = None

    @property
    def step(self) -> int:
        return int(self.state["step"])


def train(
    model: torch.nn.Module,
    cfg: Any,
    env: DistEnv,
    inputs: TrainInputs,
    *,
    work_dir: Path,
    seed: int,
    flops: ModelFlops,
    resume: bool = False,
    select_best: bool = False,
    tokenizer_dir: Path | None = None,
    cache_dir: Path | None = None,
    name: str = "train",
    echo: Callable[[str], None] = print,
) -> TrainOutcome:
    """Train ``model`` (a plain PhiForCausalLM on ``env.device``) for ``cfg.max_steps``.

    ``resume``: continue from the newest checkpoint under ``work_dir`` (rank 0
    decides). ``select_best``: evaluate at every checkpoint and keep the one
    with the lowest validation loss (finetune). ``cache_dir``: where the CPU
    peak-FLOP/s calibration is cached. Collective: every rank calls it.
    """
    run = setup(model, cfg, env, inputs, work_dir=Path(work_dir), seed=seed, flops=flops, resume=resume,
                select_best=select_best, tokenizer_dir=tokenizer_dir, cache_dir=cache_dir, name=name, echo=echo)
    if run.step == 0 and not run.state["evals"]:
        evaluate(run)  # before any training: the baseline of every curve
    run.bar = _progress(env, cfg.max_steps, run.step, name)
    run.watch.start()
    while run.step < cfg.max_steps:
        train_step(run)
        last = run.step == cfg.max_steps
        if run.step % cfg.log_every == 0 or last:
            log(run)
        ckpt_due = run.step % cfg.checkpoint_every == 0 or last
        eval_due = run.step % cfg.eval_every == 0 or last or (select_best and ckpt_due)
        if eval_due or ckpt_due:
            run.watch.stop()  # evaluation and checkpoints are not training time
            record = evaluate(run) if eval_due else {}
            if ckpt_due:
                checkpoint(run, record)
            run.watch.start()
    return finish(run)


# --------------------------------------------------------------------------- setup


def setup(model: torch.nn.Module, cfg: Any, env: DistEnv, inputs: TrainInputs, *, work_dir: Path, seed: int,
          flops: ModelFlops, resume: bool, select_best: bool, tokenizer_dir: Path | None, cache_dir: Path | None,
          name: str, echo: Callable[[str], None]) -> Run:
    """Everything before the first step: precision, the compile decision,
    parallelism, optimizer, schedule, peak FLOP/s, and the state to start
    from (the newest checkpoint, or a freshly seeded start)."""
    say = echo if env.is_main else (lambda _msg: None)
    world = env.world_size
    if cfg.batch_size % (cfg.micro_batch_size * world):
        raise Phi1Error(f"{name}.batch_size = {cfg.batch_size} must be a multiple of micro_batch_size x ranks "
                        f"= {cfg.micro_batch_size} x {world}")
    accum = cfg.batch_size // (cfg.micro_batch_size * world)
    precision = choose_precision(cfg.precision, env.device, key=f"{name}.precision")
    use_fsdp = cfg.parallel == "fsdp" and (world > 1 or torch.distributed.is_initialized())
    if precision.name == "fp16" and use_fsdp:
        raise Phi1Error(f"{name}: fp16 with parallel = 'fsdp' is not supported; use bf16 (or ddp)")
    if env.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # Rank 0 measures (CPU) or looks up (GPU) the peak; every rank uses the same.
    peak = broadcast_object(resolve_peak(env.device, precision.name, cfg.peak_flops, cache_dir)
                            if env.is_main else None, env)
    ckpt_root = work_dir / CHECKPOINTS
    start_from = broadcast_object(str(latest_checkpoint(ckpt_root) or "") if resume and env.is_main else "", env)
    start_step = _checkpoint_step(start_from)
    step_flops = flops.of_rows(*_step_tokens(inputs.train, cfg.batch_size)) / world
    compiled, compile_reason = compile_decision(cfg.compile, device_type=env.device.type,
                                                remaining_steps=cfg.max_steps - start_step,
                                                step_flops=step_flops, peak_flops=peak.flops)

    # FSDP casts weights to the half dtype itself (MixedPrecisionPolicy); otherwise autocast does.
    parallel = parallelize(model, env, cfg, param_dtype=precision.half if use_fsdp else None, compile=compiled)

    def autocast() -> Any:
        return precision.autocast(env.device, enabled=not use_fsdp)

    optimizer = build_optimizer(parallel.model, cfg)
    log_ = MetricsLog(work_dir, enabled=env.is_main, tensorboard=cfg.tensorboard)
    interval = torch.zeros(7, dtype=torch.float64, device=env.device)
    state: dict[str, Any] = {"step": 0, "seed": seed, "evals": [], "best": None, "tokens": 0, "positions": 0,
                             "model_flops": 0.0, "train_seconds": 0.0, "interval": [0.0] * 7,
                             "interval_seconds": 0.0, "last_train_loss": None}
    run = Run(cfg=cfg, env=env, inputs=inputs, name=name, say=say, parallel=parallel,
              params=[p for p in parallel.model.parameters() if p.requires_grad], optimizer=optimizer,
              scaler=torch.amp.GradScaler(env.device.type) if precision.name == "fp16" else None,
              schedule=LRSchedule.from_config(cfg), precision=precision, autocast=autocast, peak=peak, flops=flops,
              compiled=compiled, compile_reason=compile_reason, ckpt_root=ckpt_root,
              ckpt_format=checkpoint_format(cfg.checkpoint_format, parallel.kind), tokenizer_dir=tokenizer_dir,
              select_best=select_best, log=log_, sampler=GlobalBatchSampler(len(inputs.train), cfg.batch_size, seed),
              state=state, interval=interval)
    if start_from:
        _restore(run, Path(start_from))
    else:
        reseed(seed, env.rank)
        log_.truncate_after(-1)
    say(f"{name}: {cfg.max_steps} steps of {cfg.batch_size} sequences = {cfg.micro_batch_size} x {accum} "
        f"accumulation x {world} rank(s); {precision.name}, {parallel.kind} on {env.device.type}"
        f"{', compiled' if compiled else ''}{', activation checkpointing' if cfg.activation_checkpointing else ''}")
    say(f"precision {precision.name} ({precision.reason}); compile {'on' if compiled else 'off'} ({compile_reason}); "
        f"MFU against {peak.label()}")
    parallel.forward_module.train()
    return run


def _restore(run: Run, ckpt: Path) -> None:
    state = load_checkpoint(ckpt, run.parallel, run.optimizer, run.env)
    run.state.update(state)
    values = torch.tensor(run.state["interval"], dtype=torch.float64, device=run.env.device)
    if not run.env.is_main:  # the saved loss is the all-rank sum: count it once
        values[LOSS] = 0.0
    run.interval = values
    run.trained_before = float(run.state["train_seconds"])
    run.interval_started = -float(run.state.get("interval_seconds", 0.0))
    if run.scaler is not None and run.state.get("scaler"):
        run.scaler.load_state_dict(run.state["scaler"])
    run.log.truncate_after(run.step)
    run.say(f"resumed from {ckpt} (step {run.step})")


def _checkpoint_step(path: str) -> int:
    return int(Path(path).name.removeprefix("step-")) if path else 0


def _step_tokens(source: ExampleSource, batch_size: int) -> tuple[float, float]:
    """(real tokens, sum of squared row lengths) of a typical global batch: for
    estimating a step's FLOPs before training (`phi1.train.compiling`)."""
    n = min(len(source), 64)
    lengths = [len(source.example(i).ids) for i in range(n)] if n else [0]
    mean, mean_sq = sum(lengths) / len(lengths), sum(x * x for x in lengths) / len(lengths)
    return batch_size * mean, batch_size * mean_sq


# --------------------------------------------------------------------------- step


def train_step(run: Run) -> None:
    """One optimizer step on global batch ``run.step``."""
    cfg, env, inputs = run.cfg, run.env, run.inputs
    world = env.world_size
    first_steps = len(run.step_times) < 4  # timed with a device sync: compile time, warm-up
    if first_steps:
        _sync(env.device)
        t0 = time.perf_counter()
    run.lr = run.schedule(run.step)
    set_lr(run.optimizer, run.lr)
    batches = micro_batches(inputs.train, run.sampler.local_batch(run.step, env.rank, world), cfg.micro_batch_size,
                            inputs.pad_id, pin=env.device.type == "cuda")
    counts = torch.tensor([sum(b.n_targets for b in batches), sum(b.n_tokens for b in batches),
                           sum(b.sq_tokens for b in batches), sum(b.n_positions for b in batches)],
                          dtype=torch.float64)
    if getattr(inputs.train, "uniform_targets", False):
        # Every rank holds the same number of full, unmasked rows: no need to ask the others.
        counts = counts * world
        scale: Any = world / float(counts[0])
        counts = _to_device(counts, env.device)
    else:
        counts = all_reduce_sum(_to_device(counts, env.device), env)
        scale = world / counts[0].float()
    local_loss = torch.zeros((), dtype=torch.float32, device=env.device)
    model = run.parallel.forward_module
    for j, b in enumerate(batches):
        b = b.to(env.device)
        with run.parallel.no_grad_sync(j < len(batches) - 1):
            with run.autocast():
                # The LM head is deferred (`phi1.train.lm_loss`): the model returns its final
                # hidden states and the loss applies the head a chunk at a time.
                hidden = model(input_ids=b.input_ids, use_cache=False).logits
                loss_sum = token_loss_sum(hidden, b.labels, run.parallel.model.lm_head)
            loss = loss_sum * scale
            (run.scaler.scale(loss) if run.scaler is not None else loss).backward()
        local_loss += loss_sum.detach()
        del hidden, loss
    if run.scaler is not None:
        run.scaler.unscale_(run.optimizer)
    gnorm = torch.nn.utils.clip_grad_norm_(run.params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
    if hasattr(gnorm, "full_tensor"):  # FSDP: a DTensor
        gnorm = gnorm.full_tensor()
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.interval[LOSS] += local_loss.double()
    run.interval[TARGETS:GNORM] += counts
    run.interval[GNORM] += gnorm.double()
    run.interval[STEPS] += 1
    run.state["step"] += 1
    if first_steps:
        _sync(env.device)
        run.step_times.append(time.perf_counter() - t0)
    if run.bar is not None:
        run.bar.update(1)


def token_loss_sum(hidden: torch.Tensor, labels: torch.Tensor, head: torch.nn.Module) -> torch.Tensor:
    """Sum of next-token cross-entropies over target positions (fp32), from
    the model's final hidden states and its deferred LM head
    (`phi1.train.lm_loss`: no full logits tensor, forward or backward)."""
    return loss_sum(hidden, labels, head)


# --------------------------------------------------------------------------- log


def log(run: Run) -> None:
    """One metrics.jsonl line for the steps since the last one (all ranks' sums)."""
    values = _global_interval(run)
    seconds = max(run.watch.read() - run.interval_started, 1e-9)
    tokens, positions = values[TOKENS], values[POSITIONS]
    interval_flops = run.flops.of_rows(tokens, values[SQ_TOKENS])
    tps = tokens / seconds
    record = {"step": run.step, "kind": "train", "loss": values[LOSS] / max(values[TARGETS], 1), "lr": run.lr,
              "grad_norm": values[GNORM] / max(values[STEPS], 1), "tokens_per_s": tps,
              "mfu": mfu(interval_flops / seconds / run.env.world_size, run.peak.flops),
              "padding": 1.0 - tokens / positions if positions else 0.0,
              "epoch": run.sampler.epoch_of(run.step), "tokens": int(run.state["tokens"] + tokens)}
    run.log.write(record)
    run.state["tokens"] += int(tokens)
    run.state["positions"] += int(positions)
    run.state["model_flops"] += interval_flops
    run.state["last_train_loss"] = record["loss"]
    run.interval.zero_()
    run.interval_started = run.watch.read()
    if run.bar is not None:
        run.bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{run.lr:.2e}", tok_s=f"{tps:,.0f}", refresh=False)


def _global_interval(run: Run) -> list[float]:
    values = run.interval.clone()
    values[LOSS] = all_reduce_sum(values[LOSS:LOSS + 1].clone(), run.env)[0]
    return values.tolist()


# --------------------------------------------------------------------------- evaluate


def evaluate(run: Run) -> dict[str, Any]:
    """Validation loss and HumanEval-solution loss at ``run.step``, logged."""
    cfg, inputs = run.cfg, run.inputs
    record: dict[str, Any] = {"step": run.step, "kind": "eval"}
    for key, source in (("val_loss", inputs.val), (HUMANEVAL, inputs.humaneval if cfg.humaneval_loss else None)):
        if source is not None and len(source):
            record[key] = mean_loss(run.parallel, source, cfg.micro_batch_size, inputs.pad_id, run.env, run.autocast)
    run.state["evals"].append(record)
    run.log.write(record)
    measured = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k not in ("step", "kind") and v is not None)
    if measured:
        run.say(f"step {run.step}: {measured}")
    return record


@torch.no_grad()
def mean_loss(parallel: Parallelized, source: ExampleSource, micro_batch_size: int, pad_id: int, env: DistEnv,
              autocast: Callable[[], Any]) -> float | None:
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
            hidden = model(input_ids=b.input_ids, use_cache=False).logits  # the head is deferred
            loss = token_loss_sum(hidden, b.labels, model.lm_head)
        if r < len(mine):
            total[0] += loss.double()
            total[1] += b.n_targets
    all_reduce_sum(total, env)
    model.train(was_training)
    return (total[0] / total[1]).item() if total[1] > 0 else None


# --------------------------------------------------------------------------- checkpoint


def checkpoint(run: Run, record: dict[str, Any]) -> None:
    """Save the model, optimizer, RNG and trainer state at ``run.step``; keep
    the newest ``keep_checkpoints`` (and, finetuning, the best so far)."""
    state = run.state
    if run.select_best and _better(record.get("val_loss"), state["best"]):
        state["best"] = {"step": run.step, "val_loss": record.get("val_loss"), HUMANEVAL: record.get(HUMANEVAL)}
    state["interval"] = _global_interval(run)
    state["interval_seconds"] = run.watch.read() - run.interval_started
    state["train_seconds"] = run.trained_before + run.watch.read()
    if run.scaler is not None:
        state["scaler"] = run.scaler.state_dict()
    save_checkpoint(run.ckpt_root, run.step, run.parallel, run.optimizer, state, run.env, run.tokenizer_dir,
                    run.ckpt_format)
    if run.env.is_main:
        keep = {state["best"]["step"]} if state.get("best") else set()
        prune_checkpoints(run.ckpt_root, run.cfg.keep_checkpoints, keep)


def _better(val: float | None, best: dict[str, Any] | None) -> bool:
    """Is a checkpoint with validation loss ``val`` better than ``best``?
    Without validation data the newest checkpoint wins."""
    if best is None:
        return True
    if val is None:
        return best.get("val_loss") is None
    return best.get("val_loss") is None or val < best["val_loss"]


# --------------------------------------------------------------------------- finish


def finish(run: Run) -> TrainOutcome:
    if run.bar is not None:
        run.bar.close()
    state = run.state
    state["train_seconds"] = run.trained_before + run.watch.stop()
    run.log.close()
    best = state.get("best")
    times = run.step_times
    compile_seconds = max(0.0, times[0] - min(times[1:])) if run.compiled and len(times) >= 2 else None
    return TrainOutcome(
        step=run.step,
        final_checkpoint=step_dir(run.ckpt_root, run.cfg.max_steps),
        best_checkpoint=step_dir(run.ckpt_root, best["step"]) if best else None,
        best=best,
        evals=list(state["evals"]),
        train_loss=state.get("last_train_loss"),
        tokens=int(state["tokens"]),
        positions=int(state.get("positions", 0)),
        model_flops=float(state.get("model_flops", 0.0)),
        train_seconds=float(state["train_seconds"]),
        world_size=run.env.world_size,
        precision=run.precision,
        parallel=run.parallel.kind,
        peak=run.peak,
        compiled=run.compiled,
        compile_reason=run.compile_reason,
        compile_seconds=compile_seconds,
        checkpoint_format=run.ckpt_format,
    )


# --------------------------------------------------------------------------- helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host-to-GPU copy that does not make the host wait for the GPU's queue."""
    if device.type != "cuda":
        return t
    return t.pin_memory().to(device, non_blocking=True)


def _progress(env: DistEnv, total: int, initial: int, name: str) -> Any:
    if not env.is_main:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=name, unit="step", file=sys.stderr, dynamic_ncols=True,
                mininterval=1.0)
