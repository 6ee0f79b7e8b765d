"""On-disk embedding cache: vectors keyed by (embedder, document id, text hash).

One folder per embedder identity (`Embedder.key`), by default
``<run>/cache/embeddings/<name>-<key>/``. It lives outside every stage
folder on purpose: the pipeline replaces ``<run>/<stage>/`` when a stage
re-runs, while this cache must survive so that re-running `embed` or
`filter`, or training a second classifier, re-embeds nothing.

Layout::

    meta.json                       embedder description (name, dim, key, ...)
    part-<time>-<uuid>.npy          float32 [n, dim] vectors
    part-<time>-<uuid>.keys.npy     16-byte keys (S16) of those rows

A shard is complete when its ``.keys.npy`` exists (written after the vectors,
each by temp file + rename), so a killed writer leaves nothing that reads as
valid. Writers never append to a shard: concurrent datatrove tasks each write
their own shards, so many processes can share one cache folder (also on a
shared filesystem).

Lookup keeps only the keys in memory (16 bytes + 8 bytes of shard/row per
vector, sorted, binary search: 20M documents cost ~480 MB) and memory-maps
the vector files it reads from, a bounded number at a time.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from phi1.errors import Phi1Error
from phi1.files import atomic_open

KEY_DTYPE = np.dtype("S16")


def doc_key(doc_id: str, text: str) -> bytes:
    """16-byte key of one document: its id and the hash of its text."""
    text_hash = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass") + b"\0" + text_hash, digest_size=16).digest()


class EmbeddingCache:
    """Shard cache of vectors for one embedder."""

    def __init__(self, folder: str | Path, meta: dict[str, Any] | None = None, flush_rows: int = 4096,
                 open_shards: int = 64):
        self.folder = Path(folder)
        self.meta = dict(meta or {})
        self.flush_rows = flush_rows
        self.open_shards = open_shards
        # Sorted key segments: the shards found at first lookup, then one per shard
        # this process writes (no re-read of the folder after each flush).
        self._segments: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None  # (keys, shard, row)
        self._shards: list[Path] = []
        self._open: OrderedDict[int, np.ndarray] = OrderedDict()  # LRU of memory-mapped vector files
        self._pending_keys: list[bytes] = []
        self._pending_vecs: list[np.ndarray] = []
        self._pending_index: dict[bytes, int] = {}
        self.hits = 0
        self.misses = 0
        self._check_meta()

    # -- metadata --------------------------------------------------------------
    def _check_meta(self) -> None:
        path = self.folder / "meta.json"
        if not path.exists() or not self.meta.get("key"):
            return
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise Phi1Error(f"embedding cache {path} is unreadable ({e}); delete that folder to rebuild it") from None
        if stored.get("key") != self.meta["key"]:
            raise Phi1Error(f"embedding cache {self.folder} belongs to embedder key {stored.get('key')!r}, "
                            f"not {self.meta['key']!r}; point embed.cache_dir elsewhere")
        self.meta = {**stored, **{k: v for k, v in self.meta.items() if v is not None}}

    @property
    def dim(self) -> int | None:
        d = self.meta.get("dim")
        return int(d) if d else None

    # -- index -----------------------------------------------------------------
    def _segment(self, keys: np.ndarray, shard: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        order = np.argsort(keys, kind="stable")
        return keys[order], np.full(len(keys), shard, np.int32), order.astype(np.int32)

    def _load_index(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        if self._segments is not None:
            return self._segments
        keys, shards, rows = [], [], []
        if self.folder.is_dir():
            for kp in sorted(self.folder.glob("part-*.keys.npy")):
                vp = kp.with_name(kp.name[: -len(".keys.npy")] + ".npy")
                try:
                    k = np.load(kp)
                    shape = _npy_shape(vp)
                except (OSError, ValueError):
                    continue  # unreadable shard (e.g. removed meanwhile): its vectors are recomputed
                if len(shape) != 2 or shape[0] != len(k) or k.dtype != KEY_DTYPE:
                    continue
                idx = len(self._shards)
                self._shards.append(vp)
                keys.append(k)
                shards.append(np.full(len(k), idx, np.int32))
                rows.append(np.arange(len(k), dtype=np.int32))
        self._segments = []
        if keys:
            allk = np.concatenate(keys)
            order = np.argsort(allk, kind="stable")
            self._segments.append((allk[order], np.concatenate(shards)[order], np.concatenate(rows)[order]))
        return self._segments

    def _vectors(self, shard: int) -> np.ndarray:
        v = self._open.get(shard)
        if v is None:
            # Bounded: each memory map holds a file descriptor, and a 35B-token run has thousands of shards.
            if len(self._open) >= self.open_shards:
                self._open.popitem(last=False)
            v = self._open[shard] = np.load(self._shards[shard], mmap_mode="r")
        else:
            self._open.move_to_end(shard)
        return v

    def __len__(self) -> int:
        return sum(len(seg[0]) for seg in self._load_index()) + len(self._pending_keys)

    def get(self, keys: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray | None]:
        """(found mask, vectors of the found keys in order)."""
        segments = self._load_index()
        n = len(keys)
        found = np.zeros(n, dtype=bool)
        if n == 0:
            return found, None
        q = np.array(keys, dtype=KEY_DTYPE)
        where_shard = np.full(n, -1, np.int64)
        where_row = np.zeros(n, np.int64)
        for seg_keys, seg_shard, seg_row in segments:
            if not len(seg_keys):
                continue
            pos = np.minimum(np.searchsorted(seg_keys, q), len(seg_keys) - 1)
            hit = ~found & (seg_keys[pos] == q)
            where_shard[hit], where_row[hit] = seg_shard[pos[hit]], seg_row[pos[hit]]
            found |= hit
        out: dict[int, np.ndarray] = {}
        for shard in np.unique(where_shard[found]):
            idx = np.nonzero(where_shard == shard)[0]
            rows = where_row[idx]
            order = np.argsort(rows)  # memory maps read fastest in file order
            block = np.asarray(self._vectors(int(shard))[rows[order]], dtype=np.float32)
            for i, r in zip(idx[order], block):
                out[int(i)] = r
        for i in np.nonzero(~found)[0]:
            j = self._pending_index.get(keys[i])
            if j is not None:
                out[int(i)] = self._pending_vecs[j]
                found[i] = True
        self.hits += int(found.sum())
        self.misses += int(n - found.sum())
        if not found.any():
            return found, None
        return found, np.stack([out[int(i)] for i in np.nonzero(found)[0]]).astype(np.float32, copy=False)

    # -- writing ---------------------------------------------------------------
    def put(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        for k, v in zip(keys, vectors):
            if k in self._pending_index:
                continue
            self._pending_index[k] = len(self._pending_vecs)
            self._pending_keys.append(k)
            self._pending_vecs.append(np.asarray(v, dtype=np.float32))
        if len(self._pending_keys) >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        """Write buffered vectors as one new shard (atomic)."""
        if not self._pending_keys:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        vecs = np.stack(self._pending_vecs).astype(np.float32)
        keys = np.array(self._pending_keys, dtype=KEY_DTYPE)
        meta_path = self.folder / "meta.json"
        if not meta_path.exists():
            self.meta["dim"] = int(vecs.shape[1])
            _atomic_save(meta_path, lambda f: f.write(json.dumps(self.meta, indent=2, sort_keys=True).encode()))
        stem = f"part-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:12]}"
        _atomic_save(self.folder / f"{stem}.npy", lambda f: np.save(f, vecs))
        _atomic_save(self.folder / f"{stem}.keys.npy", lambda f: np.save(f, keys))
        if self._segments is not None:
            self._shards.append(self.folder / f"{stem}.npy")
            self._segments.append(self._segment(keys, len(self._shards) - 1))
        self._pending_keys, self._pending_vecs, self._pending_index = [], [], {}


def _npy_shape(path: Path) -> tuple[int, ...]:
    """Shape from a .npy header, without mapping the file."""
    with open(path, "rb") as f:
        fmt = np.lib.format
        version = fmt.read_magic(f)
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _fortran, dtype = read(f)
        need = f.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize
    if path.stat().st_size < need:  # cut short (a damaged disk, a copy that stopped): not usable
        raise ValueError(f"{path} is shorter than its header says")
    return tuple(shape)


def _atomic_save(path: Path, write: Any) -> None:
    with atomic_open(path, "wb") as f:
        write(f)


class CachedEmbedder:
    """An `Embedder` behind an `EmbeddingCache`: only cache misses reach the model."""

    def __init__(self, embedder: Any, cache: EmbeddingCache | None):
        self.embedder = embedder
        self.cache = cache
        self.embedded = 0  # documents that went through the model

    @property
    def dim(self) -> int:
        if self.cache is not None and self.cache.dim:
            return self.cache.dim
        return self.embedder.dim

    def describe(self) -> dict[str, Any]:
        """The embedder's identity, without loading a model when the cache already knows it."""
        if getattr(self.embedder, "_model", None) is None and self.cache is not None \
                and self.cache.meta.get("dim") and self.cache.meta.get("max_tokens"):
            return dict(self.cache.meta)
        return self.embedder.describe()

    def embed_documents(self, ids: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        if self.cache is None:
            out = self.embedder.embed(texts)
            self.embedded += len(texts)
            return out
        keys = [doc_key(i, t) for i, t in zip(ids, texts)]
        found, cached = self.cache.get(keys)
        if found.all():
            assert cached is not None
            return cached
        miss = np.nonzero(~found)[0]
        fresh = self.embedder.embed([texts[i] for i in miss])
        self.embedded += len(miss)
        if not self.cache.meta.get("max_tokens"):  # the model is loaded now: record what it really used
            self.cache.meta.update(self.embedder.describe())
        self.cache.put([keys[i] for i in miss], fresh)
        out = np.empty((len(texts), fresh.shape[1]), dtype=np.float32)
        out[miss] = fresh
        if cached is not None:
            out[np.nonzero(found)[0]] = cached
        return out

    def flush(self) -> None:
        if self.cache is not None:
            self.cache.flush()


def cache_folder(root: str | Path, embedder: Any) -> Path:
    """``<root>/<name>-<key>``: one folder per embedder identity."""
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in embedder.name.split("/")[-1])
    return Path(root) / f"{slug}-{embedder.key}"


def open_cached_embedder(embedder: Any, root: str | Path | None, flush_rows: int = 4096) -> CachedEmbedder:
    """The embedder behind its cache folder under `root` (None = no cache)."""
    if root is None:
        return CachedEmbedder(embedder, None)
    meta = {"name": embedder.name, "key": embedder.key, "backend": embedder.backend,
            "normalize": embedder.normalize, "model": str(getattr(embedder, "model_ref", ""))}
    return CachedEmbedder(embedder, EmbeddingCache(cache_folder(root, embedder), meta, flush_rows))
