"""phi1.devices.cpu_bf16_support: decided from the capabilities torch reports,
never from the CPU's name."""

from __future__ import annotations

from types import MappingProxyType

import pytest
import torch

from phi1 import devices
from phi1.errors import Phi1Error


def _report(monkeypatch, caps: dict, *, amx_granted: bool = True, onednn: bool = True) -> None:
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: MappingProxyType(caps))
    monkeypatch.setattr(torch.cpu, "_init_amx", lambda: amx_granted)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: onednn)


X86 = {"architecture": "x86_64", "avx2": True, "avx512_f": True, "cpu_name": "Intel Xeon"}


def test_amx_cpu_is_bf16_native(monkeypatch):
    _report(monkeypatch, {**X86, "amx_tile": True, "amx_bf16": True, "avx512_bf16": True})
    ok, why = devices.cpu_bf16_support()
    assert ok and "AMX-BF16" in why and "AVX512-BF16" in why


def test_avx512_bf16_without_amx_is_native(monkeypatch):
    # e.g. AMD Zen 4 or Intel Cooper Lake: the flag decides, not the vendor
    _report(monkeypatch, {**X86, "cpu_name": "AMD EPYC", "avx512_bf16": True})
    ok, why = devices.cpu_bf16_support()
    assert ok and "AVX512-BF16" in why and "AMX" not in why


def test_cpu_without_bf16_flags_is_fp32_whatever_its_name(monkeypatch):
    _report(monkeypatch, {**X86, "cpu_name": "Intel Xeon Sapphire Rapids AMX", "amx_int8": True})
    ok, why = devices.cpu_bf16_support()
    assert not ok and "no native bf16" in why


def test_amx_refused_by_the_kernel_is_not_counted(monkeypatch):
    _report(monkeypatch, {**X86, "amx_tile": True, "amx_bf16": True}, amx_granted=False)
    ok, why = devices.cpu_bf16_support()
    assert not ok and "did not enable AMX" in why


def test_torch_without_onednn_is_fp32(monkeypatch):
    _report(monkeypatch, {**X86, "amx_tile": True, "amx_bf16": True, "avx512_bf16": True}, onednn=False)
    ok, why = devices.cpu_bf16_support()
    assert not ok and "without oneDNN" in why


def test_arm_bf16_extension_is_native(monkeypatch):
    _report(monkeypatch, {"architecture": "aarch64", "neon": True, "bf16": True})
    assert devices.cpu_bf16_support()[0]
    _report(monkeypatch, {"architecture": "aarch64", "neon": True, "bf16": False})
    assert not devices.cpu_bf16_support()[0]


def test_older_torch_without_get_capabilities_uses_the_flag_probes(monkeypatch):
    monkeypatch.delattr(torch.cpu, "get_capabilities")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    ok, why = devices.cpu_bf16_support()
    assert ok and "AVX512-BF16" in why
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert not devices.cpu_bf16_support()[0]


def test_this_machine_agrees_with_what_torch_reports():
    caps = torch.cpu.get_capabilities()
    ok, why = devices.cpu_bf16_support()
    assert isinstance(why, str) and why and "\n" not in why
    native_flag = bool(caps.get("avx512_bf16") or (caps.get("amx_bf16") and caps.get("amx_tile")) or caps.get("bf16"))
    if not torch.backends.mkldnn.is_available():
        assert not ok
    elif ok:
        assert native_flag
    else:
        assert not caps.get("avx512_bf16")


def test_auto_precision_on_cpu_follows_the_capability(monkeypatch):
    _report(monkeypatch, {**X86, "amx_tile": True, "amx_bf16": True})
    assert devices.resolve_precision("auto", "cpu") == ("bf16", "auto: " + devices.cpu_bf16_support()[1])
    _report(monkeypatch, {**X86})
    precision, why = devices.resolve_precision("auto", "cpu")
    assert precision == "fp32" and why.startswith("auto: ") and "no native bf16" in why


def test_explicit_precision_is_taken_and_fp16_on_cpu_is_refused(monkeypatch):
    _report(monkeypatch, {**X86})
    assert devices.resolve_precision("fp32", "cpu")[0] == "fp32"
    precision, why = devices.resolve_precision("bf16", "cpu", key="embed.precision")
    assert precision == "bf16" and "emulated" in why and "embed.precision" in why
    with pytest.raises(Phi1Error, match=r"generate.precision = 'fp16' needs a GPU"):
        devices.resolve_precision("fp16", "cpu", key="generate.precision")
    with pytest.raises(Phi1Error, match="not one of auto, fp32, bf16, fp16"):
        devices.resolve_precision("fp64", "cpu")
    assert devices.resolve_precision("bfloat16", "cpu")[0] == "bf16"  # torch's spelling of the same choice


def test_torch_dtype_takes_both_spellings():
    assert devices.torch_dtype("bf16") is devices.torch_dtype("bfloat16") is torch.bfloat16
    assert devices.torch_dtype("fp32") is torch.float32


def test_auto_precision_on_a_gpu_is_bf16_where_it_has_it(monkeypatch):
    # The GPU branch, exercised without a GPU: what torch.cuda reports decides.
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert devices.resolve_precision("auto", "cuda:0") == ("bf16", "auto: NVIDIA H200 supports bf16")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert devices.resolve_precision("auto", "cuda:1") == ("fp16", "auto: Tesla V100 has no bf16")
    assert devices.resolve_precision("fp16", "cuda:0")[0] == "fp16"
