"""The `finetune` stage: train the pretrained model on CodeExercises.

Reads the model named by ``finetune.model`` (the pretrained weights), the
tokenizer named by ``finetune.tokenizer``, and the weighted mixture of exercise
datasets named by ``finetune.inputs`` (each a folder with ``train.jsonl.gz`` +
``val.jsonl.gz`` of records ``{"id", "prompt", "solution", "source"}``; a
weight is a sampling rate per exercise, `phi1.documents.copies_of`). Each exercise is one sequence,
``prompt + solution + <|endoftext|>``; with ``loss_on = "solution"`` only the
solution (and the end-of-text) tokens are targets. A checkpoint is written
every ``checkpoint_every`` steps and evaluated on the validation exercises;
the best one is exported to ``finetune/model/``, the folder `generate` reads.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from phi1.errors import InputError

SPLITS = ("train", "val")
DATA_DIR = "data"
ENCODE_CHUNK = 10_000


def mixture_records(sources: list[Any], split: str, seed: int) -> Iterator[Any]:
    """The exercise records of ``split`` from a weighted mixture of exercise datasets."""
    from phi1.documents import copies_of
    from phi1.synth.records import read_exercises

    for src in sources:
        path = src.path / f"{split}.jsonl.gz"
        if not path.exists():
            continue
        for rec in read_exercises(path):
            for _ in range(copies_of(src.weight, seed, src.ref, rec.id)):
                yield rec


def encode_split(records: Iterable[Any], label: str, tokenizer: Any, *, loss_on: str, eot_id: int, max_len: int,
                 show_progress: bool) -> tuple[list[Any], int, int]:
    """Exercise records as examples; returns (examples, records, truncated)."""
    from tqdm.auto import tqdm

    from phi1.train.data import encode_with_mask

    examples, n_records, truncated, chunk = [], 0, 0, []

    def flush() -> None:
        nonlocal truncated
        got, cut = encode_with_mask(tokenizer, chunk, loss_on=loss_on, eot_id=eot_id, max_len=max_len)
        examples.extend(got)
        truncated += cut
        chunk.clear()

    with tqdm(desc=f"encode {label}", unit="ex", disable=not show_progress, mininterval=1.0) as bar:
        for rec in records:
            chunk.append((rec.prompt, rec.solution))
            n_records += 1
            if len(chunk) >= ENCODE_CHUNK:
                bar.update(len(chunk))
                flush()
        bar.update(len(chunk))
        if chunk:
            flush()
    return examples, n_records, truncated


def prepare_exercises(ctx: Any, sources: list[Any], tokenizer: Any, *, loss_on: str, eot_id: int, max_len: int,
                      env: Any) -> dict[str, Any]:
    """Rank 0 encodes each split once into ``finetune/data/<split>.npz`` (kept
    for a resumed attempt); every rank then loads them."""
    import json

    from phi1.files import write_atomic
    from phi1.train.data import load_examples, save_examples
    from phi1.train.distributed import barrier, broadcast_object

    out = ctx.work_dir / DATA_DIR
    stats: dict[str, Any] = {}
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        for split in SPLITS:
            npz, meta = out / f"{split}.npz", out / f"{split}.json"
            if npz.exists() and meta.exists():
                stats[split] = json.loads(meta.read_text())
                continue
            records = mixture_records(sources, split, ctx.config.run.seed)
            label = f"{split} ({' + '.join(s.ref for s in sources)})"
            examples, n, cut = encode_split(records, label, tokenizer, loss_on=loss_on, eot_id=eot_id,
                                            max_len=max_len, show_progress=True)
            save_examples(npz, examples)
            stats[split] = {"records": n, "examples": len(examples), "truncated": cut}
            write_atomic(meta, json.dumps(stats[split]) + "\n")
    stats = broadcast_object(stats, env)
    barrier(env)
    if stats["train"]["examples"] == 0:
        where = ", ".join(str(s.path / "train.jsonl.gz") for s in sources)
        raise InputError(f"finetune.inputs: no usable training exercises in {where} "
                         f"({stats['train']['records']} records)")
    return {split: load_examples(out / f"{split}.npz") for split in SPLITS} | {"stats": stats}


def run(ctx: Any) -> Any:
    import torch
    from transformers import PhiForCausalLM

    from phi1.model.presets import human_count
    from phi1.model.tokenizer import tokenizer_info
    from phi1.stage import StageResult
    from phi1.train.data import ExampleList, Subset, eval_indices
    from phi1.train.distributed import barrier, distributed_env
    from phi1.train.export import export_checkpoint
    from phi1.train.loop import TrainInputs, train
    from phi1.train.stage import (HUMANEVAL, MODEL_DIR, announce, fmt, humaneval_set, load_backend_tokenizer,
                                  outcome_metrics, tokenizer_folder)

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
        data = prepare_exercises(ctx, sources, backend, loss_on=cfg.loss_on, eot_id=tok["eot_id"],
                                 max_len=context, env=env)
        train_set = ExampleList(data["train"])
        val_all = ExampleList(data["val"])
        val = Subset(val_all, eval_indices(len(val_all), cfg.eval_samples)) if len(val_all) else None
        stats = data["stats"]
        ctx.log(f"exercises: {len(train_set):,} train ({stats['train']['truncated']} truncated to {context} "
                f"tokens), {len(val) if val else 0} validation; loss on {cfg.loss_on}; "
                f"{cfg.max_steps * cfg.batch_size / len(train_set):.2f} epochs")
        if val is None:
            ctx.log(f"warning: no usable validation exercises ({stats['val']['records']} records in "
                    f"the val.jsonl.gz of {', '.join(x.ref for x in sources)}): the last checkpoint is exported")
        inputs = TrainInputs(train_set, pad_id=tok["eot_id"], val=val,
                             humaneval=humaneval_set(cfg, backend, context))
        outcome = train(model, cfg, env, inputs, work_dir=ctx.work_dir, seed=config.run.seed,
                        flops_per_token=info["flops_per_token"], resume=ctx.resumed, select_best=True,
                        tokenizer_dir=tok_dir, name="finetune", echo=ctx.log)
        best_ckpt = outcome.best_checkpoint or outcome.final_checkpoint
        if env.is_main:
            export_checkpoint(best_ckpt, ctx.work_dir / MODEL_DIR, tokenizer=tok_dir, echo=ctx.log)
        barrier(env)
        world = env.world_size

    metrics = outcome_metrics(outcome, world)
    best = outcome.best or {}
    # The exported model is the best checkpoint: its numbers are the stage's.
    metrics["val_loss"] = best.get("val_loss", metrics["val_loss"])
    metrics[HUMANEVAL] = best.get(HUMANEVAL, metrics[HUMANEVAL])
    metrics["best_step"] = best.get("step", outcome.step)
    metrics[f"{HUMANEVAL}_before_pretraining"] = pre_metrics.get(f"{HUMANEVAL}_start")
    metrics[f"{HUMANEVAL}_after_pretraining"] = pre_metrics.get(HUMANEVAL)
    metrics[f"{HUMANEVAL}_after_finetuning"] = metrics[HUMANEVAL]
    mfu = metrics["mfu"]
    summary = [
        f"{outcome.step} steps, {human_count(outcome.tokens)} tokens in {outcome.train_seconds:.0f}s "
        f"({metrics['tokens_per_s']:,.0f} tokens/s, MFU {'n/a' if mfu is None else f'{mfu:.1%}'})",
        f"loss: train {fmt(outcome.train_loss)}, validation {fmt(metrics['val_loss_start'])} -> "
        f"{fmt(metrics['val_loss'])} (best checkpoint: step {metrics['best_step']})",
        f"HumanEval solution loss: {fmt(metrics[f'{HUMANEVAL}_before_pretraining'])} before pretraining -> "
        f"{fmt(metrics[f'{HUMANEVAL}_after_pretraining'])} after pretraining -> "
        f"{fmt(metrics[HUMANEVAL])} after finetuning",
        f"model: {ctx.run_dir / ctx.name / MODEL_DIR}",
    ]
    return StageResult(
        counts={"steps": outcome.step, "tokens": outcome.tokens, "train_exercises": len(train_set),
                "val_exercises": len(val) if val else 0, "truncated": stats["train"]["truncated"]},
        metrics=metrics,
        summary=summary,
        extra={"model": info, "evals": outcome.evals, "best": best, "precision": outcome.precision,
               "parallel": outcome.parallel, "world_size": world, "loss_on": cfg.loss_on},
    )
