"""`phi1 synth-plan CONFIG`: what `synth` would ask for and what it would cost.

A dry run: it loads the seed space, draws the seeds, renders a sample of the
prompts for the token estimate, and prints the plan, the coverage of the
seeds asked for and the cost estimate (live and Batch API, at the prices of
``[synth.llm]``). Nothing is sent and nothing is written.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("synth-plan", help="dry run of synth: seed space, requests, seed coverage and cost "
                       "estimate (sends and writes nothing)")
    p.add_argument("config", help="run config (TOML), e.g. configs/phi-1.toml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set synth.exercises=1000 (repeatable)")


def run_command(args: argparse.Namespace) -> int:
    from phi1.config import load_config

    for line in plan_lines(load_config(args.config, args.overrides)):
        print(line)
    return 0


def plan_lines(config: Any) -> list[str]:
    from phi1.synth.plan import estimate, estimate_line, make_plans, requested_coverage
    from phi1.synth.report import coverage_lines
    from phi1.synth.seeds import SeedSpace

    cfg = config.section("synth")
    space = SeedSpace.load(cfg.seed_space)
    s = space.sizes()
    lines = [
        f"seed space ({cfg.seed_space or 'packaged'}, {space.fingerprint}): {s['concepts']} leaves "
        f"({s['exercise_concepts']} for exercises) in {s['topics']} topics of {s['areas']} areas, "
        f"{s['audiences']} audiences, {s['styles']} styles, {s['difficulties']} difficulties, "
        f"{s['scenarios']} scenarios ({s['scenario_objects']} objects), {s['function_names']:,} function names",
        f"distinct seeds: {s['textbook_combinations']:,} textbooks, {s['exercise_combinations']:,} exercises",
    ]
    plans = make_plans(cfg, space, config.run.seed)
    if not plans:
        return lines + ["nothing asked for: synth.textbooks = synth.exercises = 0"]
    for p in plans:
        lines.append(f"{p.kind}: {p.count:,} requests ({p.prompt_id}, max_tokens {p.max_tokens}, expected reply "
                     f"~{p.reply_tokens} tokens)")
    lines += coverage_lines({p.kind: requested_coverage(p) for p in plans})
    lines.append(estimate_line(estimate(plans, cfg.llm)))
    llm = cfg.llm
    if cfg.backend == "transformers":
        mode = f"the local model {cfg.local_model or '(synth.local_model is not set)'}"
    elif llm.batch_export:
        mode = f"batch files: requests missing from the cache are written next to {llm.batch_export}"
    elif llm.base_urls:
        mode = f"{', '.join(llm.base_urls)}, model {llm.model or '(synth.llm.model is not set)'}"
    elif llm.batch_import:
        mode = f"the batch outputs {', '.join(llm.batch_import)} (nothing else: no base_urls)"
    else:
        mode = "nobody (no endpoint): a run writes the prompts and a Batch API file, and no records"
    lines.append(f"answered by: {mode}")
    return lines
