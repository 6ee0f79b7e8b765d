"""When ``torch.compile`` pays, and compiling the decoder layers.

Compiling costs wall-clock time once (Dynamo traces a decoder layer,
Inductor generates and builds kernels for its forward and backward) and then
saves a fraction of every step (fused elementwise work, fewer launches).
``compile = "auto"`` compiles when the run is long enough for that to pay:

    remaining steps x estimated step time  >=  PAYBACK x estimated compile time

* the step time is estimated before training from what is known then:
  the model FLOPs of one step on one device over the device's peak
  (`phi1.train.metrics`) at an optimistic ``ASSUMED_MFU`` -- a step can only
  take longer than that, so the rule errs towards not compiling;
* the compile time is ``COMPILE_SECONDS`` for the device type, from
  measurements (bench/RESULTS.md): every run that compiles records the time
  its first step took beyond a steady step as ``compile_seconds``;
* ``PAYBACK = 10``: with the ~1.1-1.3x step speed-ups measured, a run ten
  times longer than the compile wins back at least the compile time.

So short runs (tests, the CPU demo) never compile and real GPU runs (thousands
of steps) do. ``compile = true`` / ``false`` decide explicitly.
"""

from __future__ import annotations

from typing import Any

COMPILE_SECONDS = {"cpu": 90.0, "cuda": 60.0}
ASSUMED_MFU = 0.5
PAYBACK = 10.0


def compile_decision(setting: bool | str, *, device_type: str, remaining_steps: int, step_flops: float,
                     peak_flops: float | None) -> tuple[bool, str]:
    """(compile?, the reason in one line) for ``compile = setting``."""
    if setting is True or setting is False:
        return bool(setting), f"compile = {str(setting).lower()} in the config"
    estimate = COMPILE_SECONDS.get(device_type, COMPILE_SECONDS["cpu"])
    if not peak_flops:
        return False, "auto: no peak FLOP/s to estimate the run's length; set compile = true to compile"
    step_s = step_flops / (peak_flops * ASSUMED_MFU)
    run_s = remaining_steps * step_s
    verdict = run_s >= PAYBACK * estimate
    relation = ">=" if verdict else "<"
    return verdict, (f"auto: ~{run_s:,.0f}s of training left (at {ASSUMED_MFU:.0%} MFU) {relation} {PAYBACK:g} x "
                     f"~{estimate:.0f}s to compile on {device_type}")


def compile_layers(model: Any) -> None:
    """``torch.compile`` each decoder layer, as torchtitan does: identical blocks
    share one compiled graph, and FSDP's per-layer hooks stay outside it."""
    for layer in model.model.layers:
        layer.compile()
