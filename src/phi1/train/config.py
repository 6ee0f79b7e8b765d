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
        doc="earlier stage with docs/ -> sampling rate per document (2.0 = twice, 0.5 = half its docs)",
    )
    validation_fraction: float = option(0.01, ge=0, lt=1, doc="documents held out for validation (seeded)")
    workers: int = option(2, ge=1, doc="encoding processes")
    shard_tokens: int = option(100_000_000, ge=1024, doc="tokens per .bin file (rounded down to whole rows)")
    chunk_chars: int = option(1 << 20, ge=1, doc="characters of text per work item sent to a worker")

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ValueError("inputs must name at least one stage, e.g. {filter = 1.0}")
        for name, w in self.inputs.items():
            if w < 0:
                raise ValueError(f"inputs.{name} = {w}: a weight must be >= 0")


@dataclass
class TrainConfig:
    """The training loop's options, shared by pretrain and finetune (see phi1.train.loop)."""

    max_steps: int = option(1000, ge=1, doc="optimizer steps")
    batch_size: int = option(8, ge=1, doc="global batch in sequences (= micro_batch_size x accumulation x ranks)")
    micro_batch_size: int = option(8, ge=1, doc="sequences per device per forward; accumulation fills the batch")
    lr: float = option(1e-3, gt=0, doc="peak learning rate")
    min_lr: float = option(0.0, ge=0, doc="learning rate at the end of the decay")
    warmup_steps: int = option(750, ge=0, doc="linear warmup from 0 to lr")
    schedule: Literal["linear", "cosine", "constant"] = option("linear", doc="decay after warmup")
    weight_decay: float = option(0.1, ge=0, doc="AdamW weight decay, on 2-D weights only")
    beta1: float = option(0.9, ge=0, lt=1)
    beta2: float = option(0.98, ge=0, lt=1)
    eps: float = option(1e-7, gt=0)
    grad_clip: float = option(1.0, ge=0, doc="clip the global gradient norm (0 = no clipping)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = option(
        "auto", doc="auto = bf16 on GPUs that have it (else fp16 + loss scaling), fp32 on CPU")
    device: Literal["auto", "cpu", "cuda"] = option("auto", doc="auto = cuda when available")
    compile: bool = option(False, doc="torch.compile each decoder layer")
    activation_checkpointing: bool = option(False, doc="recompute each layer's activations in backward")
    parallel: Literal["auto", "ddp", "fsdp"] = option(
        "auto", doc="under torchrun: ddp (replicas) or fsdp (FSDP2 fully_shard per layer); auto = ddp")
    fsdp_reshard_after_forward: bool = option(True, doc="fsdp: free gathered weights after forward (ZeRO-3)")
    checkpoint_every: int = option(1000, ge=1, doc="steps between checkpoints (the last step always saves)")
    keep_checkpoints: int = option(3, ge=1, doc="most recent checkpoints kept")
    eval_every: int = option(200, ge=1, doc="steps between evaluations (and at the first and last step)")
    eval_samples: int = option(256, ge=0, doc="validation sequences per evaluation (0 = the whole split)")
    log_every: int = option(10, ge=1, doc="steps between metrics.jsonl lines")
    humaneval_loss: bool = option(True, doc="loss on HumanEval canonical solutions at each evaluation")
    cpu_peak_flops: float = option(2e11, gt=0, doc="peak FLOP/s of the CPU for MFU (2e11: 2 AVX-512 cores)")
    peak_flops: float = option(0.0, ge=0, doc="per-device peak FLOP/s for MFU (0 = table: A100/H100/H200)")
    tensorboard: bool = option(True, doc="also write TensorBoard events when tensorboard is installed")

    def __post_init__(self) -> None:
        if self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size = {self.batch_size} is not a multiple of micro_batch_size = "
                             f"{self.micro_batch_size}")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr = {self.min_lr} is above lr = {self.lr}")


@dataclass
class PretrainConfig(TrainConfig):
    """Pretraining on the packed corpus; defaults are the paper's phi-1-base recipe."""

    max_steps: int = option(24000, ge=1, doc="phi-1-base: 24k steps of 1024 x 2048 tokens (~50B)")
    batch_size: int = option(1024, ge=1, doc="global batch in sequences")
    lr: float = option(1e-3, gt=0)
    warmup_steps: int = option(750, ge=0)
    weight_decay: float = option(0.1, ge=0)


@dataclass
class FinetuneConfig(TrainConfig):
    """Finetuning on CodeExercises; defaults are the paper's phi-1 recipe."""

    max_steps: int = option(6000, ge=1)
    batch_size: int = option(256, ge=1, doc="global batch in exercises")
    lr: float = option(1e-4, gt=0)
    warmup_steps: int = option(50, ge=0)
    weight_decay: float = option(0.01, ge=0)
    loss_on: Literal["all", "solution"] = option(
        "solution", doc="train on the whole exercise, or on the solution tokens only")
    checkpoint_every: int = option(1000, ge=1, doc="the best of these checkpoints by val loss is exported")
    eval_every: int = option(1000, ge=1)


def tokenize_inputs(config) -> tuple[str, ...]:
    """Upstream stages `tokenize` reads: the tokenizer and every mixture input
    with a non-zero weight (so re-running any of them makes tokenize stale)."""
    mixture = tuple(name for name, w in config.tokenize.inputs.items() if w > 0)
    return ("tokenizer", *mixture)
