"""Small real stages used to test the pipeline's mechanics (not phi1's data stages).

`count` writes one file per item into its work dir, skipping items already
written when resuming; `double` reads count's output and writes a summary.
"""

from __future__ import annotations

import json
import os
import time

from phi1.pipeline import StageContext, StageResult, StageSpec


def run_count(ctx: StageContext) -> StageResult:
    n = int(os.environ.get("TOY_ITEMS", "5"))
    delay = float(os.environ.get("TOY_DELAY", "0"))
    items = ctx.work_dir / "items"
    items.mkdir(exist_ok=True)
    done_now = 0
    for i in range(n):
        out = items / f"{i:04d}.txt"
        if out.exists():  # finished by an interrupted attempt: not redone
            continue
        time.sleep(delay)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(f"item {i}\n")
        os.replace(tmp, out)
        done_now += 1
        with open(ctx.work_dir / "work.log", "a") as f:
            f.write(f"{i}\n")
    return StageResult(counts={"items": n, "computed": done_now}, summary=[f"{n} items"])


def run_double(ctx: StageContext) -> StageResult:
    src = ctx.input_dir("count") / "items"
    total = len(list(src.glob("*.txt")))
    (ctx.work_dir / "double.json").write_text(json.dumps({"double": 2 * total}))
    return StageResult(counts={"double": 2 * total})


def run_skip(ctx: StageContext) -> StageResult:
    from phi1.errors import SkipStage

    raise SkipStage("no endpoint configured")


def run_fail(ctx: StageContext) -> StageResult:
    (ctx.work_dir / "half.txt").write_text("half")
    raise RuntimeError("boom")


TOY = (
    StageSpec("count", "toy_stages:run_count", ("annotate",), (), "toy: write items"),
    StageSpec("double", "toy_stages:run_double", ("classifier",), ("count",), "toy: read items"),
)
TOY_SKIP = TOY + (
    StageSpec("skipper", "toy_stages:run_skip", ("grade",), ("double",), "toy: skips"),
    StageSpec("after", "toy_stages:run_double", ("execute",), ("count", "skipper"), "toy: after skipper"),
)
TOY_FAIL = (StageSpec("count", "toy_stages:run_fail", ("annotate",), (), "toy: fails"),)


def skip_unless_samples_is_7(config) -> str | None:
    return None if config.annotate.samples == 7 else "annotate.samples is not 7"


TOY_SKIP_IF = TOY + (
    StageSpec("maybe", "toy_stages:run_double", ("grade",), ("count",), "toy: config-skipped",
              skip_if="toy_stages:skip_unless_samples_is_7"),
)
