"""The ablation's runs as pipeline configs, and which stages each one computes.

One config file describes the whole pipeline. The ablation splits its stages
in three by the data flow (`phi1.dataflow.Graph`), never by name:

* *seeded*: the training stages (sections with a training ``seed``) and
  everything downstream of them (finetune, generate, execute, ...): computed
  once per arm and seed;
* *arm*: the stage whose mixture differs between arms (``tokenize``) and what
  follows it up to the training: computed once per arm;
* *shared*: all the others (ingest ... filter, tokenizer, mine, synth):
  computed once, in ``base/``.

A run folder links (relative symlinks) the finished stage folders it shares
with ``base/`` and with its arm's folder, so the pipeline finds them current
(a stage's identity is the hash of its config sections plus its upstream
run_ids; ``run.root`` and ``run.name`` are execution fields) and never
computes them again.

Cheap to import: no torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phi1.ablation.config import ARMS, FILTERED, SYNTHETIC, UNFILTERED
from phi1.config import ConfigError, PipelineConfig
from phi1.dataflow import Graph
from phi1.errors import Phi1Error
from phi1.manifest import read_manifest

MIXTURE_STAGE = "tokenize"  # the stage whose `inputs` mixture is what the arms change
MIXTURE_KEY = "inputs"
BASE = "base"


@dataclass(frozen=True)
class StageSplit:
    """Which stages of the graph are computed where."""

    shared: tuple[str, ...]
    arm: tuple[str, ...]
    seeded: tuple[str, ...]


@dataclass(frozen=True)
class Arm:
    """One arm: its name, its pretraining mixture, and why (for the table)."""

    name: str
    mixture: dict[str, float]
    label: str


@dataclass(frozen=True)
class RunPlan:
    """One run folder of the ablation: its config, what it computes, what it links."""

    config: PipelineConfig
    stages: tuple[str, ...]  # computed in this folder
    links: dict[str, str]  # stage -> run folder (a sibling) whose finished stage this one uses
    arm: str = ""
    seed: int | None = None

    @property
    def name(self) -> str:
        return self.config.run.name

    @property
    def path(self) -> Path:
        return self.config.run_dir


def training_sections(config: PipelineConfig, graph: Graph) -> list[str]:
    """Stages whose config section has a training ``seed`` (pretrain, finetune)."""
    from phi1.train.config import TrainConfig  # dataclasses only

    return [n for n in graph.order if isinstance(config.section(graph.plan(n).spec.section_name), TrainConfig)]


def split_stages(config: PipelineConfig, stages: Any = None) -> StageSplit:
    """Shared / per-arm / per-seed stages of ``config``'s data-flow graph.

    Shared are only the stages some arm's training needs (upstream of its
    mixture or of its training and evaluation, in any arm's config): a stage
    no arm reads (a decontamination table, say) is not the ablation's work.
    """
    from phi1.registry import all_stages

    stages = stages if stages is not None else all_stages()
    graph = Graph(config, stages)
    if MIXTURE_STAGE not in graph.plans:
        raise ConfigError(f"the ablation varies {MIXTURE_STAGE}.{MIXTURE_KEY}, but no stage {MIXTURE_STAGE!r} "
                          "is registered")
    trained = training_sections(config, graph)
    if not trained:
        raise ConfigError("the ablation trains once per seed, but this config has no training stage")
    seeded = set(trained)
    for name in trained:
        seeded.update(graph.downstream(name))
    arm = ({MIXTURE_STAGE} | set(graph.downstream(MIXTURE_STAGE))) - seeded
    if not set(graph.downstream(MIXTURE_STAGE)) & seeded:
        raise ConfigError(f"no training stage reads {MIXTURE_STAGE}'s output: check pretrain.data")
    needed: set[str] = set()
    ab = config.ablation
    roots = arm | seeded
    if UNFILTERED in ab.arms and not ab.unfiltered_rate:  # the unfiltered arm's rate is the filter's keep rate
        producer = graph.produced.get(ab.filtered)
        if producer is None:
            raise ConfigError(f"ablation.filtered = {ab.filtered!r}: no stage produces that dataset")
        needed.add(producer[0].name)
        roots = roots | {producer[0].name}
    for a in arms(config, 0.5):  # the rate only scales a weight: it changes no edge of the graph
        try:
            g = Graph(arm_config(config, a, a.name), stages)
        except ConfigError as e:  # the mixture is the ablation's, not the file's tokenize.inputs
            raise ConfigError(f"ablation arm {a.name!r} ({a.label}; from ablation.unfiltered, .filtered, "
                              f".synthetic, .synthetic_rate): {e}") from None
        todo = list(roots)
        while todo:
            for up in g.plan(todo.pop()).upstream:
                if up not in needed:
                    needed.add(up)
                    todo.append(up)
    order = graph.order
    return StageSplit(shared=tuple(n for n in order if n in needed and n not in arm and n not in seeded),
                      arm=tuple(n for n in order if n in arm),
                      seeded=tuple(n for n in order if n in seeded))


def with_run(config: PipelineConfig, name: str, report: bool = False, **sections: Any) -> PipelineConfig:
    """A copy of ``config`` whose runs live under the ablation folder as ``name``,
    with the given sections replaced. Only ``base/`` gets a run report (when
    ``run.report``): the arms' and seeds' are the ablation's own page, and
    ``phi1 report <folder>`` draws any of theirs on demand."""
    run = dataclasses.replace(config.run, root=str(config.run_dir), name=name, report=report and config.run.report)
    return dataclasses.replace(config, run=run, **sections)


def base_run(config: PipelineConfig, split: StageSplit) -> RunPlan:
    return RunPlan(with_run(config, BASE, report=True), split.shared, {})


def unfiltered_rate(config: PipelineConfig, base: Path) -> tuple[float, str]:
    """The sampling rate of the unfiltered arm and where it came from.

    ``ablation.unfiltered_rate`` when set; else the token keep rate of the stage
    that produced ``ablation.filtered`` out of ``ablation.unfiltered`` (the
    filter's ``metrics.keep_rate_tokens``), so both arms' corpora hold about the
    same number of tokens.
    """
    ab = config.ablation
    if ab.unfiltered_rate > 0:
        return ab.unfiltered_rate, "ablation.unfiltered_rate"
    stage = ab.filtered.split(".")[0]
    m = read_manifest(base / stage)
    if m.get("status") != "done":
        raise Phi1Error(f"ablation: {base / stage} is not finished; the unfiltered arm's rate comes from it")
    read = [d.get("ref") for ds in (m.get("datasets") or {}).values() for d in ds]
    if ab.unfiltered not in read:
        raise ConfigError(f"ablation.unfiltered = {ab.unfiltered!r}, but stage {stage!r} (ablation.filtered) read "
                          f"{', '.join(map(repr, read)) or 'nothing'}: its keep rate is not a share of "
                          f"{ab.unfiltered!r}; set ablation.unfiltered_rate")
    rate = (m.get("metrics") or {}).get("keep_rate_tokens")
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 < rate <= 1:
        raise Phi1Error(f"ablation: {base / stage / 'manifest.json'} has no usable metrics.keep_rate_tokens "
                        f"({rate!r}); set ablation.unfiltered_rate")
    return float(rate), f"{stage}'s token keep rate ({base.name}/{stage}/manifest.json metrics.keep_rate_tokens)"


def arms(config: PipelineConfig, rate: float) -> list[Arm]:
    """The arms this config asks for, in the paper's order, with their mixtures."""
    ab = config.ablation
    made = {
        UNFILTERED: Arm(UNFILTERED, {ab.unfiltered: rate},
                        f"(a) {ab.unfiltered} sampled x{rate:.3g} (equal tokens)"),
        FILTERED: Arm(FILTERED, {ab.filtered: 1.0}, f"(b) {ab.filtered}"),
        SYNTHETIC: Arm(SYNTHETIC, {ab.filtered: 1.0, ab.synthetic: ab.synthetic_rate},
                       f"(c) {ab.filtered} + {ab.synthetic}"
                       + (f" x{ab.synthetic_rate:g}" if ab.synthetic_rate != 1 else "")),
    }
    return [made[a] for a in ARMS if a in ab.arms]


def arm_config(config: PipelineConfig, arm: Arm, name: str) -> PipelineConfig:
    section = getattr(config, MIXTURE_STAGE)
    return with_run(config, name, **{MIXTURE_STAGE: dataclasses.replace(section, **{MIXTURE_KEY: dict(arm.mixture)})})


def seed_config(config: PipelineConfig, arm: Arm, seed: int, name: str, stages: Any = None) -> PipelineConfig:
    """The arm's config with every training section's ``seed`` set."""
    from phi1.registry import all_stages

    cfg = arm_config(config, arm, name)
    graph = Graph(cfg, stages if stages is not None else all_stages())
    changed = {}
    for stage in training_sections(cfg, graph):
        section = graph.plan(stage).spec.section_name
        changed[section] = dataclasses.replace(cfg.section(section), seed=seed)
    return dataclasses.replace(cfg, **changed)


def arm_runs(config: PipelineConfig, split: StageSplit, arm: Arm,
             stages: Any = None) -> tuple[RunPlan, list[RunPlan]]:
    """The arm's own run (its tokenize) and one run per seed."""
    own = RunPlan(arm_config(config, arm, arm.name), split.arm, {s: BASE for s in split.shared}, arm.name)
    links = {**{s: BASE for s in split.shared}, **{s: arm.name for s in split.arm}}
    seeded = [RunPlan(seed_config(config, arm, seed, f"{arm.name}-s{seed}", stages), split.seeded, links,
                      arm.name, seed) for seed in config.ablation.seeds]
    return own, seeded
