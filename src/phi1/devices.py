"""Device and dtype choices shared by the stages that run models outside the
training loop (embed/filter, generate): one rule for "auto" everywhere."""

from __future__ import annotations

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


def resolve_dtype(dtype: str, device: str) -> str:
    """'auto' -> bf16 on GPUs that have it, fp16 on older ones, fp32 on CPU."""
    if dtype != "auto":
        return dtype
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def torch_dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def from_pretrained_dtype(name: str) -> dict[str, Any]:
    """The ``from_pretrained`` keyword for a dtype: transformers renamed
    ``torch_dtype`` to ``dtype`` in 4.56, and older versions would silently
    ignore ``dtype`` and load float32."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": torch_dtype(name)}
