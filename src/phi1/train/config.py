"""Config sections for tokenize, pretrain and finetune."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from phi1.sections import option


@dataclass
class TokenizeConfig:
    seq_len: int = option(2048, ge=8)
    inputs: dict[str, float] = option(
        {"filter": 1.0},
        doc="documents to pretrain on: {dataset = sampling rate per document} (2.0 = twice, 0.5 = half)",
    )
    tokenizer: str = option("tokenizer", doc="dataset (tokenizer) to encode with")
    workers: int = option(2, ge=1, doc="encoding processes (output is identical for any number)", execution=True)
    shard_tokens: int = option(100_000_000, ge=1024, doc="tokens per .bin file (rounded down to whole rows)",
                               execution=True)
    chunk_chars: int = option(1 << 20, ge=1, doc="characters of text per work item sent to a worker",
                              execution=True)


@dataclass
class TrainConfig:
    """The training loop's options, shared by pretrain and finetune (see phi1.train.loop)."""

    max_steps: int = option(1000, ge=1, doc="optimizer steps")
    seed: int = option(-1, ge=-1, doc="training seed: initial weights, batch order, dropout (-1 = run.seed); the "
                       "data (which documents, which exercises) follows run.seed, so seeds of one run config "
                       "train on the same data (phi1 ablation)")
    batch_size: int = option(8, ge=1, doc="global batch in sequences (= micro_batch_size x accumulation x ranks)")
    micro_batch_size: int = option(8, ge=1, doc="sequences per device per forward; accumulation fills the batch",
                                   execution=True)
    lr: float = option(1e-3, gt=0, doc="peak learning rate")
    min_lr: float = option(0.0, ge=0, doc="learning rate at the end of the decay")
    warmup_steps: int = option(750, ge=0, doc="linear warmup from 0 to lr")
    schedule: Literal["linear", "cosine", "constant"] = option("linear", doc="decay after warmup")
    decay_steps: int = option(
        0, ge=0, doc="the step where the decay reaches min_lr (0 = max_steps); may lie past max_steps: "
        "the paper's schedule spans 36k steps and phi-1-base is its 24k-step checkpoint")
    weight_decay: float = option(0.1, ge=0, doc="AdamW weight decay, on 2-D weights only")
    beta1: float = option(0.9, ge=0, lt=1)
    beta2: float = option(0.98, ge=0, lt=1)
    eps: float = option(1e-7, gt=0)
    grad_clip: float = option(1.0, ge=0, doc="clip the global gradient norm (0 = no clipping)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = option(
        "auto", doc="auto = bf16 on GPUs that have it (else fp16 + loss scaling); on CPU bf16 where it "
        "multiplies bf16 natively (AMX / AVX512-BF16), else fp32 (phi1.train.precision)")
    device: Literal["auto", "cpu", "cuda"] = option("auto", doc="auto = cuda when available", execution=True)
    compile: bool | Literal["auto"] = option(
        "auto", doc="torch.compile each decoder layer; auto = when the run is long enough to win back the "
        "compile time (phi1.train.compiling)", execution=True)
    activation_checkpointing: bool = option(False, doc="recompute each layer's activations in backward",
                                            execution=True)
    parallel: Literal["auto", "ddp", "fsdp"] = option(
        "auto", doc="under torchrun: ddp (replicas) or fsdp (FSDP2 fully_shard per layer); auto = ddp",
        execution=True)
    fsdp_reshard_after_forward: bool = option(True, doc="fsdp: free gathered weights after forward (ZeRO-3)",
                                              execution=True)
    checkpoint_every: int = option(1000, ge=1, doc="steps between checkpoints (the last step always saves)")
    checkpoint_format: Literal["auto", "full", "sharded"] = option(
        "auto", doc="full = one Hugging Face safetensors file gathered on rank 0; sharded = "
        "torch.distributed.checkpoint, every rank writes its shard; auto = sharded under fsdp, else full. "
        "Either resumes under any parallelism", execution=True)
    keep_checkpoints: int = option(3, ge=1, doc="most recent checkpoints kept", execution=True)
    eval_every: int = option(200, ge=1, doc="steps between evaluations (and at the first and last step)")
    eval_samples: int = option(256, ge=0, doc="validation sequences per evaluation (0 = the whole split)")
    log_every: int = option(10, ge=1, doc="steps between metrics.jsonl lines", execution=True)
    humaneval_loss: bool = option(True, doc="loss on HumanEval canonical solutions at each evaluation")
    peak_flops: float = option(
        0.0, ge=0, doc="per-device peak FLOP/s that MFU divides by (0 = the datasheet table on GPUs, a "
        "cached matmul calibration at the training dtype on CPUs; phi1.train.metrics)", execution=True)
    tensorboard: bool = option(True, doc="also write TensorBoard events when tensorboard is installed",
                               execution=True)

    def __post_init__(self) -> None:
        if self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size = {self.batch_size} is not a multiple of micro_batch_size = "
                             f"{self.micro_batch_size}")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr = {self.min_lr} is above lr = {self.lr}")
        if self.decay_steps and self.decay_steps <= self.warmup_steps:
            raise ValueError(f"decay_steps = {self.decay_steps} must be after warmup_steps = {self.warmup_steps} "
                             f"(or 0 = max_steps)")


@dataclass
class PretrainConfig(TrainConfig):
    """Pretraining on the packed corpus; defaults are the paper's phi-1-base recipe."""

    data: str = option("tokenize", doc="dataset (tokens) to pretrain on")
    tokenizer: str = option("tokenizer", doc="dataset (tokenizer) of that data")
    max_steps: int = option(24000, ge=1, doc="phi-1-base: 24k steps of 1024 x 2048 tokens (~50B)")
    batch_size: int = option(1024, ge=1, doc="global batch in sequences")
    lr: float = option(1e-3, gt=0)
    warmup_steps: int = option(750, ge=0)
    weight_decay: float = option(0.1, ge=0)


@dataclass
class FinetuneConfig(TrainConfig):
    """Finetuning on CodeExercises; defaults are the paper's phi-1 recipe."""

    inputs: dict[str, float] = option(
        {"mine": 1.0}, doc="exercises to finetune on: {dataset = sampling rate per exercise}, e.g. "
        "{\"synth.exercises\" = 1.0, mine = 0.2}")
    model: str = option("pretrain", doc="dataset (model) to start from")
    tokenizer: str = option("tokenizer", doc="dataset (tokenizer) of that model")
    max_steps: int = option(6000, ge=1)
    batch_size: int = option(256, ge=1, doc="global batch in rows: context-length rows (packed) or exercises "
                             "(padded)")
    lr: float = option(1e-4, gt=0)
    warmup_steps: int = option(50, ge=0)
    weight_decay: float = option(0.01, ge=0)
    layout: Literal["packed", "padded"] = option(
        "packed", doc="packed = exercises joined by <|endoftext|> and cut into full context-length rows, like "
        "pretraining (the paper's: batch 256 = 256 x 2048 tokens); padded = one exercise per row, padded")
    loss_on: Literal["all", "solution"] = option(
        "all", doc="targets: every token (the paper's), or the solution tokens and <|endoftext|> only")
    checkpoint_every: int = option(1000, ge=1, doc="the best of these checkpoints by val loss is exported")
    eval_every: int = option(1000, ge=1)

