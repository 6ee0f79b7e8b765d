"""Stand-ins for the stages around `decontam`, so its test runs the real
pipeline (data-flow resolution, pruned datasets read downstream) in seconds.

They take the names of the real producers (``mine``: exercises, ``filter``:
documents), so decontam's outputs get their kinds from the registry as in a
real run; ``consume`` reads an exercises dataset the way finetune does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import decontam_fixtures as fx
from phi1.documents import read_jsonl, write_jsonl
from phi1.registry import StageSpec
from phi1.sections import option
from phi1.stage import DOCUMENTS, EXERCISES, Input, Output, StageContext, StageResult


def run_mine(ctx: StageContext) -> StageResult:
    out = ctx.output()
    records = fx.real_exercises() + fx.planted_exercises()
    write_jsonl(out / "train.jsonl.gz", records[1::2])
    write_jsonl(out / "val.jsonl.gz", records[0::2])
    return StageResult(counts={"records": len(records)})


def run_filter(ctx: StageContext) -> StageResult:
    docs = fx.documents_with_plants()
    write_jsonl(ctx.output() / "00000.jsonl.gz", docs[:3])
    write_jsonl(ctx.output() / "00001.jsonl.gz", docs[3:])
    return StageResult(counts={"documents": len(docs)})


@dataclass
class ConsumeConfig:
    inputs: list[str] = option(["decontam.mine"], doc="exercise datasets to read")


def run_consume(ctx: StageContext) -> StageResult:
    ids = []
    for d in ctx.mixture("inputs"):
        for name in ("train.jsonl.gz", "val.jsonl.gz"):
            ids += [r["id"] for r in read_jsonl(d.path / name)]
    (ctx.output() / "ids.json").write_text(json.dumps(ids))
    return StageResult(counts={"records": len(ids)})


MINE = StageSpec("mine", "decontam_toy_stages:run_mine", "toy: real + planted exercises",
                 produces=(Output("", EXERCISES),))
FILTER = StageSpec("filter", "decontam_toy_stages:run_filter", "toy: stdlib modules, two with planted copies",
                   produces=(Output("", DOCUMENTS, "docs"),))
CONSUME = StageSpec("consume", "decontam_toy_stages:run_consume", "toy: reads exercises like finetune",
                    produces=(Output("", "toy-ids"),), consumes=(Input("inputs", (EXERCISES,), mixture=True),),
                    config_class=ConsumeConfig)
