"""Packing token streams into fixed-length rows, and reading packed shards back.

The `tokenize` stage writes ``<tokenize>/meta.json`` plus flat binary shards
``train/*.bin`` and ``val/*.bin``: each file is a C-order array of ``dtype``
(uint16 when the vocabulary fits, else uint32) holding a whole number of
``seq_len`` rows. Documents are concatenated with ``<|endoftext|>`` after each
one and cut into rows regardless of document boundaries (GPT-style packing);
the last partial row of a split is dropped.

`PackedDataset` memory-maps those shards: random access to any row costs one
page-in, so a 35B-token split needs no RAM and any number of data-loader
workers or ranks can read it at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from phi1.errors import InputError

META = "meta.json"
SPLITS = ("train", "val")
_DTYPES = {"uint16": np.uint16, "uint32": np.uint32}


def dtype_for_vocab(vocab_size: int) -> str:
    """The smallest unsigned dtype holding every id of a ``vocab_size`` vocabulary."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return "uint16" if vocab_size <= np.iinfo(np.uint16).max + 1 else "uint32"


class SequencePacker:
    """Accumulates token ids and hands out full ``seq_len`` rows.

    ``add`` returns the rows completed by the new ids (a 2-D array, possibly
    with zero rows); ``remainder`` is the number of ids still waiting for a
    row: what is dropped if the stream ends now.
    """

    def __init__(self, seq_len: int, dtype: Any = np.uint32):
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        self.seq_len = seq_len
        self.dtype = np.dtype(dtype)
        self._buf = np.empty(0, dtype=self.dtype)
        self.rows_out = 0

    @property
    def remainder(self) -> int:
        return int(self._buf.size)

    def add(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        arr = np.asarray(ids)
        if arr.size and (arr.min() < 0 or arr.max() > np.iinfo(self.dtype).max):
            raise ValueError(f"token id out of range for {self.dtype}: {int(arr.min())}..{int(arr.max())}")
        buf = np.concatenate([self._buf, arr.astype(self.dtype, copy=False)]) if self._buf.size else arr.astype(self.dtype)
        n_rows = buf.size // self.seq_len
        cut = n_rows * self.seq_len
        rows = buf[:cut].reshape(n_rows, self.seq_len)
        # Copy the tail so the (possibly large) concatenated buffer can be freed.
        self._buf = buf[cut:].copy()
        self.rows_out += n_rows
        return rows


# --------------------------------------------------------------------------- reading


def read_meta(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / META
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"not a tokenize output folder (no {META}): {folder}") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: invalid JSON ({e.msg})") from None
    for key in ("seq_len", "dtype", "vocab_size", "eot_id"):
        if key not in meta:
            raise InputError(f"{path}: missing key {key!r}")
    if meta["dtype"] not in _DTYPES:
        raise InputError(f"{path}: dtype must be uint16 or uint32, got {meta['dtype']!r}")
    return meta


class PackedDataset:
    """The rows of one split of a `tokenize` output folder, memory-mapped.

    ``len(ds)`` rows; ``ds[i]`` is a read-only ``np.ndarray`` of ``ds.seq_len``
    token ids (``ds.dtype``); ``ds.batch(indices)`` stacks several rows.
    Picklable (memory maps are reopened lazily), so it can go to DataLoader
    workers.
    """

    def __init__(self, folder: str | Path, split: str = "train"):
        self.folder = Path(folder)
        self.split = split
        self.meta = read_meta(self.folder)
        if split not in self.meta:
            raise InputError(f"{self.folder / META}: no split {split!r} (has: "
                             f"{', '.join(s for s in SPLITS if s in self.meta) or 'none'})")
        self.seq_len: int = int(self.meta["seq_len"])
        self.dtype = np.dtype(_DTYPES[self.meta["dtype"]])
        self.vocab_size: int = int(self.meta["vocab_size"])
        self.eot_id: int = int(self.meta["eot_id"])
        self.files = [self.folder / f for f in self.meta[split].get("files", [])]
        counts = []
        for f in self.files:
            try:
                nbytes = f.stat().st_size
            except FileNotFoundError:
                raise InputError(f"{self.folder / META} lists {f.name}, which is missing") from None
            row_bytes = self.seq_len * self.dtype.itemsize
            if nbytes % row_bytes:
                raise InputError(f"{f}: {nbytes} bytes is not a whole number of {self.seq_len}-token rows")
            counts.append(nbytes // row_bytes)
        self._offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)
        expected = self.meta[split].get("sequences")
        if expected is not None and int(expected) != len(self):
            raise InputError(f"{self.folder / META}: {split} says {expected} sequences, files hold {len(self)}")
        self._maps: list[np.memmap | None] = [None] * len(self.files)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def n_tokens(self) -> int:
        return len(self) * self.seq_len

    def _map(self, k: int) -> np.memmap:
        m = self._maps[k]
        if m is None:
            m = np.memmap(self.files[k], dtype=self.dtype, mode="r").reshape(-1, self.seq_len)
            self._maps[k] = m
        return m

    def __getitem__(self, i: int) -> np.ndarray:
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"row {i} out of range for {n} rows ({self.split})")
        k = int(np.searchsorted(self._offsets, i, side="right")) - 1
        return self._map(k)[i - self._offsets[k]]

    def batch(self, indices: Iterable[int]) -> np.ndarray:
        """Rows ``indices`` as one ``[len(indices), seq_len]`` array (a copy)."""
        idx = list(indices)
        out = np.empty((len(idx), self.seq_len), dtype=self.dtype)
        for j, i in enumerate(idx):
            out[j] = self[i]
        return out

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = [None] * len(self.files)
        return state

    def __repr__(self) -> str:
        return (f"PackedDataset({str(self.folder)!r}, {self.split!r}: {len(self)} rows x {self.seq_len}, "
                f"{self.dtype.name})")
