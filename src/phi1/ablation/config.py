"""The `[ablation]` config section: which arms, which seeds, which datasets.

Cheap to import (dataclasses only): `phi1.config` assembles it into the run config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from phi1.sections import option

# The arms, in the paper's order (Figure 2.1): unfiltered code, filtered code,
# filtered code plus synthetic textbooks ("CodeTextbook").
UNFILTERED, FILTERED, SYNTHETIC = "unfiltered", "filtered", "filtered+synthetic"
ARMS = (UNFILTERED, FILTERED, SYNTHETIC)
Arm = Literal["unfiltered", "filtered", "filtered+synthetic"]


@dataclass
class AblationConfig:
    """`phi1 ablation CONFIG`: the same model, at the same token budget, pretrained on
    each arm's corpus and finetuned on the same exercises, once per seed (docs/ablation.md).

    The runs live under ``<run.root>/<run.name>/``: ``base/`` (the shared stages),
    one folder per arm (its tokenize) and one per arm and seed (its training and
    evaluation); a run links the finished stages it shares instead of computing them.
    No stage hashes this section: changing it never makes finished work stale.
    """

    arms: list[Arm] = option(
        list(ARMS), doc="arms to train: unfiltered = an equal-token random sample of `unfiltered`; filtered = "
        "`filtered`; filtered+synthetic = `filtered` plus `synthetic` (skipped, with a notice, while that "
        "dataset has no records)")
    seeds: list[int] = option([0, 1, 2], doc="training seeds (pretrain.seed and finetune.seed) of every arm; "
                              "the spread across them is what a difference between arms is read against")
    unfiltered: str = option("ingest", doc="documents of the unfiltered arm (sampled down to the filtered "
                             "corpus's size)")
    filtered: str = option("filter", doc="documents of the filtered arm (the quality filter's output)")
    synthetic: str = option("synth.textbooks", doc="documents added to the filtered ones in the third arm")
    synthetic_rate: float = option(1.0, gt=0, doc="sampling rate of `synthetic` in the third arm")
    parallel: int = option(2, ge=1, execution=True, doc="arm x seed runs trained at once, each in its own process "
                           "with its log in <run.root>/<run.name>/logs/")
    threads: int = option(
        1, ge=0, execution=True, doc="torch intra-op threads of each process (0 = torch's default, one per core). "
        "1 with parallel = 2 fills 2 cores; two threads of one tiny model stall each other at every op on a "
        "machine shared with other work (measured on 2 cores at load ~4.5: 3,700 tokens/s with 1 thread, 900 "
        "with 2)")
    unfiltered_rate: float = option(
        0.0, ge=0, le=1, doc="sampling rate of `unfiltered` (0 = the filter's token keep rate, from its manifest: "
        "both arms then have about the same corpus tokens)")

    def __post_init__(self) -> None:
        if not self.arms:
            raise ValueError("arms is empty: name at least one of " + ", ".join(ARMS))
        if len(set(self.arms)) != len(self.arms):
            raise ValueError(f"arms names an arm twice: {self.arms}")
        if not self.seeds:
            raise ValueError("seeds is empty: give at least one training seed (three or more to read a spread)")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds repeats a seed: {self.seeds}")
        if any(s < 0 for s in self.seeds):
            raise ValueError(f"seeds must be >= 0, got {self.seeds}")
