"""The stages phi1 knows: what each produces, what it consumes, where its code is.

A `StageSpec` declares a stage; nothing else in phi1 needs to change to add
one. The built-in stages are `STAGES` below; a package can add its own through
the ``phi1.stages`` entry-point group (each entry point a `StageSpec`, or a
callable returning a list of them), with its config section class in
``config_class``. Which dataset a consumer reads is set in the config
(`Input` keys) and resolved by `phi1.dataflow`; the run order follows from it.

Cheap to import: no torch, no datatrove.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any, Callable

from phi1.errors import Phi1Error
from phi1.stage import (CLASSIFIER, CONTAMINATION, DOCUMENTS, EXERCISES, GRADES, LABELS, MODEL, RESULTS, SAMPLES,
                        TOKENIZER, TOKENS, VECTORS, Input, Output)


@dataclass(frozen=True)
class StageSpec:
    """One stage: its name, its code, its config section, its datasets."""

    name: str
    entry: str  # "module:function", imported lazily so the CLI stays fast
    help: str
    produces: tuple[Output, ...] = ()
    consumes: tuple[Input, ...] = ()
    section: str = ""  # config section ("" = the stage's name)
    # Other sections whose *identity* fields change this stage's output (e.g. the
    # model preset for pretrain). Execution fields are never hashed.
    also_hashes: tuple[str, ...] = ()
    config_class: Any = None  # the section's dataclass, for stages outside PipelineConfig
    # "module:function(config) -> tuple[Output, ...]": outputs that depend on the config
    produces_for: str | None = None
    # "module:function(config) -> str": fingerprint of inputs outside the run (source files)
    fingerprint: str | None = None
    # "module:function(config) -> str | None": a reason to skip the stage in this config
    skip_if: str | None = None
    paper: str = ""  # the paper's section, for docs and `phi1 stages`

    @property
    def section_name(self) -> str:
        return self.section or self.name

    @property
    def sections(self) -> tuple[str, ...]:
        return (self.section_name, *self.also_hashes)

    def outputs(self, config: Any) -> tuple[Output, ...]:
        if self.produces_for:
            return tuple(load_entry(self.produces_for)(config))
        return self.produces

    def skip_reason(self, config: Any) -> str | None:
        return load_entry(self.skip_if)(config) if self.skip_if else None

    def load(self) -> Callable[..., Any]:
        return load_entry(self.entry)


def load_entry(entry: str) -> Any:
    """Import ``"module:attribute"``."""
    module, _, attr = entry.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise Phi1Error(f"cannot load {entry!r}: {e}") from None


def _main(kind: str, path: str = ".", doc: str = "") -> Output:
    return Output("", kind, path, doc)


# The paper's pipeline. Listed in a natural reading order; `phi1 run` follows
# the data-flow graph the config resolves to (ties keep this order).
STAGES: tuple[StageSpec, ...] = (
    StageSpec("ingest", "phi1.corpus.ingest:run", "read sources, clean, dedup -> documents",
              produces=(_main(DOCUMENTS, "docs"),),
              fingerprint="phi1.corpus.ingest:fingerprint_sources", paper="2.1 (The Stack, StackOverflow)"),
    StageSpec("annotate", "phi1.quality.annotate:run", "teacher rates the educational value of a sample",
              produces=(_main(LABELS, "labels.jsonl"),),
              consumes=(Input("documents", (DOCUMENTS,)),), paper="2.1 (GPT-4 annotations)"),
    StageSpec("embed", "phi1.quality.embed:run", "embed documents (CodeGen / sentence-transformers)",
              produces=(_main(VECTORS),),
              consumes=(Input("documents", (DOCUMENTS,)),
                        Input("labels", (LABELS,), when="phi1.quality.config:embed_reads_labels")),
              paper="2.1 (CodeGen embeddings)"),
    StageSpec("classifier", "phi1.quality.classifier:run", "random forest on embeddings -> quality model",
              produces=(_main(CLASSIFIER),),
              consumes=(Input("labels", (LABELS,)), Input("vectors", (VECTORS,))),
              paper="2.1 (random forest)"),
    StageSpec("filter", "phi1.quality.filter:run", "keep textbook-quality documents",
              produces=(_main(DOCUMENTS, "docs"), Output("excluded", DOCUMENTS, "excluded",
                                                         "dropped documents, with their scores")),
              consumes=(Input("documents", (DOCUMENTS,)), Input("classifier", (CLASSIFIER,))),
              also_hashes=("embed",), paper="2.1 (filtered code-language dataset)"),
    StageSpec("mine", "phi1.synth.mine:run", "mine CodeExercises-format records from documents",
              produces=(_main(EXERCISES),),
              consumes=(Input("inputs", (DOCUMENTS,), mixture=True),),
              also_hashes=("run",), paper="2.2 (CodeExercises format)"),
    StageSpec("synth", "phi1.synth.stage:run", "synthetic textbooks and exercises from an LLM (seeded, validated, "
              "deduplicated)",
              produces=(Output("textbooks", DOCUMENTS, "textbooks", "synthetic textbook sections"),
                        Output("exercises", EXERCISES, "exercises", "synthetic exercises, validated in the sandbox")),
              consumes=(Input("dedup_against", (EXERCISES,), optional=True,
                              doc="exercises synthetic ones must not duplicate (e.g. mine)"),),
              also_hashes=("run", "execute"),
              fingerprint="phi1.synth.seeds:fingerprint", paper="2.2 (synthetic textbooks, CodeExercises)"),
    StageSpec("decontam", "phi1.decontam.stage:run",
              "check training data against the benchmark (n-gram, AST, embedding); prune per τ",
              consumes=(Input("inputs", (EXERCISES, DOCUMENTS), mixture=True,
                              doc="exercise and document datasets to check and prune"),),
              produces_for="phi1.decontam.config:decontam_outputs", also_hashes=("embed",),
              fingerprint="phi1.decontam.config:fingerprint_problems",
              paper="5 (data pruning for unbiased performance evaluation)"),
    StageSpec("tokenizer", "phi1.model.tokenizer:run", "load or train the tokenizer",
              produces=(_main(TOKENIZER, "tokenizer"),),
              consumes=(Input("inputs", (DOCUMENTS,), mixture=True),),
              paper="2.3 (codegen-350M-mono tokenizer)"),
    StageSpec("tokenize", "phi1.train.tokenize:run", "tokenize and pack into fixed-length shards",
              produces=(_main(TOKENS),),
              consumes=(Input("inputs", (DOCUMENTS,), mixture=True), Input("tokenizer", (TOKENIZER,))),
              also_hashes=("run",), paper="2.3 (sequences of 2048, <|endoftext|>)"),
    StageSpec("pretrain", "phi1.train.pretrain:run", "pretrain the model (phi-1-base)",
              produces=(_main(MODEL, "model"),),
              consumes=(Input("data", (TOKENS,)), Input("tokenizer", (TOKENIZER,))),
              also_hashes=("model",), paper="2.3 (pretraining)"),
    StageSpec("finetune", "phi1.train.finetune:run", "finetune on exercises and export the best checkpoint",
              produces=(_main(MODEL, "model"),),
              consumes=(Input("inputs", (EXERCISES,), mixture=True), Input("model", (MODEL,)),
                        Input("tokenizer", (TOKENIZER,))),
              paper="2.3 (finetuning)"),
    StageSpec("generate", "phi1.evaluate.generate:run", "generate completions for benchmark problems",
              produces=(_main(SAMPLES),),
              consumes=(Input("model", (MODEL,), external=True,
                              when="phi1.evaluate.config:generate_reads_model"),),
              paper="3 (HumanEval)"),
    StageSpec("execute", "phi1.evaluate.execute:run", "run completions in the sandbox, pass@k",
              produces=(_main(RESULTS),),
              consumes=(Input("samples", (SAMPLES,)),
                        Input("contamination", (CONTAMINATION,), optional=True,
                              doc="a decontam table: Table 3 (pass@1 with/without a similar training record)")),
              paper="3 (pass@1); 5 (Table 3)"),
    StageSpec("grade", "phi1.evaluate.grade:run", "LLM grader: verbal evaluation + 0-10 grade",
              produces=(_main(GRADES),),
              consumes=(Input("samples", (SAMPLES,)),),
              skip_if="phi1.evaluate.config:grade_skip_reason", paper="3.1 (GPT-4 grading)"),
)


def entry_point_stages() -> tuple[StageSpec, ...]:
    """Stages other packages register under the ``phi1.stages`` entry-point group."""
    from importlib.metadata import entry_points

    found: list[StageSpec] = []
    for ep in entry_points(group="phi1.stages"):
        obj = ep.load()
        items = obj() if callable(obj) and not isinstance(obj, StageSpec) else obj
        for spec in (items if isinstance(items, (list, tuple)) else [items]):
            if not isinstance(spec, StageSpec):
                raise Phi1Error(f"entry point {ep.name!r} ({ep.value}) is not a phi1 StageSpec")
            found.append(spec)
    return tuple(found)


def all_stages() -> tuple[StageSpec, ...]:
    """The built-in stages, then the plugins' (a plugin may not reuse a name)."""
    stages = STAGES + entry_point_stages()
    names = [s.name for s in stages]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise Phi1Error(f"two stages are registered as {', '.join(map(repr, dup))}")
    return stages


def get_stage(name: str, stages: tuple[StageSpec, ...] = STAGES) -> StageSpec:
    for s in stages:
        if s.name == name:
            return s
    names = [s.name for s in stages]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise Phi1Error(f"unknown stage {name!r}{hint}; stages: {', '.join(names)}")
