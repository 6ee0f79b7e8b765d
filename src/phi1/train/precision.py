"""Which floating-point format a training run computes in, and why.

Master weights, gradients and optimizer state are always fp32; ``bf16`` and
``fp16`` run the forward and backward matmuls under ``torch.autocast`` (or,
under FSDP, gather bf16 weights through its ``MixedPrecisionPolicy``).

``precision = "auto"`` decides from what the device reports, never from its
name:

* GPU: bf16 where ``torch.cuda.is_bf16_supported()`` (Ampere and later),
  else fp16 with loss scaling (the paper trained in fp16);
* CPU: bf16 where the CPU multiplies bf16 natively (AMX-BF16, AVX512-BF16
  or Arm BF16, as torch and oneDNN report it: `phi1.devices.cpu_bf16_support`),
  about 5x the fp32 matmul rate on AMX; fp32 elsewhere, where bf16 is
  emulated and slower than fp32.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Precision:
    name: str  # fp32 | bf16 | fp16
    reason: str  # one line: why this one

    @property
    def half(self) -> torch.dtype | None:
        """The autocast dtype, None for fp32."""
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    def autocast(self, device: torch.device, enabled: bool = True) -> Any:
        """Context for forward passes: autocast to the half dtype, or nothing."""
        if self.half is None or not enabled:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.half)


def choose_precision(requested: str, device: torch.device, key: str = "precision") -> Precision:
    """Resolve the config's ``precision`` on ``device``: the one rule every
    stage uses (`phi1.devices.resolve_precision`), with its reason."""
    from phi1.devices import resolve_precision

    name, reason = resolve_precision(requested, str(device), key=key)
    if name == "fp16":
        reason += "; fp16 trains with loss scaling"
    return Precision(name, reason)
