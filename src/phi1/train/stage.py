"""What `pretrain` and `finetune` share around the loop: tokenizer, HumanEval
examples, the model description printed at start, and the manifest metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from phi1.errors import InputError
from phi1.model.presets import describe, human_count
from phi1.train.humaneval_loss import METRIC as HUMANEVAL
from phi1.train.humaneval_loss import humaneval_examples

MODEL_DIR = "model"


def tokenizer_folder(ctx: Any) -> Path:
    """The tokenizer folder named by the stage's ``tokenizer`` input."""
    folder = ctx.input("tokenizer").path
    if not (folder / "tokenizer.json").is_file():
        raise InputError(f"{ctx.section_name}.tokenizer: no tokenizer.json in {folder}: re-run the tokenizer stage")
    return folder


def load_backend_tokenizer(folder: Path) -> Any:
    """The fast tokenizer itself (``tokenizers.Tokenizer``): batch encoding with offsets."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json"))


def humaneval_set(cfg: Any, tokenizer: Any, max_len: int) -> Any:
    from phi1.train.data import ExampleList

    if not cfg.humaneval_loss:
        return None
    return ExampleList(humaneval_examples(tokenizer, max_len))


def announce(ctx: Any, model_config: Any, seq_len: int) -> dict[str, Any]:
    info = describe(model_config, seq_len)
    ctx.log(f"model: {info['n_layer']} layers, hidden {info['n_embd']}, MLP {info['n_inner']}, "
            f"{info['n_head']} heads x {info['n_embd'] // info['n_head']} (rotary {info['rotary_dim']}), "
            f"vocab {info['vocab_size']}, context {info['max_position_embeddings']}, dropout {info['dropout']}")
    ctx.log(f"parameters: {human_count(info['params'])} ({human_count(info['params_non_embedding'])} without "
            f"the input embedding); {info['flops_per_token'] / 1e9:.3g} GFLOPs per token (6N + 12LHQT)")
    return info


def outcome_metrics(outcome: Any) -> dict[str, Any]:
    """The manifest metrics every training stage records."""
    first, last = outcome.first_eval(), outcome.last_eval()
    return {
        "train_loss": outcome.train_loss,
        "val_loss": last.get("val_loss"),
        "val_loss_start": first.get("val_loss"),
        f"{HUMANEVAL}_start": first.get(HUMANEVAL),
        HUMANEVAL: last.get(HUMANEVAL),
        "tokens_per_s": outcome.tokens_per_s,  # real tokens: padding never counts
        "padding_share": outcome.padding_share,
        "mfu": outcome.mfu,
        "mfu_peak_flops": outcome.peak.flops,
        "mfu_peak_source": outcome.peak.source,
        "train_seconds": outcome.train_seconds,
        "compile_seconds": outcome.compile_seconds,
    }


def outcome_extra(outcome: Any) -> dict[str, Any]:
    """How the run ran, for the manifest: precision, compile, peak, parallelism (and why)."""
    return {"precision": outcome.precision.name, "precision_reason": outcome.precision.reason,
            "compiled": outcome.compiled, "compile_reason": outcome.compile_reason, "peak": outcome.peak.as_dict(),
            "parallel": outcome.parallel, "world_size": outcome.world_size,
            "checkpoint_format": outcome.checkpoint_format}


def speed_lines(outcome: Any) -> list[str]:
    """Summary lines: throughput with its MFU and the peak it divides by, and
    how the run computed (precision and compile, each with its reason)."""
    mfu = outcome.mfu
    pad = f", {outcome.padding_share:.0%} padding not counted" if outcome.padding_share >= 0.005 else ""
    return [
        f"{outcome.step} steps, {human_count(outcome.tokens)} tokens in {outcome.train_seconds:.0f}s "
        f"({outcome.tokens_per_s:,.0f} tokens/s{pad}; MFU {'n/a' if mfu is None else f'{mfu:.1%}'} of "
        f"{outcome.peak.label()})",
        f"{outcome.precision.name} ({outcome.precision.reason}); {outcome.parallel} x {outcome.world_size}; "
        f"compile {'on' if outcome.compiled else 'off'} ({outcome.compile_reason})",
    ]


def fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}"
