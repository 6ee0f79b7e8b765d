"""The paper's central experiment in miniature (Figure 2.1): the same model at the
same token budget, pretrained on unfiltered vs filtered (vs filtered + synthetic)
data, each finetuned on the same exercises, over several training seeds.

`phi1 ablation CONFIG` (`run_ablation`) drives it through the pipeline: shared
stages run once and are linked into every run that reads them (`phi1.ablation.plan`).
Cheap to import.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_ablation"]


def run_ablation(config: Any, echo: Any = print, stages: Any = None) -> Any:
    """Run or resume the ablation of ``config``; returns its `AblationSummary`. See `phi1.ablation.run`."""
    from phi1.ablation.run import run_ablation as _run

    return _run(config, echo, stages)
