"""The `decontam` stage's declaration: what it reads, what it produces, its
config section. Cheap to import.

`phi1.registry` lists the built-in stages; until it lists `decontam`, this
declaration is the one to pass (``Pipeline(config, stages=STAGES + (DECONTAM,))``).
Once it does, `DECONTAM` is the registered one, so there is a single
declaration in use.
"""

from __future__ import annotations

from phi1.decontam.config import DecontamConfig
from phi1.registry import STAGES, StageSpec
from phi1.stage import DOCUMENTS, EXERCISES, Input

DECONTAM: StageSpec = next((s for s in STAGES if s.name == "decontam"), None) or StageSpec(
    "decontam", "phi1.decontam.stage:run",
    "check training data against the benchmark (n-gram, AST, embedding); prune per τ",
    consumes=(Input("inputs", (EXERCISES, DOCUMENTS), mixture=True,
                    doc="exercise and document datasets to check and prune"),),
    produces_for="phi1.decontam.config:decontam_outputs",
    also_hashes=("embed",),
    config_class=DecontamConfig,
    fingerprint="phi1.decontam.config:fingerprint_problems",
    paper="5 (data pruning for unbiased performance evaluation)",
)
