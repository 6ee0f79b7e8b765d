"""The `tokenizer` stage: load a Hugging Face tokenizer, or train a byte-level BPE.

The paper uses codegen-350M-mono's tokenizer: GPT-2's byte-level BPE plus
added tokens for runs of 2..31 spaces and 2..9 tabs (so indentation costs one
token), with ``<|endoftext|>`` as bos/eos/unk. Offline, phi1 trains the same
kind of tokenizer on the filtered corpus with HF ``tokenizers``.

Either way the vocabulary is padded with unused reserved tokens to a multiple
of ``pad_multiple`` (64: tensor-core friendly embedding and LM-head shapes),
so ``len(tokenizer)`` is the model's ``vocab_size``. The result is a standard
tokenizer folder (``tokenizer/tokenizer/``, with ``tokenizer.json``) that
``AutoTokenizer.from_pretrained`` loads.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator


from phi1.errors import InputError, Phi1Error

EOT = "<|endoftext|>"
OUT_DIR = "tokenizer"
RESERVED = "<|reserved_{}|>"
# CodeGen's added whitespace tokens: runs of 2..31 spaces and 2..9 tabs.
SPACE_RUNS = tuple(" " * n for n in range(2, 32))
TAB_RUNS = tuple("\t" * n for n in range(2, 10))
WHITESPACE_TOKENS = SPACE_RUNS + TAB_RUNS
_WS_RUN = re.compile(r" {2,}|\t{2,}")
BYTES_SAMPLE_DOCS = 1000  # documents used to measure bytes/token


# --------------------------------------------------------------------------- building


def train_bpe(texts: Iterable[str], vocab_size: int, pad_multiple: int = 64, show_progress: bool = False) -> Any:
    """Train a CodeGen-style byte-level BPE; returns a PreTrainedTokenizerFast.

    ``vocab_size`` counts everything (BPE merges, ``<|endoftext|>``, the
    whitespace tokens); the result is then padded up to ``pad_multiple``.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    budget = vocab_size - len(WHITESPACE_TOKENS)
    if budget < 257:
        raise Phi1Error(f"tokenizer.vocab_size = {vocab_size} is too small: byte-level BPE needs at least "
                        f"{257 + len(WHITESPACE_TOKENS)} (256 bytes, {EOT}, whitespace tokens)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=budget,
        min_frequency=2,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tok.train_from_iterator(_without_whitespace_runs(texts), trainer)
    # Added after training, but training saw the text split at the same places
    # (see _without_whitespace_runs), so merges fit what encoding will see.
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in WHITESPACE_TOKENS])
    hf = _wrap(tok)
    pad_vocab(hf, pad_multiple)
    return hf


def _without_whitespace_runs(texts: Iterable[str]) -> Iterator[list[str]]:
    """Each text as the pieces between runs of 2+ spaces/tabs.

    At encode time the whitespace added tokens are split out before the BPE
    runs, so ``"    return"`` becomes ``"    "`` + ``"return"``. Feeding the
    trainer the same pieces makes it learn ``return`` after indentation
    instead of ``Ġreturn`` (and spend no merges on whitespace runs).
    """
    for text in texts:
        pieces = [p for p in _WS_RUN.split(text) if p]
        if pieces:
            yield pieces


def _wrap(tok: Any) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOT,
        eos_token=EOT,
        unk_token=EOT,
        clean_up_tokenization_spaces=False,  # decode must give back the code exactly
    )


def load_pretrained(name: str, pad_multiple: int = 64) -> Any:
    """Load a Hugging Face tokenizer by local folder or hub name, padded to ``pad_multiple``."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name, use_fast=True)
    except Exception as e:  # hub/network/format errors come in many types
        where = "folder" if Path(name).exists() else "hub name (offline? set HF_HUB_OFFLINE=0 or give a local folder)"
        raise Phi1Error(f"tokenizer.name = {name!r}: cannot load it as a {where}: {type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}") from None
    if not getattr(tok, "is_fast", False):
        raise Phi1Error(f"tokenizer.name = {name!r}: no fast (tokenizers) version; phi1 needs tokenizer.json")
    if tok.eos_token is None:
        tok.add_special_tokens({"eos_token": EOT})
    pad_vocab(tok, pad_multiple)
    return tok


def pad_vocab(tok: Any, multiple: int) -> int:
    """Add unused reserved special tokens until ``len(tok) % multiple == 0``; returns how many."""
    from tokenizers import AddedToken

    missing = (-vocab_size_of(tok)) % multiple
    if missing:
        vocab = tok.get_vocab()
        names, i = [], 0
        while len(names) < missing:
            if RESERVED.format(i) not in vocab:
                names.append(RESERVED.format(i))
            i += 1
        tok.add_tokens([AddedToken(n, special=True, normalized=False) for n in names], special_tokens=True)
    if vocab_size_of(tok) % multiple:
        raise Phi1Error(f"could not pad the vocabulary to a multiple of {multiple} (size {vocab_size_of(tok)}: "
                        "its ids have gaps)")
    return missing


def vocab_size_of(tok: Any) -> int:
    """Rows the embedding needs: one past the largest id (== len(tok) without id gaps)."""
    return max(len(tok), max(tok.get_vocab().values()) + 1)


def _portable_class(folder: Path) -> None:
    """Name the generic fast class, which transformers 4.x and 5.x both load
    (5.x writes its own ``TokenizersBackend``, unknown to 4.x)."""
    path = folder / "tokenizer_config.json"
    data = json.loads(path.read_text())
    data["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- reading back


def tokenizer_info(folder: str | Path) -> dict[str, Any]:
    """``{"vocab_size", "eot_id", "eot"}`` of a saved tokenizer folder, without transformers."""
    from tokenizers import Tokenizer

    folder = Path(folder)
    path = folder / "tokenizer.json"
    if not path.exists():
        raise InputError(f"not a fast tokenizer folder (no tokenizer.json): {folder}")
    tok = Tokenizer.from_file(str(path))
    eot = _eos_token(folder) or EOT
    eot_id = tok.token_to_id(eot)
    if eot_id is None:
        raise InputError(f"{folder}: end-of-text token {eot!r} is not in the vocabulary")
    vocab = tok.get_vocab(with_added_tokens=True)
    return {"vocab_size": max(tok.get_vocab_size(with_added_tokens=True), max(vocab.values()) + 1),
            "eot_id": int(eot_id), "eot": eot}


def _eos_token(folder: Path) -> str | None:
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        try:
            data = json.loads((folder / name).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            continue
        eos = data.get("eos_token")
        if isinstance(eos, dict):
            eos = eos.get("content")
        if eos:
            return str(eos)
    return None


def bytes_per_token(tok: Any, texts: list[str]) -> float:
    """UTF-8 bytes per token over ``texts`` (the tokenizer's compression)."""
    if not texts:
        return 0.0
    enc = tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    n_tokens = sum(len(e.ids) for e in enc)
    return sum(len(t.encode("utf-8")) for t in texts) / max(n_tokens, 1)


# --------------------------------------------------------------------------- stage


def _sample_documents(texts: Iterable[str], k: int, seed: int) -> list[str]:
    """A seeded uniform sample of ``k`` document texts (reservoir; one pass, k in memory)."""
    rng = random.Random(f"tokenizer:{seed}")
    sample: list[str] = []
    for n, text in enumerate(texts):
        if n < k:
            sample.append(text)
        else:
            j = rng.randrange(n + 1)
            if j < k:
                sample[j] = text
    return sample


def run(ctx: Any) -> Any:
    from phi1.documents import weighted_documents
    from phi1.stage import StageResult

    cfg = ctx.section
    inputs = ctx.mixture("inputs")
    seed = ctx.config.run.seed
    where = " + ".join(f"{d.ref}" + (f" x{d.weight:g}" if d.weight != 1 else "") for d in inputs)

    def texts() -> Iterator[str]:
        return (doc.text for _, doc in weighted_documents(inputs, seed))

    out = ctx.work_dir / OUT_DIR
    started = time.time()
    if cfg.name:
        ctx.log(f"loading {cfg.name}")
        tok = load_pretrained(cfg.name, cfg.pad_multiple)
        source, trained_on = cfg.name, 0
        sample = list(itertools.islice(texts(), BYTES_SAMPLE_DOCS))
    else:
        if cfg.max_docs:
            corpus: Any = _sample_documents(texts(), cfg.max_docs, seed)
            n_docs = len(corpus)
            if not corpus:
                raise InputError(f"no documents to train the tokenizer on in tokenizer.inputs ({where})")
        else:
            counter = {"docs": 0}

            def stream() -> Iterator[str]:
                for text in texts():
                    counter["docs"] += 1
                    yield text

            corpus = stream()
        ctx.log(f"training a byte-level BPE (vocab {cfg.vocab_size}) on {where}")
        tok = train_bpe(corpus, cfg.vocab_size, cfg.pad_multiple, show_progress=ctx.is_main and sys.stderr.isatty())
        n_docs = n_docs if cfg.max_docs else counter["docs"]
        if n_docs == 0:
            raise InputError(f"no documents to train the tokenizer on in tokenizer.inputs ({where})")
        source, trained_on = "bpe", n_docs
        sample = corpus[:BYTES_SAMPLE_DOCS] if cfg.max_docs else list(itertools.islice(texts(), BYTES_SAMPLE_DOCS))
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out))
    if not cfg.name:
        _portable_class(out)
    if not (out / "tokenizer.json").exists():
        raise Phi1Error(f"saving the tokenizer wrote no tokenizer.json in {out}")
    info = tokenizer_info(out)
    bpt = bytes_per_token(tok, sample)
    seconds = time.time() - started
    return StageResult(
        counts={"vocab_size": info["vocab_size"], "trained_on_docs": trained_on},
        metrics={"bytes_per_token": round(bpt, 4), "eot_id": info["eot_id"], "seconds": round(seconds, 2)},
        summary=[
            f"{'trained BPE on ' + str(trained_on) + ' docs' if not cfg.name else 'loaded ' + cfg.name}: "
            f"vocab {info['vocab_size']} (multiple of {cfg.pad_multiple}), {info['eot']} = {info['eot_id']}",
            f"{bpt:.2f} bytes/token on {len(sample)} corpus documents; saved to {ctx.run_dir / ctx.name / OUT_DIR}",
        ],
        extra={"tokenizer": {"source": source, "vocab_size": info["vocab_size"], "eot_id": info["eot_id"],
                             "eot": info["eot"], "folder": OUT_DIR}},
    )
