"""The `decontam` stage's declaration (for `phi1.registry`): what it reads,
what it produces, its config section. Cheap to import."""

from __future__ import annotations

from phi1.decontam.config import DecontamConfig
from phi1.registry import StageSpec
from phi1.stage import DOCUMENTS, EXERCISES, Input

DECONTAM = StageSpec(
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
