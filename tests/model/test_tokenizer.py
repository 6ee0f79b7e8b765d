"""The tokenizer: CodeGen-style byte-level BPE, exact round trips, padded vocabulary."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest

from phi1.errors import Phi1Error
from phi1.model.tokenizer import (
    EOT,
    TAB_RUNS,
    SPACE_RUNS,
    bytes_per_token,
    load_pretrained,
    pad_vocab,
    tokenizer_info,
    train_bpe,
)

TRICKY = [
    "",
    "x",
    "def f(a):\n\tif a:\n\t\treturn a\n\treturn None\n",  # tabs
    "def g():\n    if True:\n\t    pass\n  \t  return 1\n",  # mixed indentation
    "def größe(länge, 寬度):\n    return länge * 寬度  # ünïcödé\n",  # unicode identifiers
    's = "héllo wörld — ñ 日本語 ♥ \\u00e9"\n',  # unicode strings
    "party = '🎉🐍👩‍💻🏳️‍🌈'  # emoji, ZWJ sequences\n",
    " " * 100 + "x = 1" + " " * 37 + "\n" + "\t" * 20 + "y\n",  # long runs of whitespace
    "a = 1\r\nb = 2\r\n\r\n",  # CRLF
    "x = 1   \ny = 2\t\t\n",  # trailing spaces and tabs
    "\n\n\n\n   \n",
    "\x00\x01\x7f\u2028\u2029\x0c\ufeff",  # control and odd separator characters
    "text with <|endoftext|> inside and <|reserved_0|>",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 = '\U0010ffff'",
]


def _corpus() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [p.read_text(encoding="utf-8", errors="replace")[:6000] for p in sorted((stdlib / "json").glob("*.py"))]
    texts += [p.read_text(encoding="utf-8", errors="replace")[:6000] for p in sorted(stdlib.glob("[a-c]*.py"))[:25]]
    return texts + TRICKY


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tok = train_bpe(_corpus(), vocab_size=700, pad_multiple=64)
    folder = tmp_path_factory.mktemp("tok")
    tok.save_pretrained(str(folder))
    return tok, folder


def test_vocab_padded_and_eot(trained):
    tok, folder = trained
    assert len(tok) % 64 == 0 and len(tok) >= 700
    assert tok.eos_token == EOT and tok.bos_token == EOT and tok.unk_token == EOT
    info = tokenizer_info(folder)
    assert info["vocab_size"] == len(tok)
    assert info["eot_id"] == tok.convert_tokens_to_ids(EOT)
    assert max(tok.get_vocab().values()) == len(tok) - 1  # no id gaps: len() is the embedding size


@pytest.mark.parametrize("text", TRICKY)
def test_round_trip_exact(trained, text):
    tok, _ = trained
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text


def test_saved_folder_loads_and_round_trips(trained):
    from transformers import AutoTokenizer

    tok, folder = trained
    again = AutoTokenizer.from_pretrained(str(folder))
    assert len(again) == len(tok) and again.eos_token == EOT
    for text in TRICKY:
        ids = again.encode(text, add_special_tokens=False)
        assert ids == tok.encode(text, add_special_tokens=False)
        assert again.decode(ids) == text


def test_whitespace_runs_are_single_tokens(trained):
    tok, _ = trained
    vocab = tok.get_vocab()
    assert all(run in vocab for run in SPACE_RUNS + TAB_RUNS)
    tokens = tok.convert_ids_to_tokens(tok.encode("def f(x):\n        return x\n", add_special_tokens=False))
    assert " " * 8 in tokens  # indentation costs one token
    assert "return" in tokens  # and the keyword after it is a learned word, not bytes
    long_run = tok.encode(" " * 70, add_special_tokens=False)
    assert len(long_run) == 3  # 31 + 31 + 8


def test_compression_is_better_than_bytes(trained):
    tok, _ = trained
    assert bytes_per_token(tok, _corpus()[:5]) > 1.5


def test_load_local_folder_pads_to_multiple(trained, tmp_path):
    _, folder = trained
    tok = load_pretrained(str(folder), pad_multiple=256)
    assert len(tok) % 256 == 0
    assert tok.eos_token == EOT
    assert tok.decode(tok.encode(TRICKY[4], add_special_tokens=False)) == TRICKY[4]
    assert pad_vocab(tok, 256) == 0  # already a multiple: nothing added
    with pytest.raises(Phi1Error, match="cannot load"):
        load_pretrained(str(tmp_path / "missing-tokenizer"))


def test_vocab_too_small_is_a_clear_error():
    with pytest.raises(Phi1Error, match="too small"):
        train_bpe(["abc"], vocab_size=290)


def test_tokenizer_stage_sample_and_local_folder(trained, tmp_path, capsys):
    pass

    from phi1.cli import main as cli_main
    from phi1.config import load_config
    from phi1.documents import write_jsonl
    from helpers.stages import mark_done
    from phi1.pipeline import read_manifest

    toml = tmp_path / "t.toml"
    toml.write_text(f'[run]\nroot = "{tmp_path}"\nname = "t"\n[tokenizer]\nvocab_size = 400\nmax_docs = 8\n')
    cfg = load_config(toml)
    docs = [{"id": str(i), "text": t, "metadata": {}} for i, t in enumerate(_corpus())]
    write_jsonl(cfg.run_dir / "filter" / "docs" / "0.jsonl.gz", docs)
    mark_done(cfg, "filter")
    assert cli_main(["tokenizer", "--config", str(toml)]) == 0
    m = read_manifest(cfg.run_dir / "tokenizer")
    assert m["counts"] == {"vocab_size": 448, "trained_on_docs": 8}
    assert m["tokenizer"]["eot_id"] == m["metrics"]["eot_id"]

    _, folder = trained
    assert cli_main(["tokenizer", "--config", str(toml), "--set", f"tokenizer.name={folder}",
                     "--set", "tokenizer.pad_multiple=1024"]) == 0
    m = read_manifest(cfg.run_dir / "tokenizer")
    assert m["counts"]["vocab_size"] == 1024 and m["tokenizer"]["source"] == str(folder)
    assert "loaded" in capsys.readouterr().out
