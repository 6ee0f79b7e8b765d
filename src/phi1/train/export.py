"""`phi1 export CKPT OUT`: a training checkpoint as a Hugging Face model folder.

The folder holds ``config.json`` (``model_type = "phi"``), ``model.safetensors``,
``generation_config.json`` and the tokenizer files: transformers
(``AutoModelForCausalLM``), vLLM and PEFT load it as they load
microsoft/phi-1. The export is checked on the way out: it is loaded back and
must have no missing, unexpected or mismatched weights.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

from phi1.errors import InputError, Phi1Error

EXPORT_FILES = ("config.json", "model.safetensors", "generation_config.json")


def export_checkpoint(ckpt_dir: str | Path, out_dir: str | Path, tokenizer: str | Path | None = None,
                      dtype: str = "float32", echo: Any = print) -> Path:
    """Write ``out_dir`` from checkpoint ``ckpt_dir`` (atomically: temp folder, rename).

    ``tokenizer``: a tokenizer folder; default the copy inside the checkpoint.
    ``dtype``: weights as trained (float32) or cast (bfloat16/float16) for serving.
    """
    import torch
    from transformers import AutoTokenizer, GenerationConfig, PhiForCausalLM

    from phi1.train.checkpoint import SHARDED, format_of, full_weights

    ckpt, out = Path(ckpt_dir), Path(out_dir)
    if not (ckpt / "config.json").is_file():
        raise InputError(f"not a phi1 checkpoint (no config.json): {ckpt}")
    sharded = format_of(ckpt) == "sharded"
    if not sharded and not (ckpt / "model.safetensors").is_file():
        raise InputError(f"not a phi1 checkpoint (no model.safetensors, no {SHARDED}/): {ckpt}")
    tok_dir = Path(tokenizer) if tokenizer else ckpt / "tokenizer"
    if not (tok_dir / "tokenizer.json").is_file() and not (tok_dir / "tokenizer_config.json").is_file():
        raise InputError(f"no tokenizer files in {tok_dir} (give one with --tokenizer DIR)")
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
    if torch_dtype is None:
        raise Phi1Error(f"export dtype must be float32, bfloat16 or float16, got {dtype!r}")

    with _quiet_transformers():
        if sharded:  # torch.distributed.checkpoint shards: gathered here, in this process
            from transformers import PhiConfig

            from phi1.model.presets import build_model

            model = build_model(PhiConfig.from_pretrained(ckpt))
            missing, unexpected = model.load_state_dict(full_weights(ckpt), strict=False)
            info = {"missing_keys": missing, "unexpected_keys": unexpected}
        else:
            model, info = PhiForCausalLM.from_pretrained(ckpt, dtype=torch.float32, output_loading_info=True)
    _check_loading_info(info, ckpt)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    eos_id = tok.eos_token_id if tok.eos_token_id is not None else model.config.eos_token_id
    if len(tok) > model.config.vocab_size:
        raise InputError(f"tokenizer {tok_dir} has {len(tok)} tokens, more than the model's vocab_size "
                         f"{model.config.vocab_size}")
    model.config.bos_token_id = tok.bos_token_id if tok.bos_token_id is not None else eos_id
    model.config.eos_token_id = eos_id
    model.config.pad_token_id = eos_id  # no pad token in a code BPE; batched generation pads with eos
    model.config.architectures = ["PhiForCausalLM"]

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with _quiet_transformers():
            model.to(torch_dtype).save_pretrained(tmp, safe_serialization=True)
            GenerationConfig(bos_token_id=model.config.bos_token_id, eos_token_id=eos_id, pad_token_id=eos_id,
                             do_sample=False).save_pretrained(tmp)
            tok.save_pretrained(tmp)
            _verify(tmp)
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    echo(f"exported {ckpt} -> {out} ({dtype})")
    return out


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No per-tensor progress bars from transformers while loading and saving."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _check_loading_info(info: dict[str, Any], where: Path) -> None:
    problems = {k: list(v) for k, v in info.items()
                if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        raise Phi1Error(f"{where}: weights do not match PhiForCausalLM: "
                        + "; ".join(f"{k}: {', '.join(map(str, v[:5]))}" for k, v in problems.items()))


def _verify(folder: Path) -> None:
    """Load the export back as any user would, and demand every weight matches."""
    from transformers import AutoModelForCausalLM

    for name in EXPORT_FILES:
        if not (folder / name).is_file():
            raise Phi1Error(f"export is missing {name} in {folder}")
    _model, info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    _check_loading_info(info, folder)
