"""The `finetune` stage: train the pretrained model on CodeExercises.

Reads the model named by ``finetune.model`` (the pretrained weights), the
tokenizer named by ``finetune.tokenizer``, and the weighted mixture of exercise
datasets named by ``finetune.inputs`` (each a folder with ``train.jsonl.gz`` +
``val.jsonl.gz`` of records ``{"id", "prompt", "solution", "source"}``; a
weight is a sampling rate per exercise, `phi1.documents.copies_of`). The
exercises are laid out as ``finetune.layout`` says (packed context-length
rows, the paper's, or one padded exercise per row) with targets on
``finetune.loss_on`` (every token, or the solution only): see
`phi1.train.exercises`. A checkpoint is written every ``checkpoint_every``
steps and evaluated on the validation exercises; the best one is exported to
``finetune/model/``, the folder `generate` reads.
"""

from __future__ import annotations

from typing import Any

from phi1.errors import InputError


def run(ctx: Any) -> Any:
    import torch
    from transformers import PhiForCausalLM

    from phi1.model.presets import human_count, model_flops
    from phi1.model.tokenizer import tokenizer_info
    from phi1.stage import StageResult
    from phi1.train.data import Subset, eval_indices
    from phi1.train.distributed import barrier, distributed_env
    from phi1.train.exercises import ExerciseSource, prepare_exercises
    from phi1.train.export import export_checkpoint
    from phi1.train.loop import TrainInputs, train
    from phi1.train.stage import (HUMANEVAL, MODEL_DIR, announce, fmt, humaneval_set, load_backend_tokenizer,
                                  outcome_extra, outcome_metrics, speed_lines, tokenizer_folder)

    cfg, config = ctx.section, ctx.config
    tok_dir = tokenizer_folder(ctx)
    start = ctx.input("model")
    model_dir = start.path
    if not (model_dir / "config.json").is_file():
        raise InputError(f"finetune.model: no model (config.json) in {model_dir}: re-run {start.stage or 'it'}")
    sources = ctx.mixture("inputs")
    tok = tokenizer_info(tok_dir)
    pre_metrics = start.manifest.get("metrics", {})

    with distributed_env(cfg.device) as env:
        model = PhiForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                               attn_implementation=config.model.attn_implementation).to(env.device)
        context = model.config.max_position_embeddings
        info = announce(ctx, model.config, context)
        backend = load_backend_tokenizer(tok_dir)
        data = prepare_exercises(ctx.work_dir, [ExerciseSource(s.ref, s.path, s.weight) for s in sources], backend,
                                 layout=cfg.layout, loss_on=cfg.loss_on, eot_id=tok["eot_id"], seq_len=context,
                                 seed=config.run.seed, vocab_size=tok["vocab_size"], env=env, log=ctx.log)
        val = Subset(data.val, eval_indices(len(data.val), cfg.eval_samples)) if len(data.val) else None
        st, sv = data.stats["train"], data.stats["val"]
        rows = (f"{st.rows:,} rows of {context} tokens ({st.dropped_tokens:,} tokens of the last partial row "
                f"dropped)" if cfg.layout == "packed" else f"one per row, {st.truncated} truncated to {context} tokens")
        ctx.log(f"exercises: {st.examples:,} train = {human_count(st.tokens)} tokens; layout {cfg.layout}: {rows}; "
                f"{len(val) if val else 0} validation (one per row); loss on {cfg.loss_on}; "
                f"{cfg.max_steps * cfg.batch_size / len(data.train):.2f} epochs")
        if val is None:
            ctx.log(f"warning: no usable validation exercises ({sv.records} records in "
                    f"the val.jsonl.gz of {', '.join(x.ref for x in sources)}): the last checkpoint is exported")
        inputs = TrainInputs(data.train, pad_id=tok["eot_id"], val=val,
                             humaneval=humaneval_set(cfg, backend, context))
        seed = cfg.seed if cfg.seed >= 0 else config.run.seed  # training seed; the exercises follow run.seed
        outcome = train(model, cfg, env, inputs, work_dir=ctx.work_dir, seed=seed,
                        flops=model_flops(model.config), resume=ctx.resumed, select_best=True,
                        tokenizer_dir=tok_dir, cache_dir=ctx.cache_dir("calibration"), name="finetune",
                        echo=ctx.log)
        best_ckpt = outcome.best_checkpoint or outcome.final_checkpoint
        if env.is_main:
            export_checkpoint(best_ckpt, ctx.work_dir / MODEL_DIR, tokenizer=tok_dir, echo=ctx.log)
        barrier(env)

    metrics = outcome_metrics(outcome)
    best = outcome.best or {}
    # The exported model is the best checkpoint: its numbers are the stage's.
    metrics["val_loss"] = best.get("val_loss", metrics["val_loss"])
    metrics[HUMANEVAL] = best.get(HUMANEVAL, metrics[HUMANEVAL])
    metrics["best_step"] = best.get("step", outcome.step)
    metrics[f"{HUMANEVAL}_before_pretraining"] = pre_metrics.get(f"{HUMANEVAL}_start")
    metrics[f"{HUMANEVAL}_after_pretraining"] = pre_metrics.get(HUMANEVAL)
    metrics[f"{HUMANEVAL}_after_finetuning"] = metrics[HUMANEVAL]
    summary = [
        *speed_lines(outcome),
        f"loss: train {fmt(outcome.train_loss)}, validation {fmt(metrics['val_loss_start'])} -> "
        f"{fmt(metrics['val_loss'])} (best checkpoint: step {metrics['best_step']})",
        f"HumanEval solution loss: {fmt(metrics[f'{HUMANEVAL}_before_pretraining'])} before pretraining -> "
        f"{fmt(metrics[f'{HUMANEVAL}_after_pretraining'])} after pretraining -> "
        f"{fmt(metrics[HUMANEVAL])} after finetuning",
        f"model: {ctx.run_dir / ctx.name / MODEL_DIR}",
    ]
    return StageResult(
        counts={"steps": outcome.step, "tokens": outcome.tokens, "train_exercises": st.examples,
                "train_rows": st.rows, "train_exercise_tokens": st.tokens, "val_exercises": len(val) if val else 0,
                "truncated": st.truncated, "dropped_tokens": st.dropped_tokens},
        metrics=metrics,
        summary=summary,
        extra={"model": info, "evals": outcome.evals, "best": best, **outcome_extra(outcome),
               "layout": cfg.layout, "loss_on": cfg.loss_on},
    )
