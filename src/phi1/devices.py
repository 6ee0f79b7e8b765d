"""Device and dtype choices shared by the stages that run models outside the
training loop (embed/filter, generate): one rule for "auto" everywhere."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from phi1.errors import Phi1Error


def resolve_device(device: str, index: int = 0, key: str = "device") -> str:
    """'auto' -> a CUDA device when one is visible, else 'cpu'. 'auto' and 'cuda'
    pick GPU ``index mod N``, so the tasks or ranks of one machine spread over
    its GPUs; 'cuda:N' and 'cpu' are taken as given. ``key`` names the config
    key in the error when 'cuda' is asked for and there is none."""
    if device not in ("auto", "cuda"):
        return device
    import torch

    if torch.cuda.is_available():
        return f"cuda:{index % torch.cuda.device_count()}"
    if device == "cuda":
        raise Phi1Error(f"{key} = 'cuda' but torch sees no CUDA device (set {key} = 'auto' or 'cpu')")
    return "cpu"


def _cpu_capabilities() -> Mapping[str, Any]:
    """What torch's cpuinfo reports for this CPU (ISA flags, architecture).
    ``torch.cpu.get_capabilities`` is recent; older torch only has the
    per-flag ``torch.cpu._is_*_supported`` probes, which we read instead."""
    import torch

    get = getattr(torch.cpu, "get_capabilities", None)
    if get is not None:
        return get()
    caps: dict[str, Any] = {}
    for flag, probe in (("amx_tile", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported")):
        fn = getattr(torch.cpu, probe, None)
        if fn is not None:
            caps[flag] = bool(fn())
    if caps.get("amx_tile"):
        caps["amx_bf16"] = True  # no separate probe before get_capabilities; every AMX CPU so far has AMX-BF16
    import platform

    caps["architecture"] = platform.machine()
    return caps


def _onednn_bf16() -> tuple[bool, str]:
    """Whether torch's oneDNN (mkldnn) backend is built in and runs bf16 here:
    without it a bf16 matmul falls back to slow reference kernels."""
    import torch

    if not torch.backends.mkldnn.is_available():
        return False, "torch is built without oneDNN (mkldnn)"
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if probe is not None and not probe():
        return False, "oneDNN reports no bf16 support on this CPU"
    return True, ""


def cpu_bf16_support() -> tuple[bool, str]:
    """Whether this CPU has native bf16 matrix multiply, and a one-line reason.

    Decided only from what torch (cpuinfo) and oneDNN report, never from the
    CPU's name: native means AMX-BF16 tiles (with the kernel granting AMX to
    this process) or AVX512-BF16 dot products on x86, or the BF16 extension on
    Arm (BFMMLA, used through oneDNN/ACL). Elsewhere bf16 is emulated and is
    slower than fp32, so callers choose fp32. Cheap; safe to call per stage."""
    import torch

    caps = _cpu_capabilities()
    arch = str(caps.get("architecture", "")).lower()
    onednn, why_not = _onednn_bf16()
    if not onednn:
        return False, why_not
    found = []
    amx_refused = False
    if caps.get("amx_bf16") and caps.get("amx_tile"):
        init = getattr(torch.cpu, "_init_amx", None)
        # AMX needs the OS to enable its tile state for this process (Linux
        # arch_prctl); a kernel or hypervisor that refuses leaves AVX512 only.
        if init is None or init():
            found.append("AMX-BF16")
        else:
            amx_refused = True
    if caps.get("avx512_bf16"):
        found.append("AVX512-BF16")
    if arch in ("aarch64", "arm64") and (caps.get("bf16") or caps.get("sve_bf16")):
        found.append("Arm BF16 (BFMMLA)")
    if found:
        return True, f"the CPU reports {' and '.join(found)} (torch.cpu capabilities; oneDNN bf16 on)"
    isa = torch.backends.cpu.get_cpu_capability()
    if amx_refused:
        return False, f"the CPU has AMX-BF16 but the OS did not enable AMX for this process, and no AVX512-BF16 (torch kernels: {isa})"
    return False, f"the CPU reports no native bf16 matmul (no AMX-BF16 or AVX512-BF16; torch kernels: {isa})"


# Precision names (as in the training config) -> torch dtype names.
PRECISION_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def resolve_precision(precision: str, device: str, key: str = "precision") -> tuple[str, str]:
    """The precision a model runs in for inference, and why (one line, for
    the manifest and the summary). 'auto' -> on a GPU bf16 where it has it,
    else fp16; on a CPU bf16 where `cpu_bf16_support` finds native bf16
    matmul, else fp32. An explicit choice is taken as given, except fp16 on a
    CPU (no fast kernels: a config mistake, said in one line)."""
    # torch's spellings (float32, bfloat16, float16) name the same choices
    precision = {dtype: name for name, dtype in PRECISION_DTYPES.items()}.get(precision, precision)
    if precision not in ("auto", *PRECISION_DTYPES):
        raise Phi1Error(f"{key} = {precision!r} is not one of auto, fp32, bf16, fp16")
    on_gpu = device.startswith("cuda")
    if precision == "fp16" and not on_gpu:
        raise Phi1Error(f"{key} = 'fp16' needs a GPU (device {device!r}); use 'auto', 'bf16' or 'fp32'")
    if precision != "auto":
        if precision == "bf16" and device == "cpu" and not cpu_bf16_support()[0]:
            return "bf16", f"set in the config ({key}); this CPU has no native bf16 matmul, so bf16 is emulated (slower than fp32)"
        return precision, f"set in the config ({key})"
    if on_gpu:
        import torch

        name = torch.cuda.get_device_name(torch.device(device))
        if torch.cuda.is_bf16_supported():
            return "bf16", f"auto: {name} supports bf16"
        return "fp16", f"auto: {name} has no bf16"
    if device == "cpu":
        native, why = cpu_bf16_support()
        return ("bf16" if native else "fp32"), f"auto: {why}"
    return "fp32", f"auto: fp32 on {device}"


def torch_dtype(name: str) -> Any:
    """torch dtype of a dtype name (float32, ...) or a precision name (fp32, ...)."""
    import torch

    name = PRECISION_DTYPES.get(name, name)
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def from_pretrained_dtype(name: str) -> dict[str, Any]:
    """The ``from_pretrained`` keyword for a dtype: transformers renamed
    ``torch_dtype`` to ``dtype`` in 4.56, and older versions would silently
    ignore ``dtype`` and load float32."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": torch_dtype(name)}
