"""Datasets as the unit of data flow, resolved in one place.

Every stage declares what it produces (`Output`: a dataset with a kind) and
which keys of its config section name what it reads (`Input`). This module
turns a config into a graph: for each stage, the datasets its keys reference
(checking that each exists and is of a kind the key accepts), the upstream
stages that follows from, and the order to run the stages in. The pipeline
uses the graph for staleness and fingerprints; `phi1 stages` prints it; stages
receive their resolved inputs as `phi1.stage.Dataset` objects.

References: ``"filter"`` is the main dataset of stage ``filter``;
``"synth.exercises"`` is dataset ``exercises`` of stage ``synth``. A mixture
input takes a table ``{reference = weight}`` (weights > 0 are read) or a list
of references (weight 1 each). An input marked ``external`` also takes a path
or a hub name (``generate.model = "microsoft/phi-1"``).
"""

from __future__ import annotations

import difflib
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phi1.config import ConfigError
from phi1.manifest import read_manifest
from phi1.registry import StageSpec, load_entry
from phi1.stage import Dataset, Input, Output


@dataclass(frozen=True)
class Edge:
    """One resolved reference: ``consumer.key`` reads dataset ``ref``."""

    consumer: str
    key: str
    ref: str
    kind: str
    weight: float = 1.0
    stage: str = ""  # the producing stage ("" for an external input)
    path: str = "."  # inside the producer's folder; for an external input, the path or hub name
    external: bool = False


@dataclass
class Plan:
    """One stage in this config: its spec and its resolved inputs."""

    spec: StageSpec
    edges: dict[str, list[Edge]] = field(default_factory=dict)  # config key -> edges

    @property
    def upstream(self) -> tuple[str, ...]:
        seen: list[str] = []
        for edges in self.edges.values():
            for e in edges:
                if e.stage and e.stage not in seen:
                    seen.append(e.stage)
        return tuple(seen)

    @property
    def externals(self) -> list[Edge]:
        return [e for edges in self.edges.values() for e in edges if e.external]


MAX_WEIGHT = 1000  # a mixture weight is a sampling rate: copies of each record


def dataset_ref(stage: str, output: Output) -> str:
    return stage if not output.name else f"{stage}.{output.name}"


def _looks_like_path(value: str) -> bool:
    return "/" in value or os.sep in value or value.startswith((".", "~")) or Path(value).exists()


class Graph:
    """The data-flow graph of one config over a list of stages."""

    def __init__(self, config: Any, stages: tuple[StageSpec, ...]):
        self.config = config
        self.stages = stages
        self.produced: dict[str, tuple[StageSpec, Output]] = {}
        for spec in stages:
            for out in spec.outputs(config):
                self.produced[dataset_ref(spec.name, out)] = (spec, out)
        plans = {spec.name: self._plan(spec) for spec in stages}
        self.order = self._order(plans)
        self.plans = {name: plans[name] for name in self.order}

    # ------------------------------------------------------------------ resolving

    def _plan(self, spec: StageSpec) -> Plan:
        plan = Plan(spec)
        if not spec.consumes:
            return plan
        section = self.config.section(spec.section_name)
        for inp in spec.consumes:
            if inp.when and not load_entry(inp.when)(self.config):
                continue
            where = f"{spec.section_name}.{inp.key}"
            if not hasattr(section, inp.key):
                raise ConfigError(f"stage {spec.name!r} declares input {inp.key!r}, but [{spec.section_name}] "
                                  f"has no such key")
            try:
                plan.edges[inp.key] = self._edges(spec, inp, getattr(section, inp.key), where)
            except ConfigError as e:
                e.key = e.key or where  # the CLI names the file line or the --set that gave it
                raise
        return plan

    def _edges(self, spec: StageSpec, inp: Input, value: Any, where: str) -> list[Edge]:
        if inp.mixture:
            if isinstance(value, str):
                items = [(value, 1.0)] if value else []
            elif isinstance(value, dict):
                items = [(str(k), float(w)) for k, w in value.items()]
            elif isinstance(value, (list, tuple)):
                items = [(str(k), 1.0) for k in value]
                twice = sorted({k for k, _ in items if [r for r, _ in items].count(k) > 1})
                if twice:  # a table cannot repeat a key; a list can, and the dataset would be read twice
                    raise ConfigError(f"{where} names {', '.join(map(repr, twice))} more than once: "
                                      "list each dataset once")
            else:
                raise ConfigError(f"{where} must be a table {{dataset = weight}} or a list of datasets, "
                                  f"got {value!r}")
            for ref, w in items:
                if not (w >= 0 and w != float("inf")):
                    raise ConfigError(f"{where}.{ref} = {w}: a weight must be a finite number >= 0")
                if w > MAX_WEIGHT:  # copies per record: 1e300 would loop for ever
                    raise ConfigError(f"{where}.{ref} = {w:g}: a weight is copies per record, at most {MAX_WEIGHT}")
            edges = [self._edge(spec, inp, ref, w, where) for ref, w in items if w > 0]
            if not edges:
                raise ConfigError(f"{where} names no dataset with a weight > 0{self._examples(inp)}")
            return edges
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a dataset reference (a string), got {value!r}")
        if not value:
            if inp.optional:
                return []
            raise ConfigError(f"{where} is empty: name a dataset{self._examples(inp)}")
        return [self._edge(spec, inp, value, 1.0, where)]

    def _edge(self, spec: StageSpec, inp: Input, ref: str, weight: float, where: str) -> Edge:
        found = self.produced.get(ref)
        if found is None:
            if inp.external and _looks_like_path(ref):
                return Edge(spec.name, inp.key, ref, inp.kinds[0], weight, "", ref, external=True)
            close = difflib.get_close_matches(ref, list(self.produced), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            extra = " or a path" if inp.external else ""
            raise ConfigError(f"{where}: unknown dataset {ref!r}{hint}; {where} takes a dataset{extra}"
                              f"{self._examples(inp)}")
        producer, out = found
        if out.kind not in inp.kinds:
            raise ConfigError(f"{where}: {ref!r} is {out.kind}, but {where} takes "
                              f"{' or '.join(inp.kinds)}{self._examples(inp)}")
        if producer.name == spec.name:
            raise ConfigError(f"{where}: stage {spec.name!r} cannot read its own output {ref!r}")
        return Edge(spec.name, inp.key, ref, out.kind, weight, producer.name, out.path)

    def _examples(self, inp: Input) -> str:
        refs = sorted(r for r, (_, o) in self.produced.items() if o.kind in inp.kinds)
        return f" (datasets of that kind here: {', '.join(refs)})" if refs else ""

    def _order(self, plans: dict[str, Plan]) -> list[str]:
        """Topological order; ties keep the registry's order. A cycle is a config error."""
        index = {s.name: i for i, s in enumerate(self.stages)}
        remaining = {name: set(p.upstream) for name, p in plans.items()}
        order: list[str] = []
        while remaining:
            ready = sorted((n for n, ups in remaining.items() if not ups & remaining.keys()), key=index.get)
            if not ready:
                raise ConfigError(f"the stages' inputs form a cycle: {self._cycle(plans, remaining)}; "
                                  f"change one of these keys")
            order.append(ready[0])
            del remaining[ready[0]]
        return order

    @staticmethod
    def _cycle(plans: dict[str, Plan], remaining: dict[str, set[str]]) -> str:
        """One cycle among ``remaining`` as the keys that make it
        (``mine.inputs reads synth.textbooks; synth.dedup_against reads mine``)."""
        start = min(remaining)
        path = [start]
        while True:  # every stage left has an upstream left: walking back must close a loop
            up = sorted(u for u in remaining[path[-1]] if u in remaining)[0]
            if up in path:
                loop = path[path.index(up):] + [up]
                break
            path.append(up)
        reads = []
        for consumer, producer in zip(loop, loop[1:]):
            for key, edges in plans[consumer].edges.items():
                for e in edges:
                    if e.stage == producer:
                        reads.append(f"{plans[consumer].spec.section_name}.{key} reads {e.ref}")
                        break
                else:
                    continue
                break
        return "; ".join(reversed(reads))

    # ------------------------------------------------------------------ using

    def plan(self, name: str) -> Plan:
        return self.plans[name]

    def downstream(self, name: str) -> list[str]:
        """Stages that read ``name``'s outputs, directly or not, in run order."""
        hit = {name}
        for n in self.order:
            if set(self.plans[n].upstream) & hit:
                hit.add(n)
        return [n for n in self.order if n in hit and n != name]

    def datasets(self, name: str, run_dir: Path) -> dict[str, list[Dataset]]:
        """The resolved inputs of stage ``name`` as `Dataset` objects under ``run_dir``."""
        out: dict[str, list[Dataset]] = {}
        for key, edges in self.plans[name].edges.items():
            items = []
            for e in edges:
                if e.external:
                    items.append(Dataset(e.ref, e.kind, Path(e.path).expanduser(), "", e.weight, "", True))
                    continue
                folder = run_dir / e.stage
                run_id = read_manifest(folder).get("run_id", "")
                path = folder if e.path == "." else folder / e.path
                items.append(Dataset(e.ref, e.kind, path, e.stage, e.weight, run_id))
            out[key] = items
        return out

    def describe(self) -> list[str]:
        """What reads what: one line per stage, in run order."""
        lines = []
        for name in self.order:
            plan = self.plans[name]
            outs = ", ".join(f"{dataset_ref(name, o)} ({o.kind})" for o in plan.spec.outputs(self.config)) or "-"
            reads = []
            for key, edges in plan.edges.items():
                refs = " + ".join(e.ref if e.weight == 1.0 else f"{e.ref} x{e.weight:g}" for e in edges)
                reads.append(f"{key} = {refs}")
            lines.append(f"{name:<11} reads {'; '.join(reads) if reads else '(sources)':<48} -> {outs}")
        return lines


def external_fingerprint(value: str) -> str:
    """Identity of an input outside the run: a folder's file names, sizes and
    modification times (no content read: model folders are GBs), a file's
    size and time, or the name itself (a hub name)."""
    p = Path(value).expanduser()
    h = hashlib.sha256(str(p).encode())
    if p.is_dir():
        for f in sorted(p.rglob("*")):
            if f.is_file() and len(f.relative_to(p).parts) <= 2:
                st = f.stat()
                h.update(f"{f.relative_to(p)}:{st.st_size}:{st.st_mtime_ns}".encode())
    elif p.is_file():
        st = p.stat()
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    else:
        return f"name:{value}"
    return h.hexdigest()[:16]
