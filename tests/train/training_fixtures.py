"""Small real inputs for the training tests: a BPE tokenizer trained on a
few standard-library modules, packed token shards in the `tokenize` format,
CodeExercises records in the `mine` format, and "done" manifests so the
pipeline and CLI accept them as upstream stages."""

from __future__ import annotations

import gzip
import json
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np

EOT = "<|endoftext|>"
STDLIB_MODULES = ("textwrap.py", "string/__init__.py", "json/encoder.py", "json/decoder.py", "fnmatch.py",
                  "bisect.py", "heapq.py", "shlex.py", "colorsys.py", "glob.py", "calendar.py")


def corpus_texts() -> list[str]:
    lib = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for rel in STDLIB_MODULES:
        p = lib / rel
        if p.exists():
            texts.append(p.read_text(encoding="utf-8"))
    assert texts, f"no stdlib sources found under {lib}"
    return texts


def make_tokenizer(folder: Path, vocab_size: int = 448) -> Path:
    """A byte-level BPE with <|endoftext|>, vocabulary padded to a multiple of 64."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus_texts(), trainer)
    pad = (-tok.get_vocab_size()) % 64
    tok.add_special_tokens([f"<|reserved_{i}|>" for i in range(pad)])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT,
                                 clean_up_tokenization_spaces=False)
    folder.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(folder)
    return folder


def make_tokenized(folder: Path, tokenizer_dir: Path, seq_len: int, val_docs: int = 2) -> dict[str, Any]:
    """``tokenize/`` output: meta.json + train/ and val/ uint16 shards of whole rows."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    eot = tok.token_to_id(EOT)
    texts = corpus_texts()
    splits = {"val": texts[:val_docs], "train": texts[val_docs:]}
    meta: dict[str, Any] = {"seq_len": seq_len, "dtype": "uint16", "vocab_size": tok.get_vocab_size(),
                            "eot_id": eot}
    for split, docs in splits.items():
        ids = np.concatenate([np.asarray(tok.encode(t).ids + [eot], dtype=np.uint16) for t in docs])
        rows = ids[: len(ids) // seq_len * seq_len].reshape(-1, seq_len)
        (folder / split).mkdir(parents=True, exist_ok=True)
        half = len(rows) // 2  # two shards, to exercise the shard index
        files = []
        for k, part in enumerate((rows[:half], rows[half:])):
            name = f"{split}/{k:06d}.bin"
            part.tofile(folder / name)
            files.append(name)
        meta[split] = {"files": files, "sequences": int(len(rows)), "tokens": int(rows.size)}
    (folder / "meta.json").write_text(json.dumps(meta))
    return meta


def exercise(i: int) -> dict[str, str]:
    name = ["add", "scale", "shift", "offset"][i % 4]
    prompt = f"def {name}_{i}(x, y):\n    \"\"\"Return x + y + {i}.\"\"\"\n"
    solution = f"    return x + y + {i}\n"
    return {"id": f"ex-{i}", "prompt": prompt, "solution": solution, "source": "tests"}


def make_mine(folder: Path, n_train: int = 48, n_val: int = 8) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, rng in (("train", range(n_train)), ("val", range(1000, 1000 + n_val))):
        with gzip.open(folder / f"{split}.jsonl.gz", "wt") as f:
            for i in rng:
                f.write(json.dumps(exercise(i)) + "\n")


def mark_done(config: Any, stage: str) -> None:
    """Write the manifest that makes ``stage`` count as done for this config."""
    from helpers.stages import mark_done as _mark_done

    _mark_done(config, stage, metrics={}, counts={})


CONFIG = """
[run]
root = "{root}"
name = "{name}"
seed = 0

[tokenize]
seq_len = {seq_len}

[model]
preset = "nano"
{model}

[pretrain]
max_steps = {steps}
batch_size = 4
micro_batch_size = {micro}
lr = 3e-3
warmup_steps = 2
checkpoint_every = {ckpt}
keep_checkpoints = 2
eval_every = 1000
eval_samples = 8
log_every = 1
tensorboard = false
{pretrain}

[finetune]
max_steps = 4
batch_size = 8
micro_batch_size = 4
lr = 1e-3
warmup_steps = 1
checkpoint_every = 2
eval_every = 1000
eval_samples = 8
log_every = 1
tensorboard = false
{finetune}
"""


def make_run(root: Path, name: str, *, steps: int = 4, micro: int = 2, ckpt: int = 2, seq_len: int = 64,
             model: str = "", pretrain: str = "", finetune: str = "", with_mine: bool = False,
             shared: dict[str, Path] | None = None) -> Path:
    """A config file plus done `tokenizer` and `tokenize` (and `mine`) stages; returns the config path."""
    import shutil

    from phi1.config import load_config

    path = root / f"{name}.toml"
    path.write_text(CONFIG.format(root=root, name=name, seq_len=seq_len, steps=steps, micro=micro, ckpt=ckpt,
                                  model=model, pretrain=pretrain, finetune=finetune))
    config = load_config(path)
    run = root / name
    tok_dir = run / "tokenizer" / "tokenizer"
    if shared and "tokenizer" in shared:
        shutil.copytree(shared["tokenizer"], tok_dir)
    else:
        make_tokenizer(tok_dir)
    mark_done(config, "tokenizer")
    make_tokenized(run / "tokenize", tok_dir, seq_len)
    mark_done(config, "tokenize")
    if with_mine:
        make_mine(run / "mine")
        mark_done(config, "mine")
    return path
