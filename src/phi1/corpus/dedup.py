"""Deduplication building blocks around datatrove's exact and MinHash dedup.

datatrove's dedup steps identify a document by (task rank, index in that
task's stream), so every step that refers to a document must see the same
stream. `ingest` therefore writes each task's cleaned documents to
``<folder>/<rank>.jsonl.gz`` and later steps read exactly that file back
(`RankShardReader`). The signature steps here are pass-through versions of
datatrove's (they yield every document on to the writer while recording its
signature), which saves one full read of the corpus per dedup kind.

Exact dedup keeps the first occurrence in (rank, index) order; MinHash runs
on the exact-deduplicated stream, so no document is counted twice.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig, ExactDedupSignature
from datatrove.pipeline.dedup.minhash import MinhashDedupFilter, MinhashDedupSignature
from datatrove.utils.text import ngrams, simplify_text
from datatrove.utils.typeshelper import StatHints
from datatrove.utils.word_tokenizers import WordTokenizer

_WORD = re.compile(r"\w+")


class CodeWordTokenizer(WordTokenizer):
    """Words for MinHash shingles of source code: identifier/number runs.

    datatrove's default (English) tokenizer needs spaCy and is built for
    prose; after datatrove's text normalisation (lowercase, punctuation
    removed) code is a stream of identifiers, keywords and numbers.
    """

    def __init__(self) -> None:
        super().__init__("code")

    def word_tokenize(self, text: str) -> list[str]:
        return _WORD.findall(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return [line for line in text.split("\n") if line.strip()]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        spans, start = [], 0
        for line in text.split("\n"):
            if line.strip():
                spans.append((start, start + len(line)))
            start += len(line) + 1
        return spans


def document_bytes(doc: Document) -> bytes:
    return doc.text.encode("utf-8", "surrogatepass")  # datatrove's xxhash wants bytes


def exact_dedup_config() -> ExactDedupConfig:
    return ExactDedupConfig(content_getter=document_bytes)


class ExactSignatureTee(ExactDedupSignature):
    """Exact-dedup signatures (xxhash64 of the text) of every document passing through.

    The priority makes "first occurrence" global: datatrove keeps the
    highest-priority copy, then the lowest index, so priority falls with the rank.
    """

    name = "💥 exact signatures"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        priority = max(1, 65535 - rank)
        signatures = []
        for doc_idx, doc in enumerate(data):
            self.stat_update(StatHints.total)
            signatures.append((self.hash_fc(self.config.content_getter(doc)), priority, doc_idx))
            yield doc
        self.save_hashes(rank, signatures)


class MinhashSignatureTee(MinhashDedupSignature):
    """MinHash signatures of every document passing through (datatrove's stage 1,
    pass-through). Bucket files are written unsorted, then datatrove's own
    sort-and-verify runs on them."""

    name = "🎯 minhash signatures"

    def get_shingles(self, text: str) -> np.ndarray:
        # datatrove's version hands str to xxhash, which xxhash>=4 refuses; hash UTF-8 bytes
        words = self.word_tokenizer.word_tokenize(simplify_text(text, self.config.norm_config))
        return np.fromiter(
            (self._hash_func(" ".join(g).encode("utf-8", "surrogatepass")) for g in ngrams(words, self.config.n_grams)),
            dtype=np.uint64,
        ).reshape((-1, 1))

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        import struct

        fmt = f"<{self.config.hashes_per_bucket}{self.config.hash_config.struct_format}I"
        buckets = [
            self.output_folder.open(f"bucket_{bi:03d}/{rank:05d}.minhash.sig", mode="wb")
            for bi in range(self.config.num_buckets)
        ]
        try:
            for doc_idx, doc in enumerate(data):
                self.stat_update(StatHints.total)
                shingles = self.get_shingles(doc.text)
                if shingles.size != 0:  # fewer words than n_grams: no signature, never a near duplicate
                    for bucket, bucket_sig in zip(buckets, self.get_signature(shingles)):
                        bucket.write(struct.pack(fmt, *bucket_sig, doc_idx))
                yield doc
        finally:
            for f in buckets:
                f.close()
        # datatrove's stage 1 with skip_existing_sigs: finds our files, sorts and verifies them
        self.skip_existing_sigs = True
        super().run(iter(()), rank, world_size)


class RankShardReader(PipelineStep):
    """Reads ``<folder>/<rank>.jsonl.gz`` (this task's earlier output) in order.

    A task whose earlier step produced nothing has no file: it reads nothing.
    """

    name = "📂 rank shard"
    type = "📖 - READER"

    def __init__(self, folder: str | Path):
        super().__init__()
        self.folder = str(folder)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        import orjson

        if data:
            yield from data
        path = Path(self.folder) / f"{rank:05d}.jsonl.gz"
        if not path.exists():
            return
        with gzip.open(path, "rb") as f:
            for line in f:
                rec = orjson.loads(line)
                self.stat_update(StatHints.total)
                yield Document(text=rec["text"], id=rec["id"], metadata=rec.get("metadata") or {})


class Tally(PipelineStep):
    """Counts documents and UTF-8 bytes passing this point as ``<label>_docs`` /
    ``<label>_bytes`` (the funnel is read from these)."""

    name = "🧾 tally"

    def __init__(self, label: str):
        super().__init__()
        self.label = label

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        docs = size = 0
        for doc in data:
            docs += 1
            s = doc.metadata.get("size")
            size += s if isinstance(s, int) else len(doc.text.encode("utf-8", "surrogatepass"))
            yield doc
        self.stat_update(f"{self.label}_docs", value=docs)
        self.stat_update(f"{self.label}_bytes", value=size)


class QuietMinhashDedupFilter(MinhashDedupFilter):
    """datatrove's MinHash stage 4, without its console warning for a task that
    has nothing to remove (the normal case for most tasks of a small corpus)."""

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if self.data_folder.isfile(f"{rank:06d}.remove"):
            yield from super().run(data, rank, world_size)
            return
        for doc in data:
            self.stat_update(StatHints.total, StatHints.forwarded)
            yield doc
