"""The `tokenize` stage: documents -> token ids -> fixed-length rows in binary shards.

Every document is encoded with the run's tokenizer and followed by
``<|endoftext|>``; the stream is cut into ``seq_len`` rows (rows cross document
boundaries; each split's last partial row is dropped) and written as flat
``uint16``/``uint32`` shards that `phi1.train.packing.PackedDataset` memory-maps.

Validation split: `phi1.documents.is_validation` on the document id with
``run.validation_fraction`` sends those documents to ``val/`` — the rule every
splitting stage uses, so no validation document is in any training split.

Mixture: ``inputs = {filter = 1.0, "synth.textbooks" = 2.0}`` maps document
datasets to sampling rates, applied per document and seeded
(`phi1.documents.copies_of`): 2.0 = every document twice, 1.5 = every
document once and half of them again, 0.5 = half the documents.
Copy ``k`` of every document is written in pass ``k`` (pass 0 is all inputs
once, pass 1 the second copies, ...), so repeats never sit next to each other.
Validation documents are taken once if their first copy is drawn.

Work: the main process reads documents and sends chunks of about
``chunk_chars`` characters to ``workers`` processes that batch-encode them
with the fast tokenizer; results come back in submission order, so the
output is byte-identical for any number of workers.
"""

from __future__ import annotations

import collections
import functools
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from phi1.documents import copies_of, is_validation, read_documents
from phi1.errors import InputError
from phi1.train.packing import META, SPLITS, SequencePacker, dtype_for_vocab
from phi1.workers import ordered_map

TOKENIZER_DIR = "tokenizer"  # inside the tokenizer stage's folder


# --------------------------------------------------------------------------- sampling


@dataclass
class MixtureInput:
    name: str
    weight: float
    docs: Path
    run_id: str = ""
    stats: collections.Counter = field(default_factory=collections.Counter)


def document_stream(
    inputs: list[MixtureInput], validation_fraction: float, seed: int
) -> Iterator[tuple[str, str]]:
    """``(split, text)`` for every document copy, in the deterministic mixture order."""
    passes = max((math.ceil(i.weight) for i in inputs), default=0)
    for k in range(passes):
        for inp in inputs:
            if math.ceil(inp.weight) <= k:
                continue
            for doc in read_documents(inp.docs):
                if k == 0:
                    inp.stats["documents"] += 1
                if not doc.text:
                    continue
                n = copies_of(inp.weight, seed, inp.name, doc.id)
                if n <= k:
                    continue
                if is_validation(doc.id, validation_fraction, seed):
                    if k == 0:
                        inp.stats["val"] += 1
                        yield "val", doc.text
                    continue
                inp.stats["train"] += 1
                yield "train", doc.text


def chunked(stream: Iterable[tuple[str, str]], chunk_chars: int) -> Iterator[list[tuple[str, str]]]:
    chunk: list[tuple[str, str]] = []
    size = 0
    for item in stream:
        chunk.append(item)
        size += len(item[1])
        if size >= chunk_chars:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


# --------------------------------------------------------------------------- encoding


@functools.lru_cache(maxsize=2)
def _load(tokenizer_json: str) -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer_json)
    # A literal "<|endoftext|>" inside a document is text, not a separator:
    # only the ids placed between documents may mean "end of text".
    tok.encode_special_tokens = True
    return tok


def encode_chunk(
    tokenizer_json: str, eot_id: int, chunk: list[tuple[str, str]]
) -> dict[str, tuple[np.ndarray, int]]:
    """Encode a chunk: per split, (the documents' ids each followed by ``eot_id``, documents)."""
    tok = _load(tokenizer_json)
    # encode_batch_fast (tokenizers >= 0.21) skips character offsets: ~1.5x faster, same ids.
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    enc = encode([text for _, text in chunk], add_special_tokens=False)
    parts: dict[str, list[np.ndarray]] = {}
    eot = np.array([eot_id], dtype=np.uint32)
    for (split, _), e in zip(chunk, enc):
        parts.setdefault(split, []).extend((np.asarray(e.ids, dtype=np.uint32), eot))
    return {s: (np.concatenate(p), len(p) // 2) for s, p in parts.items()}


def _init_worker() -> None:
    # One process per core: keep the tokenizer's own thread pool out of it.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def encode_ordered(
    chunks: Iterable[list[tuple[str, str]]], tokenizer_json: str, eot_id: int, workers: int
) -> Iterator[dict[str, tuple[np.ndarray, int]]]:
    """Encoded chunks in input order, ``workers`` processes, bounded read-ahead."""
    yield from ordered_map(_encode_item, chunks, workers, tokenizer_json, eot_id, initializer=_init_worker)


def _encode_item(chunk: list[tuple[str, str]], tokenizer_json: str, eot_id: int
                 ) -> dict[str, tuple[np.ndarray, int]]:
    return encode_chunk(tokenizer_json, eot_id, chunk)


# --------------------------------------------------------------------------- writing


class ShardWriter:
    """Writes rows to ``<folder>/<split>/NNNNNN.bin``, a new file every ``rows_per_shard`` rows."""

    def __init__(self, root: Path, split: str, rows_per_shard: int):
        self.root, self.split, self.rows_per_shard = root, split, max(1, rows_per_shard)
        (root / split).mkdir(parents=True, exist_ok=True)
        self.files: list[str] = []
        self.rows = 0
        self._fh: Any = None
        self._in_file = 0

    def write(self, rows: np.ndarray) -> None:
        while len(rows):
            if self._fh is None or self._in_file >= self.rows_per_shard:
                self._open_next()
            take = min(len(rows), self.rows_per_shard - self._in_file)
            rows[:take].tofile(self._fh)
            self._in_file += take
            self.rows += take
            rows = rows[take:]

    def _open_next(self) -> None:
        self.close()
        name = f"{self.split}/{len(self.files):06d}.bin"
        self._fh = open(self.root / name, "wb")
        self.files.append(name)
        self._in_file = 0

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@dataclass
class TokenizeSummary:
    seconds: float
    tokens_encoded: int
    splits: dict[str, dict[str, Any]]


def tokenize_documents(
    inputs: list[MixtureInput],
    out: Path,
    tokenizer_json: str,
    eot_id: int,
    dtype: str,
    seq_len: int,
    validation_fraction: float = 0.0,
    seed: int = 0,
    workers: int = 1,
    shard_tokens: int = 100_000_000,
    chunk_chars: int = 1 << 20,
    progress: bool = True,
) -> TokenizeSummary:
    """Encode, pack and write both splits into ``out``; returns the per-split figures."""
    from tqdm.auto import tqdm

    packers = {s: SequencePacker(seq_len, dtype) for s in SPLITS}
    writers = {s: ShardWriter(out, s, shard_tokens // seq_len) for s in SPLITS}
    docs = collections.Counter()
    encoded = 0
    started = time.time()
    bar = tqdm(unit="tok", unit_scale=True, desc="tokenize", disable=not progress, mininterval=1.0)
    try:
        chunks = chunked(document_stream(inputs, validation_fraction, seed), chunk_chars)
        for result in encode_ordered(chunks, tokenizer_json, eot_id, workers):
            for split, (ids, n_docs) in result.items():
                writers[split].write(packers[split].add(ids))
                docs[split] += n_docs
                encoded += len(ids)
                bar.update(len(ids))
    finally:
        bar.close()
        for w in writers.values():
            w.close()
    seconds = time.time() - started
    splits = {}
    for s in SPLITS:
        splits[s] = {"files": writers[s].files, "sequences": writers[s].rows, "tokens": writers[s].rows * seq_len,
                     "documents": docs[s], "dropped_tokens": packers[s].remainder}
    return TokenizeSummary(seconds, encoded, splits)


# --------------------------------------------------------------------------- stage


def run(ctx: Any) -> Any:
    from phi1.files import write_json_atomic
    from phi1.model.tokenizer import tokenizer_info
    from phi1.stage import StageResult

    cfg = ctx.section
    inputs = [MixtureInput(d.ref, d.weight, d.path, d.run_id) for d in ctx.mixture("inputs")]
    tok_dir = ctx.input("tokenizer").path
    if not (tok_dir / "tokenizer.json").is_file():
        raise InputError(f"tokenize.tokenizer: no tokenizer.json in {tok_dir}")
    validation_fraction = ctx.config.run.validation_fraction
    info = tokenizer_info(tok_dir)
    dtype = dtype_for_vocab(info["vocab_size"])
    seed = ctx.config.run.seed
    for split in SPLITS:  # an interrupted attempt's shards: the output is rebuilt from scratch
        shutil.rmtree(ctx.work_dir / split, ignore_errors=True)
    ctx.log(f"{' + '.join(f'{i.name} x{i.weight:g}' for i in inputs)} -> rows of {cfg.seq_len} {dtype} tokens, "
            f"{cfg.workers} worker(s)")
    s = tokenize_documents(
        inputs, ctx.work_dir, str(tok_dir / "tokenizer.json"), info["eot_id"], dtype, cfg.seq_len,
        validation_fraction=validation_fraction, seed=seed, workers=cfg.workers,
        shard_tokens=cfg.shard_tokens, chunk_chars=cfg.chunk_chars, progress=ctx.is_main,
    )
    train, val = s.splits["train"], s.splits["val"]
    if train["sequences"] == 0:
        raise InputError(f"tokenize: not one full {cfg.seq_len}-token training row from "
                         f"{', '.join(str(i.docs) for i in inputs)} ({s.tokens_encoded} tokens)")
    if validation_fraction > 0 and val["sequences"] == 0:
        ctx.log(f"warning: the validation split has no full row ({val['documents']} docs, "
                f"{val['dropped_tokens']} tokens); raise run.validation_fraction")
    mixture = {i.name: {"weight": i.weight, "run_id": i.run_id, **dict(i.stats)} for i in inputs}
    meta = {"seq_len": cfg.seq_len, "dtype": dtype, "vocab_size": info["vocab_size"], "eot_id": info["eot_id"],
            "train": train, "val": val, "mixture": mixture, "seed": seed,
            "validation_fraction": validation_fraction}
    write_json_atomic(ctx.work_dir / META, meta)
    tps = s.tokens_encoded / max(s.seconds, 1e-9)
    dropped = train["dropped_tokens"] + val["dropped_tokens"]
    return StageResult(
        counts={"train_sequences": train["sequences"], "train_tokens": train["tokens"],
                "val_sequences": val["sequences"], "val_tokens": val["tokens"],
                "train_documents": train["documents"], "val_documents": val["documents"],
                "dropped_tokens": dropped},
        metrics={"tokens_per_second": round(tps, 1), "seconds": round(s.seconds, 2), "workers": cfg.workers},
        summary=[
            f"train: {train['sequences']:,} rows x {cfg.seq_len} = {train['tokens']:,} tokens "
            f"({train['documents']:,} docs); val: {val['sequences']:,} rows = {val['tokens']:,} tokens "
            f"({val['documents']:,} docs); dropped tail {dropped:,} tokens",
            f"{s.tokens_encoded:,} tokens in {s.seconds:.1f}s = {tps:,.0f} tokens/s with {cfg.workers} worker(s); "
            f"{dtype}, vocab {info['vocab_size']}, eot {info['eot_id']}",
        ],
        extra={"tokenize": {"mixture": mixture, "dtype": dtype}},
    )
