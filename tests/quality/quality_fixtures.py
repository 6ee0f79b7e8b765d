"""Shared helpers for the embed / classifier / filter tests (imported, not a conftest).

Model loads are cached per test session: MiniLM takes seconds to import and load.
"""

from __future__ import annotations

import atexit
import functools
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from helpers.stages import mark_done
from phi1.documents import write_jsonl
from phi1.registry import STAGES


@functools.lru_cache(maxsize=None)
def minilm(batch_size: int = 4, max_tokens: int = 128, precision: str = "fp32") -> Any:
    """fp32 unless asked: tests that compare vectors exactly need it (auto is bf16 on AMX CPUs)."""
    from phi1.quality.config import EmbedConfig
    from phi1.quality.embedders import build_embedder

    e = build_embedder(EmbedConfig(batch_size=batch_size, device="cpu", max_tokens=max_tokens, precision=precision))
    e._ensure_loaded()
    return e


@functools.lru_cache(maxsize=None)
def tiny_causal_lm_dir() -> str:
    """A randomly initialised 2-layer Phi model + a byte-level BPE tokenizer, built offline."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PhiConfig, PhiForCausalLM, PreTrainedTokenizerFast

    folder = Path(tempfile.mkdtemp(prefix="phi1-tiny-lm-"))
    atexit.register(shutil.rmtree, folder, True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([doc["text"] for doc in corpus(40, seed=1)], trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(folder)
    cfg = PhiConfig(vocab_size=400, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, max_position_embeddings=256)
    torch.manual_seed(0)
    PhiForCausalLM(cfg).save_pretrained(folder)
    return str(folder)


# --------------------------------------------------------------------------- corpus

_GOOD = '''"""{topic}: a small worked example."""


def {name}(values):
    """Return the {topic} of `values`.

    Walks the list once and keeps a running total, which is the simplest
    way to see how a loop accumulates a result.
    """
    total = 0
    for value in values:
        total += value
    return total


if __name__ == "__main__":
    print({name}([1, 2, 3]))
'''

_BAD = '''{name}_TABLE = [{rows}]
X{n}={n};Y{n}=X{n}*2
'''


def corpus(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` documents: half tutorial-style functions (good), half data tables (bad)."""
    rng = random.Random(seed)
    topics = ["sum", "running total", "accumulation", "aggregate", "tally", "count"]
    docs = []
    for i in range(n):
        name = f"f{i}_{rng.randrange(10**6)}"
        if i % 2 == 0:
            text = _GOOD.format(topic=rng.choice(topics), name=name)
            quality = 4.0
        else:
            rows = ", ".join(str(rng.randrange(1000)) for _ in range(rng.randrange(20, 80)))
            text = _BAD.format(name=name.upper(), rows=rows, n=i)
            quality = 1.0
        docs.append({"id": f"doc-{i:04d}", "text": text,
                     "metadata": {"source": "synthetic", "path": f"{name}.py", "size": len(text.encode()),
                                  "teacher_hint": quality}})
    return docs


# --------------------------------------------------------------------------- upstream stages



def write_stage(cfg: Any, stage: str, files: dict[str, Any], counts: dict | None = None) -> Path:
    """Create a finished `<run>/<stage>/` with `files` ({relative path: records list or text})."""
    d = cfg.run_dir / stage
    d.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = d / rel
        if isinstance(content, list):
            write_jsonl(path, content)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    return mark_done(cfg, stage, counts=counts or {}, metrics={}, summary=[], timings={"seconds": 0.0},
                     finished_at="test")


def write_ingest(cfg: Any, docs: list[dict[str, Any]], shards: int = 2) -> Path:
    files = {f"docs/{k:05d}.jsonl.gz": docs[k::shards] for k in range(shards)}
    return write_stage(cfg, "ingest", files, {"documents": len(docs)})


def write_annotate(cfg: Any, docs: list[dict[str, Any]], invalid: int = 0) -> Path:
    labels = []
    for i, d in enumerate(docs):
        ok = i >= invalid
        labels.append({"id": d["id"], "score": d["metadata"]["teacher_hint"] if ok else None,
                       "raw": "test", "teacher": "test", "prompt_id": "test", "valid": ok})
    return write_stage(cfg, "annotate", {"labels.jsonl": labels}, {"labels": len(labels)})


assert "annotate" in {s.name for s in STAGES}
