"""Building blocks of the typed config: `option`, `ConfigError`, and the
sections shared by several stages (run, executors).

Stage packages define their own sections in ``<package>/config.py`` with
these; `phi1.config` assembles them into `PipelineConfig` and loads TOML.
Cheap to import: no torch, no datatrove.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

class ConfigError(ValueError):
    """A configuration problem; its message is one line naming the key.

    ``key``: the dotted key it is about (``pretrain.lr``, ``ingest.sources[1].kind``,
    a section name), when known: the loader turns it into the file's line number.
    """

    key: str = ""


_MISSING = dataclasses.MISSING


def option(
    default: Any = _MISSING,
    *,
    default_factory: Any = _MISSING,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    doc: str = "",
    execution: bool = False,
) -> Any:
    """A dataclass field with range constraints checked by the loader.

    ``execution=True`` marks a field that changes *how* a stage runs (workers,
    batch sizes that do not change results, devices, parallelism, logging), not
    *what* it produces: it is left out of the stage's identity hash, so
    changing it never makes finished work stale nor discards an interrupted
    attempt (its checkpoints are resumed under the new setting).
    """
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "doc": doc, "execution": execution}
    if default_factory is not _MISSING:
        return field(default_factory=default_factory, metadata=meta)
    if isinstance(default, (list, dict, set)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------- sections
# Sections shared by several stages live here; stage-specific sections live in
# their package's ``config`` module and are assembled in `PipelineConfig`.


@dataclass
class RunConfig:
    """Where a run lives: ``<root>/<name>/<stage>/``."""

    root: str = option("runs", doc="directory holding runs", execution=True)
    name: str = option("demo", doc="run name (a folder under root)", execution=True)
    seed: int = option(0, ge=0, le=2**32 - 1, doc="global seed; stages derive theirs from it "
                       "(at most 2**32 - 1: scikit-learn's and numpy's limit)")
    validation_fraction: float = option(
        0.01, ge=0, lt=1, doc="source documents held out for validation by every stage that splits "
        "(tokenize, mine, synth): one rule, so no validation document is in any training split")
    report: bool = option(True, doc="write <run>/report.html at the end of `phi1 run`", execution=True)

    def __post_init__(self) -> None:
        if not self.root.isprintable():  # a line break in a path breaks every one-line message naming it
            raise ValueError(f"root must be a path without control characters (line breaks, tabs), got {self.root!r}")
        if len(self.name.encode("utf-8", "surrogatepass")) > 255:
            raise ValueError(f"name is {len(self.name.encode('utf-8', 'surrogatepass')):,} bytes long: "
                             "a folder name has at most 255")
        if (not self.name or "/" in self.name or "\\" in self.name or self.name in {".", ".."}
                or self.name != self.name.strip() or not self.name.isprintable()):
            raise ValueError(f"name must be a plain folder name (no slashes, no control characters, no "
                             f"leading or trailing spaces), got {self.name!r}")


@dataclass
class SlurmConfig:
    """Options passed to datatrove's SlurmPipelineExecutor."""

    partition: str = option("", doc="slurm partition (required for kind='slurm')", execution=True)
    time: str = option("24:00:00", doc="per-job time limit", execution=True)
    cpus_per_task: int = option(1, ge=1, execution=True)
    mem_per_cpu_gb: int = option(2, ge=1, execution=True)
    qos: str = option("normal", execution=True)
    max_array_launch_parallel: bool = option(False, execution=True)
    sbatch_args: dict[str, str] = option(default_factory=dict, doc="extra #SBATCH options", execution=True)
    env_command: str = option("", doc="shell line run before each job, e.g. activating the venv "
                              "('' = put the bin folder of the interpreter running phi1 first on PATH)",
                              execution=True)
    poll_s: float = option(30.0, gt=0, doc="phi1 checks its jobs every second at first, then less often, "
                           "up to this many seconds; also how long it waits for late completion markers",
                           execution=True)


@dataclass
class RayConfig:
    """Options passed to datatrove's RayPipelineExecutor."""

    address: str = option("", doc="ray cluster address ('' = ray.init() defaults / local)", execution=True)
    cpus_per_task: int = option(1, ge=1, execution=True)
    mem_per_cpu_gb: int = option(2, ge=1, execution=True)


@dataclass
class ExecutorConfig:
    """Which datatrove executor runs a corpus-scale stage, and how wide."""

    kind: Literal["local", "slurm", "ray"] = option("local", execution=True)
    tasks: int = option(2, ge=1, doc="number of datatrove tasks (shards of the work; part of the identity: "
                        "a resumed attempt must keep its task numbering)")
    workers: int = option(2, ge=-1, doc="tasks run at once (-1 = all tasks); local and ray", execution=True)
    slurm: SlurmConfig = option(default_factory=SlurmConfig, execution=True)
    ray: RayConfig = option(default_factory=RayConfig, execution=True)

    def __post_init__(self) -> None:
        if self.workers == 0:
            raise ValueError("workers must be >= 1 or -1 (all tasks at once)")
        if self.kind == "slurm" and not self.slurm.partition:
            raise ValueError("kind='slurm' needs slurm.partition")


