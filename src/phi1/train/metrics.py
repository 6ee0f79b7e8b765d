"""Training metrics: the peak FLOP/s that MFU divides by, the metrics log
(JSONL + TensorBoard), training time.

MFU (model FLOPs utilisation, PaLM appendix B) = model FLOPs of the real
(non-padding) tokens trained per second per device / the device's peak
FLOP/s at the training dtype. The peak comes from, in this order:

1. ``peak_flops`` in the config (any device): "config";
2. on a GPU, the vendors' datasheet table below (dense, no sparsity): "table";
3. on a CPU, a measured calibration: the best rate of a few 2048² matmuls
   at the training dtype (fp32, or bf16 under autocast) with the process's
   threads, cached per machine in the run's cache folder
   (``<run>/cache/calibration/``): "measured". Other work on the machine
   only slows a matmul down, so a calibration taken while it was busy reads
   low (and MFU high); the load average is recorded with it and named in the
   label. Delete the cache file to measure again.

An unknown GPU has no peak (MFU is left out, never guessed).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from phi1.files import write_atomic, write_json_atomic

# Dense (no sparsity) peak FLOP/s per device, from the vendors' datasheets.
# bf16/fp16 tensor cores; tf32 for fp32 training (phi1 enables TF32 matmuls).
# More specific names first: "H100 PCIe" must not match the SXM row.
PEAK_FLOPS: tuple[tuple[str, float, float], ...] = (
    # (name substring, bf16/fp16, tf32)
    ("GH200", 989e12, 494.7e12),
    ("H200", 989e12, 494.7e12),
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
CALIBRATION_FILE = "cpu_peak_flops.json"
CALIBRATION_SIZE = 2048


@dataclass(frozen=True)
class Peak:
    """The peak FLOP/s of one device at the training dtype, and where it came from."""

    flops: float | None
    source: str  # "config" | "table" | "measured" | "unknown"
    detail: str  # one line a reader can check

    def label(self) -> str:
        """``peak 1.09e+12 FLOP/s, bf16 2048x2048 matmul measured on this CPU, ...`` (for summaries)."""
        if not self.flops:
            return f"no peak: {self.detail}"
        return f"peak {self.flops:.3g} FLOP/s, {self.detail}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def gpu_peak(name: str, precision: str) -> Peak:
    for key, half, tf32 in PEAK_FLOPS:
        if key in name:
            flops, what = (half, "bf16/fp16") if precision in ("bf16", "fp16") else (tf32, "tf32")
            return Peak(flops, "table", f"{name}: datasheet dense {what} peak (phi1.train.metrics.PEAK_FLOPS)")
    return Peak(None, "unknown", f"{name} is not in phi1.train.metrics.PEAK_FLOPS; set peak_flops in the config")


def resolve_peak(device: torch.device, precision: str, configured: float, cache_dir: Path | None) -> Peak:
    """The peak MFU divides by, for one device of this run."""
    if configured:
        return Peak(float(configured), "config", "peak_flops set in the config")
    if device.type == "cuda":
        return gpu_peak(torch.cuda.get_device_name(device), precision)
    return cpu_peak(precision, cache_dir)


def cpu_peak(precision: str, cache_dir: Path | None) -> Peak:
    """Measured matmul FLOP/s of this CPU at the training dtype, with this
    process's torch threads; read from / written to ``cache_dir`` (a
    calibration is ~0.3 s; keyed by host, CPU, torch version, dtype, threads)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    short = "bf16" if precision == "bf16" else "fp32"
    threads = torch.get_num_threads()
    key = _machine_key(short, threads)
    path = Path(cache_dir) / CALIBRATION_FILE if cache_dir is not None else None
    cached = _read_json(path).get(key) if path is not None else None
    if cached:
        flops, load, how = float(cached["flops"]), float(cached.get("load", 0.0)), "cached"
    else:
        load = _load_average()
        flops, how = measure_matmul_flops(dtype), "just now"
        if path is not None:
            table = _read_json(path)  # re-read: another process may have added a key
            table[key] = {"flops": flops, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "dtype": short,
                          "threads": threads, "size": CALIBRATION_SIZE, "cpu": cpu_name(), "load": load}
            write_json_atomic(path, table)
    n = CALIBRATION_SIZE
    busy = ""
    cores = os.cpu_count() or 1
    if load > cores:  # other processes had the cores: the peak reads low and MFU high
        busy = f"; machine busy when measured (load {load:.1f} on {cores} cores): peak reads low"
    return Peak(flops, "measured", f"{short} {n}x{n} matmul measured on this CPU, {threads} threads ({how}{busy})")


def measure_matmul_flops(dtype: torch.dtype, n: int = CALIBRATION_SIZE, budget_s: float = 0.4,
                         min_reps: int = 3) -> float:
    """FLOP/s of the fastest of a few ``n x n @ n x n`` matmuls (2n³ FLOPs each).

    The best, not the mean: on a shared machine other work only ever slows a
    repetition down, so the fastest is the least disturbed.
    """
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)  # first call: kernel selection, page faults
    best, reps, started = float("inf"), 0, time.perf_counter()
    while reps < min_reps or time.perf_counter() - started < budget_s:
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
        reps += 1
    return 2.0 * n**3 / best


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _machine_key(dtype: str, threads: int) -> str:
    flags = ""
    try:
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    except OSError:
        pass
    ident = "|".join([socket.gethostname(), cpu_name(), flags, torch.__version__])
    return f"{hashlib.sha256(ident.encode()).hexdigest()[:16]}/{dtype}/{threads}t"


def _read_json(path: Path | None) -> dict[str, Any]:
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}  # a damaged cache is re-measured, never trusted
    return data if isinstance(data, dict) else {}


def mfu(model_flops_per_s_per_device: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s per device over its peak."""
    if not peak:
        return None
    return model_flops_per_s_per_device / peak


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
        write_atomic(self.path, "".join(k + "\n" for k in keep))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
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
