"""What a synth run asks for: seeds, requests, the cost estimate, the prompt files.

A `Plan` is one kind of record ("textbooks" or "exercises"): how many seeds,
which prompt, the reply limit. Its ``i``-th request is a function of the
config and ``i`` alone, so a resumed run, a batch file and a live run all ask
exactly the same things (and share cache entries).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from phi1.llm import ChatRequest
from phi1.synth.prompts import EXERCISE_PROMPTS, TEXTBOOK_PROMPTS
from phi1.synth.seeds import ExerciseSeed, SeedSampler, SeedSpace, TextbookSeed

KINDS = ("textbooks", "exercises")
ESTIMATE_SAMPLE = 2000  # seeds whose prompts are measured for the estimate


@dataclass
class Plan:
    kind: str
    count: int
    prompt_id: str
    max_tokens: int
    reply_tokens: int  # expected, for the estimate
    sampler: SeedSampler
    allowed_imports: tuple[str, ...] = ()
    min_asserts: int = 3

    def record_id(self, index: int) -> str:
        return f"synth-{self.kind[:-1]}-{index:08d}"

    def seed(self, index: int) -> TextbookSeed | ExerciseSeed:
        return self.sampler[index]

    def messages(self, seed: Any) -> list[dict[str, Any]]:
        if self.kind == "textbooks":
            return TEXTBOOK_PROMPTS[self.prompt_id].messages(seed)
        return EXERCISE_PROMPTS[self.prompt_id].messages(seed, self.allowed_imports, self.min_asserts)

    def request(self, seed: Any) -> ChatRequest:
        return ChatRequest(self.messages(seed), max_tokens=self.max_tokens)

    def chunks(self, size: int) -> list[tuple[int, int]]:
        return [(s, min(s + size, self.count)) for s in range(0, self.count, size)]

    def dims(self) -> dict[str, int]:
        """Seed fields and the size of their part of the space (for coverage)."""
        sp = self.sampler.space
        if self.kind == "textbooks":
            return {"concept": len(sp.concepts), "audience": len(sp.audiences), "style": len(sp.styles),
                    "difficulty": len(sp.difficulties), "scenario": len(sp.scenarios)}
        return {"concept": len(sp.exercise_concepts), "scenario": len(sp.scenarios),
                "returns": len({r for v in sp.verbs for r in v.returns}), "arity": len(sp.arities),
                "difficulty": len(sp.difficulties)}

    @property
    def pair(self) -> tuple[str, str]:
        return ("concept", "audience") if self.kind == "textbooks" else ("concept", "scenario")


def make_plans(cfg: Any, space: SeedSpace, seed: int) -> list[Plan]:
    """The plans of a [synth] section (kinds asked for zero times are left out);
    a count larger than the seed space is an error naming the key."""
    plans = []
    if cfg.textbooks:
        sampler = SeedSampler(space, "textbooks", seed)
        sampler.check(cfg.textbooks, "synth.textbooks")
        plans.append(Plan("textbooks", cfg.textbooks, cfg.textbook_prompt, cfg.textbook_max_tokens,
                          cfg.textbook_reply_tokens, sampler))
    if cfg.exercises:
        sampler = SeedSampler(space, "exercises", seed)
        sampler.check(cfg.exercises, "synth.exercises")
        plans.append(Plan("exercises", cfg.exercises, cfg.exercise_prompt, cfg.exercise_max_tokens,
                          cfg.exercise_reply_tokens, sampler, tuple(cfg.allowed_imports), cfg.min_asserts))
    return plans


def requested_coverage(plan: Plan) -> dict[str, Any]:
    """How much of the seed space the plan's seeds cover: the same numbers as
    feeding every seed's ``to_json()`` to `phi1.synth.report.Coverage`,
    computed on arrays (1.8M paper-scale seeds in about a second)."""
    import numpy as np

    from phi1.synth.report import Coverage
    from phi1.synth.seeds import function_name

    sp = plan.sampler.space
    d = plan.sampler.digits(0, plan.count)
    dims = plan.dims()
    share = Coverage._share

    def covered(a: np.ndarray) -> int:
        return len(np.unique(a))

    if plan.kind == "textbooks":
        fields = dict(zip(("concept", "audience", "style", "difficulty", "scenario"), d))
        pair = d[0] * len(sp.audiences) + d[1]
        out = {"seeds": plan.count, **{f: share(covered(a), dims[f]) for f, a in fields.items()}}
        out["concept_x_audience"] = share(covered(pair), dims["concept"] * dims["audience"])
        return out
    scen_index = {s.name: i for i, s in enumerate(sp.scenarios)}
    objects = sorted({o for s in sp.scenarios for o in s.objects})
    obj_index = {o: i for i, o in enumerate(objects)}
    returns = sorted({r for v in sp.verbs for r in v.returns})
    ret_index = {r: i for i, r in enumerate(returns)}
    scen_of = np.array([scen_index[s.name] for s, _ in sp.scenario_objects], dtype=np.int64)
    obj_of = np.array([obj_index[o] for _, o in sp.scenario_objects], dtype=np.int64)
    verb_of = np.array([i for i, v in enumerate(sp.verbs) for _ in v.returns], dtype=np.int64)
    ret_of = np.array([ret_index[r] for _, r in sp.verb_returns], dtype=np.int64)
    fields = {"concept": d[0], "scenario": scen_of[d[1]], "returns": ret_of[d[2]], "arity": d[4],
              "difficulty": d[5]}
    out = {"seeds": plan.count, **{f: share(covered(a), dims[f]) for f, a in fields.items()}}
    out["concept_x_scenario"] = share(covered(d[0] * len(sp.scenarios) + scen_of[d[1]]),
                                      dims["concept"] * dims["scenario"])
    triples = np.unique((verb_of[d[2]] * len(objects) + obj_of[d[1]]) * len(sp.qualifiers) + d[3])
    names = set()
    for t in triples.tolist():  # distinct triples -> distinct name strings (they could coincide)
        rest, q = divmod(t, len(sp.qualifiers))
        v, o = divmod(rest, len(objects))
        names.add(function_name(sp.verbs[v].verb, objects[o], sp.qualifiers[q]))
    out["name"] = share(len(names), len(sp.function_names()))
    return out


# --------------------------------------------------------------------------- cost estimate


def estimate(plans: list[Plan], llm: Any) -> dict[str, Any]:
    """Tokens and dollars the plans will cost, before anything is sent.

    Prompt tokens: the mean prompt of up to ``ESTIMATE_SAMPLE`` seeds (about 4
    characters a token, as `phi1.llm` estimates) times the count; completion
    tokens: ``<kind>_reply_tokens`` per request. First asks only (re-asks of
    cut replies add to it). ``None`` dollars when no price is configured.
    """
    from phi1.llm.schema import prompt_chars, request_body

    out: dict[str, Any] = {"kinds": {}}
    total_p = total_c = 0
    for plan in plans:
        idx = sorted(random.Random(0).sample(range(plan.count), min(plan.count, ESTIMATE_SAMPLE)))
        chars = [prompt_chars(request_body(llm, plan.request(plan.seed(i)))) for i in idx]
        per_prompt = math.ceil(sum(chars) / len(chars) / 4)
        p, c = per_prompt * plan.count, plan.reply_tokens * plan.count
        out["kinds"][plan.kind] = {"requests": plan.count, "prompt_tokens": p, "completion_tokens": c,
                                   "prompt_tokens_per_request": per_prompt}
        total_p, total_c = total_p + p, total_c + c
    priced = llm.price_per_1m_input > 0 or llm.price_per_1m_output > 0
    live = (total_p * llm.price_per_1m_input + total_c * llm.price_per_1m_output) / 1e6 if priced else None
    out.update(requests=sum(p.count for p in plans), prompt_tokens=total_p, completion_tokens=total_c,
               live_usd=round(live, 2) if live is not None else None,
               batch_usd=round(live * llm.batch_price_factor, 2) if live is not None else None,
               model=llm.model)
    return out


def estimate_line(est: dict[str, Any]) -> str:
    head = (f"estimate: {est['requests']:,} requests, ~{est['prompt_tokens']:,} prompt + "
            f"~{est['completion_tokens']:,} completion tokens")
    if est["live_usd"] is None:
        return head + " (set [synth.llm] price_per_1m_input/output for a dollar estimate)"
    return head + f": ~${est['live_usd']:,.2f} live, ~${est['batch_usd']:,.2f} with a Batch API ({est['model']})"


# --------------------------------------------------------------------------- prompt files


def write_prompts(plans: list[Plan], folder: Path, llm: Any, progress: Callable[[str], None],
                  per_file: int = 50_000) -> dict[str, Any]:
    """Every request of the plans as JSONL (``prompts/<kind>.jsonl.gz``: id,
    seed, prompt id, messages) and, when the model is named, as Batch API /
    ``vllm run-batch`` input files (``batch/requests-<kind>-NNNN.jsonl``, at
    most ``per_file`` requests each, OpenAI's limit): importing their outputs
    later fills the response cache. Memory is bounded by one file's requests.
    Returns the files written, relative to ``folder``."""
    from phi1.files import atomic_open, jsonl_line
    from phi1.llm import export_batch
    from phi1.llm.schema import request_body, request_key, request_path

    written: dict[str, Any] = {"prompts": [], "batch": []}
    for plan in plans:
        path = folder / "prompts" / f"{plan.kind}.jsonl.gz"
        with atomic_open(path) as fh:
            for group, start in enumerate(range(0, plan.count, per_file)):
                items: list[tuple[str, str, dict[str, Any]]] = []
                for i in range(start, min(plan.count, start + per_file)):
                    seed = plan.seed(i)
                    req = plan.request(seed)
                    fh.write(jsonl_line({"id": plan.record_id(i), "seed": seed.to_json(),
                                         "prompt_id": plan.prompt_id, "max_tokens": plan.max_tokens,
                                         "messages": req.messages}) + "\n")
                    if llm.model:
                        body = request_body(llm, req)
                        items.append((request_key(request_path(req), body), request_path(req), body))
                if items:
                    target = folder / "batch" / f"requests-{plan.kind}-{group:04d}.jsonl"
                    written["batch"] += [str(p.relative_to(folder)) for p in export_batch(target, items, per_file)]
        written["prompts"].append(str(path.relative_to(folder)))
        progress(f"wrote {plan.count:,} {plan.kind} prompts")
    return written
