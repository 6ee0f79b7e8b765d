"""What the training loop reads: examples, batches, and which rank reads which.

An *example* is a token sequence plus an optional loss mask (`Example`):
pretraining rows from the packed shards have no mask (every next token is a
target); a CodeExercises record masks its prompt when finetuning on the
solution only; a HumanEval problem always masks its prompt.

Batch order is a pure function of (seed, step): global batch ``s`` is
positions ``s*B .. s*B+B-1`` of an endless stream made of one seeded
permutation of the dataset per epoch. Each rank takes its contiguous slice
of that batch. So resuming needs only the step, and 1 process or N ranks
see exactly the same global batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol, Sequence

import numpy as np
import torch

from phi1.files import atomic_open

IGNORE = -100  # label of positions that are not targets (torch cross_entropy's ignore_index)


@dataclass
class Example:
    ids: np.ndarray  # token ids
    mask: np.ndarray | None = None  # mask[t]: token t is a target (predicted from tokens < t)


class ExampleSource(Protocol):
    def __len__(self) -> int: ...

    def example(self, i: int) -> Example: ...


class TokenRows:
    """Rows of a `PackedDataset` as examples (every token a target)."""

    uniform_targets = True  # every row has the same number of targets: ranks need not count together

    def __init__(self, packed: Any):
        self.packed = packed
        self.seq_len = int(packed.seq_len)

    def __len__(self) -> int:
        return len(self.packed)

    def example(self, i: int) -> Example:
        return Example(np.asarray(self.packed[int(i)], dtype=np.int64))


class RowArrays:
    """Fixed-length rows held as one ``[rows, seq_len]`` array (packed
    exercises), with an optional loss mask of the same shape."""

    def __init__(self, ids: np.ndarray, mask: np.ndarray | None = None):
        if ids.ndim != 2 or (mask is not None and mask.shape != ids.shape):
            raise ValueError(f"rows must be 2-D with a mask of the same shape, got {ids.shape}, "
                             f"{None if mask is None else mask.shape}")
        self.ids, self.mask = ids, mask
        self.seq_len = int(ids.shape[1])
        self.uniform_targets = mask is None

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def example(self, i: int) -> Example:
        i = int(i)
        return Example(self.ids[i].astype(np.int64), None if self.mask is None else self.mask[i])


class ExampleArrays:
    """Variable-length examples as flat ``ids`` / ``masks`` arrays cut at
    ``offsets`` (what `save_examples` writes): no per-example objects in
    memory until one is asked for."""

    uniform_targets = False

    def __init__(self, ids: np.ndarray, masks: np.ndarray | None, offsets: np.ndarray):
        self.ids, self.masks, self.offsets = ids, masks, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def example(self, i: int) -> Example:
        a, b = int(self.offsets[int(i)]), int(self.offsets[int(i) + 1])
        return Example(self.ids[a:b].astype(np.int64), None if self.masks is None else self.masks[a:b])

    def __iter__(self) -> Iterator[Example]:
        return (self.example(i) for i in range(len(self)))


class ExampleList:
    """Examples held in memory (HumanEval problems, small test sets)."""

    uniform_targets = False

    def __init__(self, examples: Sequence[Example]):
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def example(self, i: int) -> Example:
        return self.examples[int(i)]


# --------------------------------------------------------------------------- order


class GlobalBatchSampler:
    """The example indices of global batch ``step``; the same on every rank."""

    def __init__(self, n: int, batch_size: int, seed: int):
        if n <= 0:
            raise ValueError("cannot sample batches from an empty dataset")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) >= 2:  # a batch spans at most two epochs
                self._perms.pop(min(self._perms))
            rng = np.random.default_rng([self.seed, epoch])
            self._perms[epoch] = rng.permutation(self.n)
        return self._perms[epoch]

    def global_batch(self, step: int) -> np.ndarray:
        pos = np.arange(step * self.batch_size, (step + 1) * self.batch_size, dtype=np.int64)
        epochs, within = pos // self.n, pos % self.n
        out = np.empty_like(pos)
        for e in np.unique(epochs):
            sel = epochs == e
            out[sel] = self._perm(int(e))[within[sel]]
        return out

    def local_batch(self, step: int, rank: int, world_size: int) -> np.ndarray:
        per_rank = self.batch_size // world_size
        return self.global_batch(step)[rank * per_rank:(rank + 1) * per_rank]

    def epoch_of(self, step: int) -> float:
        return step * self.batch_size / self.n


# --------------------------------------------------------------------------- batches


@dataclass
class Batch:
    input_ids: torch.Tensor  # [b, T] int64
    labels: torch.Tensor  # [b, T] int64; IGNORE where not a target; position 0 is never one
    n_targets: int
    n_tokens: int  # real tokens: padding never counts (tokens/s, MFU)
    sq_tokens: int  # sum over rows of (real tokens in the row)^2: attention FLOPs (phi1.model.presets.ModelFlops)
    n_positions: int  # positions computed, padding included

    def to(self, device: torch.device) -> "Batch":
        nb = device.type == "cuda"
        return Batch(self.input_ids.to(device, non_blocking=nb), self.labels.to(device, non_blocking=nb),
                     self.n_targets, self.n_tokens, self.sq_tokens, self.n_positions)


def collate(examples: Sequence[Example], pad_id: int, pad_multiple: int = 8, pin: bool = False) -> Batch:
    """Right-pad to the longest example, rounded up to ``pad_multiple``
    (tensor-core friendly shapes). Padding is never a target and, attention
    being causal, never seen by a real token."""
    longest = max(len(e.ids) for e in examples)
    T = -(-longest // pad_multiple) * pad_multiple
    ids = np.full((len(examples), T), pad_id, dtype=np.int64)
    labels = np.full((len(examples), T), IGNORE, dtype=np.int64)
    for r, e in enumerate(examples):
        n = len(e.ids)
        ids[r, :n] = e.ids
        labels[r, :n] = e.ids if e.mask is None else np.where(e.mask, e.ids, IGNORE)
    labels[:, 0] = IGNORE  # nothing predicts the first token
    n_targets = int((labels != IGNORE).sum())
    lengths = np.fromiter((len(e.ids) for e in examples), dtype=np.int64, count=len(examples))
    input_t, labels_t = torch.from_numpy(ids), torch.from_numpy(labels)
    if pin:  # page-locked host memory: the copy to the GPU overlaps compute
        input_t, labels_t = input_t.pin_memory(), labels_t.pin_memory()
    return Batch(input_t, labels_t, n_targets, int(lengths.sum()), int((lengths**2).sum()), int(ids.size))


def micro_batches(source: ExampleSource, indices: Iterable[int], micro_batch_size: int, pad_id: int,
                  pin: bool = False) -> list[Batch]:
    idx = list(indices)
    return [collate([source.example(i) for i in idx[k:k + micro_batch_size]], pad_id, pin=pin)
            for k in range(0, len(idx), micro_batch_size)]


def eval_indices(n: int, limit: int) -> np.ndarray:
    """A fixed, evenly spread subset of ``limit`` of ``n`` examples (all when limit is 0)."""
    if limit <= 0 or limit >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


# --------------------------------------------------------------------------- exercises


def encode_with_mask(
    tokenizer: Any,
    pairs: Sequence[tuple[str, str]],
    *,
    loss_on: str,
    eot_id: int | None,
    max_len: int,
    keep: str = "head",
) -> tuple[list[Example], int]:
    """Tokenize ``prompt + solution`` texts with a loss mask on the solution.

    The whole program is encoded in one piece (as pretraining saw code), and
    a token counts as solution when it covers any solution character, so
    the boundary needs no special tokenization. ``eot_id`` (if given) is
    appended and is a target: the model learns to stop. Sequences longer
    than ``max_len`` keep their ``head`` (exercises) or ``tail`` (HumanEval:
    the solution must stay in view). Returns (examples, number truncated).
    ``tokenizer`` is a ``tokenizers.Tokenizer`` (a fast tokenizer's backend).
    """
    texts = [p + s for p, s in pairs]
    encs = tokenizer.encode_batch(texts, add_special_tokens=False)
    out, truncated = [], 0
    for (prompt, _), enc in zip(pairs, encs):
        ids = list(enc.ids)
        boundary = len(prompt)
        if loss_on == "all":
            mask = [True] * len(ids)
        else:
            mask = [end > boundary for _start, end in enc.offsets]
        if eot_id is not None:
            ids.append(eot_id)
            mask.append(True)
        if len(ids) > max_len:
            truncated += 1
            if keep == "head":
                ids, mask = ids[:max_len], mask[:max_len]
            else:
                ids, mask = ids[-max_len:], mask[-max_len:]
        arr_mask = np.asarray(mask, dtype=bool)
        if len(ids) < 2 or not arr_mask[1:].any():
            continue  # nothing to learn from (empty solution after truncation)
        out.append(Example(np.asarray(ids, dtype=np.int64), arr_mask))
    return out, truncated


def save_examples(path: Path, examples: Sequence[Example]) -> None:
    """One .npz holding all examples (flat ids + masks + offsets); written atomically."""
    lengths = np.asarray([len(e.ids) for e in examples], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.concatenate([e.ids for e in examples]) if examples else np.zeros(0, np.int64)
    masks = (np.concatenate([e.mask if e.mask is not None else np.ones(len(e.ids), bool) for e in examples])
             if examples else np.zeros(0, bool))
    dtype = np.uint16 if ids.size == 0 or ids.max() < 2**16 else np.uint32
    with atomic_open(path, "wb") as fh:
        np.savez(fh, ids=ids.astype(dtype), masks=masks, offsets=offsets)


def load_examples(path: Path) -> ExampleArrays:
    with np.load(path) as z:
        return ExampleArrays(z["ids"], z["masks"], z["offsets"])


def save_rows(path: Path, ids: np.ndarray, mask: np.ndarray | None) -> None:
    """Packed rows (``[rows, seq_len]``, optional mask) as one .npz, atomically."""
    arrays = {"ids": ids} if mask is None else {"ids": ids, "mask": mask}
    with atomic_open(path, "wb") as fh:
        np.savez(fh, **arrays)


def load_rows(path: Path) -> RowArrays:
    with np.load(path) as z:
        return RowArrays(z["ids"], z["mask"] if "mask" in z.files else None)


class Subset:
    """Some examples of a source, by index (a validation sample of a large split)."""

    def __init__(self, source: ExampleSource, indices: Sequence[int]):
        self.source = source
        self.indices = [int(i) for i in indices]
        self.uniform_targets = bool(getattr(source, "uniform_targets", False))

    def __len__(self) -> int:
        return len(self.indices)

    def example(self, i: int) -> Example:
        return self.source.example(self.indices[int(i)])
