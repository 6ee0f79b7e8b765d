"""The `pretrain` stage: train a phi-1 preset from scratch on the packed corpus.

Reads ``tokenizer/tokenizer/`` and ``tokenize/`` (``meta.json``, ``train/*.bin``,
``val/*.bin``); writes ``pretrain/checkpoints/step-XXXXXXX/``,
``pretrain/metrics.jsonl`` and the final weights as a Hugging Face folder,
``pretrain/model/`` (what `finetune` starts from). Single process, or every
rank of ``torchrun --nproc_per_node N -m phi1.cli pretrain --config C``.
"""

from __future__ import annotations

from typing import Any

from phi1.errors import InputError


def run(ctx: Any) -> Any:
    import torch

    from phi1.model.presets import build_model, human_count, model_flops, phi_config, resolve_shape
    from phi1.model.tokenizer import tokenizer_info
    from phi1.stage import StageResult
    from phi1.train.data import Subset, TokenRows, eval_indices
    from phi1.train.distributed import barrier, distributed_env
    from phi1.train.export import export_checkpoint
    from phi1.train.loop import TrainInputs, train
    from phi1.train.packing import PackedDataset
    from phi1.train.stage import (HUMANEVAL, MODEL_DIR, announce, fmt, humaneval_set, load_backend_tokenizer,
                                  outcome_extra, outcome_metrics, speed_lines, tokenizer_folder)

    cfg, config = ctx.section, ctx.config
    tok_dir = tokenizer_folder(ctx)
    data_dir = ctx.input("data").path
    train_rows = PackedDataset(data_dir, "train")
    if len(train_rows) == 0:
        raise InputError(f"{data_dir}: the train split has no sequences (corpus smaller than one "
                         f"{train_rows.seq_len}-token row?)")
    val_rows = PackedDataset(data_dir, "val") if "val" in train_rows.meta else None
    tok = tokenizer_info(tok_dir)
    if train_rows.vocab_size > tok["vocab_size"]:
        raise InputError(f"{data_dir} was tokenized with a {train_rows.vocab_size}-token vocabulary, but "
                         f"{tok_dir} has {tok['vocab_size']}: re-run tokenize")

    with distributed_env(cfg.device) as env:
        shape = resolve_shape(config.model, seq_len=train_rows.seq_len)
        if shape.max_position_embeddings < train_rows.seq_len:
            raise InputError(f"model.max_position_embeddings = {shape.max_position_embeddings} is shorter than "
                             f"the packed rows ({train_rows.seq_len} tokens, {data_dir})")
        model_config = phi_config(shape, tok["vocab_size"], bos_token_id=tok["eot_id"], eos_token_id=tok["eot_id"],
                                  attn_implementation=config.model.attn_implementation)
        info = announce(ctx, model_config, train_rows.seq_len)
        seed = cfg.seed if cfg.seed >= 0 else config.run.seed  # training seed; the data follows run.seed
        torch.manual_seed(seed)  # the same initial weights on every rank
        model = build_model(model_config, env.device)
        val = None
        if val_rows is not None and len(val_rows):
            val_source = TokenRows(val_rows)
            val = Subset(val_source, eval_indices(len(val_source), cfg.eval_samples))
        backend = load_backend_tokenizer(tok_dir)
        inputs = TrainInputs(TokenRows(train_rows), pad_id=tok["eot_id"], val=val,
                             humaneval=humaneval_set(cfg, backend, shape.max_position_embeddings))
        ctx.log(f"data: {len(train_rows):,} train rows x {train_rows.seq_len} tokens "
                f"({human_count(train_rows.n_tokens)} tokens); {len(val) if val else 0} validation rows; "
                f"{cfg.max_steps * cfg.batch_size * train_rows.seq_len / max(train_rows.n_tokens, 1):.2f} epochs")
        outcome = train(model, cfg, env, inputs, work_dir=ctx.work_dir, seed=seed,
                        flops=model_flops(model_config), resume=ctx.resumed, tokenizer_dir=tok_dir,
                        cache_dir=ctx.cache_dir("calibration"), name="pretrain", echo=ctx.log)
        if env.is_main:
            export_checkpoint(outcome.final_checkpoint, ctx.work_dir / MODEL_DIR, tokenizer=tok_dir,
                              echo=ctx.log)
        barrier(env)

    metrics = outcome_metrics(outcome)
    metrics[f"{HUMANEVAL}_before_pretraining"] = metrics[f"{HUMANEVAL}_start"]
    summary = [
        *speed_lines(outcome),
        f"loss: train {fmt(outcome.train_loss)}, validation {fmt(metrics['val_loss_start'])} -> "
        f"{fmt(metrics['val_loss'])}",
        f"HumanEval solution loss: {fmt(metrics[f'{HUMANEVAL}_start'])} before pretraining -> "
        f"{fmt(metrics[HUMANEVAL])} after",
        f"model: {ctx.run_dir / ctx.name / MODEL_DIR}",
    ]
    return StageResult(
        counts={"steps": outcome.step, "tokens": outcome.tokens, "params": info["params"]},
        metrics=metrics,
        summary=summary,
        extra={"model": info, "evals": outcome.evals, **outcome_extra(outcome)},
    )
