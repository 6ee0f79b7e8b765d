"""Finetuning data: a weighted mixture of exercise datasets, encoded and laid out.

Each exercise is ``prompt + solution + <|endoftext|>`` encoded in one piece;
``loss_on = "solution"`` masks the prompt tokens (they are context, not
targets), ``"all"`` keeps every token a target. A mixture weight is a
sampling rate per exercise (`phi1.documents.copies_of`: 2.0 = twice, 0.5 =
a seeded half).

Training layouts (``finetune.layout``):

* ``packed`` (the paper's): the exercises, in a seeded random order, are
  concatenated (each already ends with ``<|endoftext|>``) and cut into full
  context-length rows, as pretraining packs documents. A row holds several
  exercises; an exercise may continue into the next row; no padding, no
  truncation. The last partial row is dropped. "Batch 256" is then
  256 x 2048 tokens, as in the paper.
* ``padded``: one exercise per row, right-padded to the longest of its
  micro-batch; exercises longer than the context keep their head.

Validation is one exercise per row in both layouts, on the same targets as
training: its loss is the mean over the same tokens of the same held-out
exercises whatever the layout, and no exercise is cut or dropped.

Rank 0 encodes once into ``<work>/data/`` (``train.npz``, ``val.npz`` and a
``data.json`` naming the layout they were built for, so an interrupted
attempt reuses them and a changed layout rebuilds them); every rank then
memory-loads them.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from phi1.errors import InputError
from phi1.train.data import (Example, ExampleArrays, encode_with_mask, load_examples, load_rows, save_examples,
                             save_rows)

DATA_DIR = "data"
ENCODE_CHUNK = 10_000
SPLITS = ("train", "val")


@dataclass(frozen=True)
class ExerciseSource:
    """One exercise dataset of the mixture: a folder with train/val.jsonl.gz."""

    ref: str
    path: Path
    weight: float = 1.0


@dataclass(frozen=True)
class Layout:
    layout: str  # packed | padded
    loss_on: str  # all | solution
    seq_len: int  # the model's context: packed row length, padded truncation length
    seed: int
    sources: tuple[tuple[str, float], ...]


@dataclass
class SplitStats:
    records: int = 0  # exercise copies read (weights applied)
    examples: int = 0  # encoded exercises kept
    truncated: int = 0  # padded: exercises cut to the context
    tokens: int = 0  # real tokens in the examples
    rows: int = 0  # training rows (packed: full rows; padded: = examples)
    dropped_tokens: int = 0  # packed: the last partial row


@dataclass
class ExerciseData:
    train: Any  # RowArrays (packed) | ExampleArrays (padded)
    val: ExampleArrays
    stats: dict[str, SplitStats]


def mixture_records(sources: Iterable[ExerciseSource], split: str, seed: int) -> Iterator[Any]:
    """The exercise records of ``split`` from a weighted mixture, copies in passes:
    pass k yields every record's k-th copy, so repeats are never adjacent."""
    from phi1.documents import copies_of
    from phi1.synth.records import read_exercises

    sources = list(sources)
    passes = max((math.ceil(s.weight) for s in sources), default=0)
    for k in range(passes):
        for src in sources:
            path = src.path / f"{split}.jsonl.gz"
            if math.ceil(src.weight) <= k or not path.exists():
                continue
            for rec in read_exercises(path):
                if copies_of(src.weight, seed, src.ref, rec.id) > k:
                    yield rec


def encode_records(records: Iterable[Any], tokenizer: Any, *, loss_on: str, eot_id: int, max_len: int | None,
                   label: str, show_progress: bool) -> tuple[list[Example], SplitStats]:
    """Exercise records as examples (``max_len`` None: never truncate)."""
    from tqdm.auto import tqdm

    examples: list[Example] = []
    stats = SplitStats()
    chunk: list[tuple[str, str]] = []
    limit = max_len if max_len is not None else 2**62

    def flush() -> None:
        got, cut = encode_with_mask(tokenizer, chunk, loss_on=loss_on, eot_id=eot_id, max_len=limit)
        examples.extend(got)
        stats.truncated += cut
        chunk.clear()

    with tqdm(desc=f"encode {label}", unit="ex", disable=not show_progress, mininterval=1.0) as bar:
        for rec in records:
            chunk.append((rec.prompt, rec.solution))
            stats.records += 1
            if len(chunk) >= ENCODE_CHUNK:
                bar.update(len(chunk))
                flush()
        bar.update(len(chunk))
        if chunk:
            flush()
    stats.examples = len(examples)
    stats.tokens = sum(len(e.ids) for e in examples)
    stats.rows = len(examples)
    return examples, stats


def pack_examples(examples: list[Example], seq_len: int, seed: int, keep_mask: bool,
                  dtype: Any = np.uint32) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Concatenate ``examples`` in a seeded random order and cut full
    ``seq_len`` rows; returns (ids [rows, seq_len], mask or None, dropped tokens)."""
    if not examples:
        return np.zeros((0, seq_len), dtype=dtype), (np.zeros((0, seq_len), bool) if keep_mask else None), 0
    order = np.random.default_rng([seed, 0x9ac4]).permutation(len(examples))
    ids = np.concatenate([examples[i].ids for i in order]).astype(dtype)
    mask = None
    if keep_mask:
        mask = np.concatenate([examples[i].mask if examples[i].mask is not None
                               else np.ones(len(examples[i].ids), bool) for i in order])
    rows = len(ids) // seq_len
    cut = rows * seq_len
    dropped = len(ids) - cut
    ids = ids[:cut].reshape(rows, seq_len)
    if mask is not None:
        mask = mask[:cut].reshape(rows, seq_len)
    return ids, mask, dropped


def prepare_exercises(work_dir: Path, sources: list[ExerciseSource], tokenizer: Any, *, layout: str, loss_on: str,
                      eot_id: int, seq_len: int, seed: int, vocab_size: int, env: Any,
                      log: Any = print) -> ExerciseData:
    """Encode and lay out the mixture once (rank 0), load it on every rank."""
    from phi1.files import write_json_atomic
    from phi1.train.distributed import barrier, broadcast_object

    if not sources:
        raise InputError("finetune.inputs: no exercise dataset with a weight > 0")
    out = Path(work_dir) / DATA_DIR
    want = Layout(layout, loss_on, seq_len, seed, tuple((s.ref, float(s.weight)) for s in sources))
    built: dict[str, Any] = {}
    if env.is_main:
        try:
            meta_path = out / "data.json"
            meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
            if meta.get("layout") == json.loads(json.dumps(asdict(want))) and all(
                    (out / f"{s}.npz").exists() for s in SPLITS):
                built["stats"] = meta["stats"]
            else:
                out.mkdir(parents=True, exist_ok=True)
                built["stats"] = _build(out, sources, tokenizer, want, eot_id, vocab_size)
                write_json_atomic(meta_path, {"layout": asdict(want), "stats": built["stats"]})
        except InputError as e:  # every rank raises it, rather than waiting for data that never comes
            built["error"] = str(e)
    built = broadcast_object(built, env)
    if "error" in built:
        raise InputError(built["error"])
    stats = built["stats"]
    barrier(env)
    train_stats = SplitStats(**stats["train"])
    if train_stats.rows == 0:
        where = ", ".join(str(s.path / "train.jsonl.gz") for s in sources)
        if train_stats.examples and layout == "packed":
            raise InputError(f"finetune.inputs: the {train_stats.tokens} tokens of {train_stats.examples} training "
                             f"exercises in {where} fill no {seq_len}-token row; use finetune.layout = 'padded'")
        raise InputError(f"finetune.inputs: no usable training exercises in {where} "
                         f"({train_stats.records} records)")
    train = load_rows(out / "train.npz") if layout == "packed" else load_examples(out / "train.npz")
    return ExerciseData(train, load_examples(out / "val.npz"), {k: SplitStats(**v) for k, v in stats.items()})


def _build(out: Path, sources: list[ExerciseSource], tokenizer: Any, want: Layout, eot_id: int,
           vocab_size: int) -> dict[str, dict[str, int]]:
    stats: dict[str, dict[str, int]] = {}
    names = " + ".join(f"{s.ref} x{s.weight:g}" for s in sources)
    dtype = np.uint16 if vocab_size <= 2**16 else np.uint32
    for split in SPLITS:
        packed = want.layout == "packed" and split == "train"
        examples, st = encode_records(mixture_records(sources, split, want.seed), tokenizer, loss_on=want.loss_on,
                                      eot_id=eot_id, max_len=None if packed else want.seq_len,
                                      label=f"{split} ({names})", show_progress=True)
        if packed:
            ids, mask, st.dropped_tokens = pack_examples(examples, want.seq_len, want.seed,
                                                         keep_mask=want.loss_on != "all", dtype=dtype)
            st.rows = int(ids.shape[0])
            save_rows(out / f"{split}.npz", ids, mask)
        else:
            save_examples(out / f"{split}.npz", examples)
        stats[split] = asdict(st)
    return stats
