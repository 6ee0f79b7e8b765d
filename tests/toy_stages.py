"""Small real stages used to test the pipeline's mechanics (not phi1's data stages).

Each is what a plugin author writes: one module with a config section class,
a `run(ctx)` function and a `StageSpec` — nothing else in phi1 changes.
`count` writes one file per item into its output dataset, skipping items
already written when resuming; `double` reads whatever dataset
``double.inputs`` names and writes a summary.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

from phi1.registry import StageSpec
from phi1.sections import option
from phi1.stage import Input, Output, StageContext, StageResult


@dataclass
class CountConfig:
    items: int = option(5, ge=0, doc="how many items to write")
    flaky: int = option(0, ge=0, doc="items reported as failed (a re-run retries them)")
    delay: float = option(0.0, ge=0, doc="seconds per item", execution=True)
    workers: int = option(1, ge=1, doc="an execution field: never part of the identity", execution=True)


@dataclass
class DoubleConfig:
    inputs: str = option("count", doc="dataset (toy-items) to read")
    factor: int = option(2, ge=1)


@dataclass
class SkipConfig:
    inputs: str = option("double")


@dataclass
class AfterConfig:
    inputs: str = option("skipper")
    factor: int = option(2, ge=1)


@dataclass
class MaybeConfig:
    inputs: str = option("count")
    factor: int = option(2, ge=1)
    when: int = option(0)


def run_count(ctx: StageContext) -> StageResult:
    cfg = ctx.section
    items = ctx.output()
    items.mkdir(exist_ok=True)
    done_now = 0
    for i in range(cfg.items):
        out = items / f"{i:04d}.txt"
        if out.exists():  # finished by an interrupted attempt: not redone
            continue
        time.sleep(cfg.delay)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(f"item {i}\n")
        os.replace(tmp, out)
        done_now += 1
        with open(ctx.work_dir / "work.log", "a") as f:
            f.write(f"{i}\n")
    with open(ctx.work_dir / "runs.log", "a") as f:
        f.write("run\n")
    return StageResult(counts={"items": cfg.items, "computed": done_now}, summary=[f"{cfg.items} items"],
                       failed=cfg.flaky)


def run_double(ctx: StageContext) -> StageResult:
    src = ctx.input("inputs").path
    total = len(list(src.glob("*.txt")))
    (ctx.output() / "double.json").write_text(json.dumps({"double": ctx.section.factor * total}))
    return StageResult(counts={"double": ctx.section.factor * total})


def run_skip(ctx: StageContext) -> StageResult:
    from phi1.errors import SkipStage

    raise SkipStage("no endpoint configured")


def run_fail(ctx: StageContext) -> StageResult:
    (ctx.work_dir / "half.txt").write_text("half")
    raise RuntimeError("boom")


def skip_unless_when_is_7(config) -> str | None:
    return None if config.section("maybe").when == 7 else "maybe.when is not 7"


COUNT = StageSpec("count", "toy_stages:run_count", "toy: write items",
                  produces=(Output("", "toy-items", "items"),), config_class=CountConfig)
DOUBLE = StageSpec("double", "toy_stages:run_double", "toy: read items",
                   produces=(Output("", "toy-summary"),), consumes=(Input("inputs", ("toy-items",)),),
                   config_class=DoubleConfig)
TOY = (COUNT, DOUBLE)
TOY_SKIP = TOY + (
    StageSpec("skipper", "toy_stages:run_skip", "toy: skips", produces=(Output("", "toy-items"),),
              consumes=(Input("inputs", ("toy-summary",)),), config_class=SkipConfig),
    StageSpec("after", "toy_stages:run_double", "toy: after skipper", produces=(Output("", "toy-summary"),),
              consumes=(Input("inputs", ("toy-items",)),), config_class=AfterConfig),
)
TOY_FAIL = (StageSpec("count", "toy_stages:run_fail", "toy: fails", produces=(Output("", "toy-items", "items"),),
                      config_class=CountConfig), DOUBLE)
TOY_SKIP_IF = TOY + (
    StageSpec("maybe", "toy_stages:run_double", "toy: config-skipped", produces=(Output("", "toy-summary"),),
              consumes=(Input("inputs", ("toy-items",)),), config_class=MaybeConfig,
              skip_if="toy_stages:skip_unless_when_is_7"),
)


def run_count_on_rank0(ctx: StageContext) -> StageResult:
    """Like `run_count`, but only rank 0 of a torchrun job writes (as real data stages do)."""
    if not ctx.is_main:
        return StageResult()
    return run_count(ctx)


def run_double_every_rank(ctx: StageContext) -> StageResult:
    """Every rank reads the upstream dataset (as training stages do) and notes what it saw."""
    src = ctx.input("inputs").path
    total = len(list(src.glob("*.txt")))
    (ctx.work_dir / f"seen-rank{ctx.rank}.json").write_text(json.dumps({"items": total}))
    return StageResult(counts={"double": ctx.section.factor * total})


RANKED = (
    StageSpec("count", "toy_stages:run_count_on_rank0", "toy: rank 0 writes items",
              produces=(Output("", "toy-items", "items"),), config_class=CountConfig),
    StageSpec("double", "toy_stages:run_double_every_rank", "toy: every rank reads items",
              produces=(Output("", "toy-summary"),), consumes=(Input("inputs", ("toy-items",)),),
              config_class=DoubleConfig),
    StageSpec("triple", "toy_stages:run_double_every_rank", "toy: every rank reads items again",
              produces=(Output("", "toy-summary"),), consumes=(Input("inputs", ("toy-items",)),),
              config_class=DoubleConfig),
)
