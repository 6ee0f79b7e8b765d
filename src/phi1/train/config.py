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
    max_steps: int = option(1000, ge=1)
    batch_size: int = option(8, ge=1, doc="global batch in sequences")
    micro_batch_size: int = option(8, ge=1, doc="per device and step; accumulation fills the global batch")
    lr: float = option(1e-3, gt=0)
    min_lr: float = option(0.0, ge=0)
    warmup_steps: int = option(750, ge=0)
    schedule: Literal["linear", "cosine", "constant"] = option("linear")
    weight_decay: float = option(0.1, ge=0)
    beta1: float = option(0.9, ge=0, lt=1)
    beta2: float = option(0.98, ge=0, lt=1)
    eps: float = option(1e-7, gt=0)
    grad_clip: float = option(1.0, ge=0, doc="0 = no clipping")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = option("auto", doc="auto = bf16 on GPU, fp32 on CPU")
    device: str = option("auto")
    compile: bool = option(False)
    activation_checkpointing: bool = option(False)
    parallel: Literal["auto", "ddp", "fsdp"] = option("auto", doc="under torchrun")
    checkpoint_every: int = option(1000, ge=1)
    keep_checkpoints: int = option(3, ge=1)
    eval_every: int = option(200, ge=1)
    eval_batches: int = option(8, ge=1)
    log_every: int = option(10, ge=1)
    humaneval_loss: bool = option(True, doc="mean loss on HumanEval canonical solutions at each eval")
    cpu_peak_flops: float = option(1e11, gt=0, doc="peak FLOP/s used for MFU on CPU")


@dataclass
class PretrainConfig(TrainConfig):
    pass


@dataclass
class FinetuneConfig(TrainConfig):
    max_steps: int = option(6000, ge=1)
    lr: float = option(1e-4, gt=0)
    warmup_steps: int = option(50, ge=0)
    weight_decay: float = option(0.01, ge=0)
    loss_on: Literal["all", "solution"] = option("solution")
    checkpoint_every: int = option(1000, ge=1)
