"""Training metrics: MFU, the metrics log (JSONL + TensorBoard), throughput."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

# Dense (no sparsity) peak FLOP/s per device, from the vendors' datasheets.
# bf16/fp16 tensor cores; tf32 for fp32 training (phi1 enables TF32 matmuls).
# More specific names first: "H100 PCIe" must not match the SXM row.
PEAK_FLOPS: tuple[tuple[str, float, float], ...] = (
    # (name substring, bf16/fp16, tf32)
    ("H200", 989e12, 494.7e12),
    ("GH200", 989e12, 494.7e12),
    ("H100 PCIe", 756e12, 378e12),
    ("H100 NVL", 835e12, 417.5e12),
    ("H100", 989e12, 494.7e12),
    ("H800", 989e12, 494.7e12),
    ("A100", 312e12, 156e12),
    ("A800", 312e12, 156e12),
    ("L40S", 362e12, 183e12),
    ("A10G", 70e12, 35e12),
    ("L4", 121e12, 60e12),
)

METRICS_FILE = "metrics.jsonl"


def peak_flops(device: torch.device, precision: str, cfg: Any) -> float | None:
    """Per-device peak FLOP/s for MFU, or None when the GPU is not in the table
    (set ``peak_flops`` in the config for it)."""
    if cfg.peak_flops:
        return float(cfg.peak_flops)
    if device.type != "cuda":
        return float(cfg.cpu_peak_flops)
    name = torch.cuda.get_device_name(device)
    for key, half, tf32 in PEAK_FLOPS:
        if key in name:
            return half if precision in ("bf16", "fp16") else tf32
    return None


def mfu(tokens_per_s_per_device: float, flops_per_token: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation (PaLM): achieved model FLOP/s over peak."""
    if not peak:
        return None
    return tokens_per_s_per_device * flops_per_token / peak


class MetricsLog:
    """``<stage>/metrics.jsonl`` (one JSON object per line, with its ``step``)
    and TensorBoard events under ``<stage>/tensorboard`` when tensorboard is
    installed. Only rank 0 writes."""

    def __init__(self, folder: Path, enabled: bool, tensorboard: bool):
        self.path = Path(folder) / METRICS_FILE
        self.enabled = enabled
        self._fh = None
        self._tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(folder) / "tensorboard"))
            except (ImportError, ModuleNotFoundError):
                self._tb = None

    def truncate_after(self, step: int) -> None:
        """Drop lines past ``step``: a resumed run rewrites them."""
        if not self.enabled or not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except json.JSONDecodeError:
                continue  # a line cut short by the crash
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(k + "\n" for k in keep))
        os.replace(tmp, self.path)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self._fh is None:
            self._fh = open(self.path, "a")
        self._fh.write(json.dumps(record, sort_keys=True) + "\n")
        self._fh.flush()
        if self._tb is not None:
            kind = record.get("kind", "train")
            for k, v in record.items():
                if k not in ("step", "kind") and isinstance(v, (int, float)) and v is not None:
                    self._tb.add_scalar(f"{kind}/{k}", v, record["step"])

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class Stopwatch:
    """Training time only: evaluation and checkpointing are paused out."""

    def __init__(self) -> None:
        self.total = 0.0
        self._t0: float | None = None

    def start(self) -> None:
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def stop(self) -> float:
        if self._t0 is not None:
            self.total += time.perf_counter() - self._t0
            self._t0 = None
        return self.total

    def read(self) -> float:
        return self.total + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)
