"""The tokenizer + tokenize stages on a tiny corpus, through the CLI and the library."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from helpers.stages import mark_done
from phi1.cli import main as cli_main
from phi1.config import load_config
from phi1.documents import read_documents, write_jsonl
from phi1.pipeline import read_manifest
from phi1.train.packing import PackedDataset
from phi1.documents import copies_of, is_validation
from phi1.train.tokenize import MixtureInput, tokenize_documents

PHI1 = str(Path(sys.executable).with_name("phi1"))
SEQ = 64


def _docs(n: int, prefix: str) -> list[dict]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(stdlib.glob("[d-h]*.py"))
    out = []
    for i in range(n):
        text = files[i % len(files)].read_text(encoding="utf-8", errors="replace")[(i // len(files)) * 900:][:900]
        out.append({"id": f"{prefix}-{i}", "text": text, "metadata": {"source": prefix, "path": f"{prefix}/{i}.py"}})
    out.append({"id": f"{prefix}-eot", "text": "x = '<|endoftext|>'\n", "metadata": {}})
    out.append({"id": f"{prefix}-empty", "text": "", "metadata": {}})
    return out


def fake_done_stage(cfg, name: str, docs: list[dict]) -> Path:
    """A finished upstream stage, as the pipeline would leave it: docs/ + manifest.json."""
    folder = cfg.run_dir / name
    write_jsonl(folder / "docs" / "000_00000.jsonl.gz", docs)
    return mark_done(cfg, name)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Tokenizer and tokenize run by `phi1 run` on a fake finished `filter` stage."""
    root = tmp_path_factory.mktemp("runs")
    toml = root / "t.toml"
    toml.write_text(f"""
[run]
root = "{root}"
name = "t"
seed = 3
validation_fraction = 0.2
[tokenizer]
vocab_size = 512
[tokenize]
seq_len = {SEQ}
workers = 2
shard_tokens = 2048
chunk_chars = 3000
""")
    cfg = load_config(toml)
    fake_done_stage(cfg, "filter", _docs(60, "f"))
    proc = subprocess.run([PHI1, "run", str(toml), "--only", "tokenizer", "tokenize"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return cfg, toml, proc.stdout


def test_stage_outputs_follow_the_folder_contract(run):
    cfg, _, stdout = run
    out = cfg.run_dir / "tokenize"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seq_len"] == SEQ and meta["dtype"] == "uint16" and meta["vocab_size"] == 512
    tok_manifest = read_manifest(cfg.run_dir / "tokenizer")
    assert meta["eot_id"] == tok_manifest["tokenizer"]["eot_id"]
    assert tok_manifest["metrics"]["bytes_per_token"] > 1.5
    assert (cfg.run_dir / "tokenizer" / "tokenizer" / "tokenizer.json").exists()
    assert len(meta["train"]["files"]) > 1  # shard_tokens = 2048 -> 32 rows per file
    for split in ("train", "val"):
        ds = PackedDataset(out, split)
        assert len(ds) == meta[split]["sequences"] > 0
        assert ds.n_tokens == meta[split]["tokens"]
        assert all(ds[i].shape == (SEQ,) for i in range(len(ds)))
        for f in meta[split]["files"]:
            assert (out / f).stat().st_size % (SEQ * 2) == 0
    assert "tokens/s" in stdout
    counts = read_manifest(out)["counts"]
    assert counts["train_sequences"] == meta["train"]["sequences"]


def test_rows_are_the_documents_with_eot_between(run):
    from tokenizers import Tokenizer

    cfg, _, _ = run
    out = cfg.run_dir / "tokenize"
    tok = Tokenizer.from_file(_tok_json(run))
    tok.encode_special_tokens = True  # literal "<|endoftext|>" in a document is text, not the separator
    meta = json.loads((out / "meta.json").read_text())
    eot = meta["eot_id"]
    docs = [d for d in read_documents(cfg.run_dir / "filter" / "docs") if d.text]
    for split in ("train", "val"):
        mine = [d for d in docs if is_validation(d.id, 0.2, cfg.run.seed) == (split == "val")]
        stream: list[int] = []
        for d in mine:
            stream += tok.encode(d.text, add_special_tokens=False).ids + [eot]
        ds = PackedDataset(out, split)
        flat = np.concatenate([ds[i] for i in range(len(ds))]).tolist()
        assert flat == stream[: len(flat)]
        assert len(stream) - len(flat) == meta[split]["dropped_tokens"] < SEQ  # totals conserved
        assert meta[split]["documents"] == len(mine)
        assert flat.count(eot) == stream[: len(flat)].count(eot)
    eot_doc = next(d for d in docs if "<|endoftext|>" in d.text)
    assert eot not in tok.encode(eot_doc.text, add_special_tokens=False).ids
    assert 0 < meta["val"]["documents"] < meta["train"]["documents"]


def _tok_json(run_fixture) -> str:
    cfg = run_fixture[0]
    return str(cfg.run_dir / "tokenizer" / "tokenizer" / "tokenizer.json")


def test_worker_count_does_not_change_output(run, tmp_path):
    docs = MixtureInput("filter", 1.0, run[0].run_dir / "filter" / "docs")
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        s = tokenize_documents([docs], out, _tok_json(run), 0, "uint16", SEQ, validation_fraction=0.3,
                               seed=1, workers=workers, chunk_chars=1500, progress=False)
        outs.append((s.splits, {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*.bin"))}))
    assert outs[0] == outs[1]


def test_uint32_holds_the_same_ids(run, tmp_path):
    docs = MixtureInput("filter", 1.0, run[0].run_dir / "filter" / "docs")
    rows = {}
    for dtype in ("uint16", "uint32"):
        tokenize_documents([docs], tmp_path / dtype, _tok_json(run), 0, dtype, SEQ, progress=False)
        meta = {"seq_len": SEQ, "dtype": dtype, "vocab_size": 512, "eot_id": 0}
        meta["train"] = {"files": sorted(str(p.relative_to(tmp_path / dtype))
                                         for p in (tmp_path / dtype).rglob("train/*.bin"))}
        (tmp_path / dtype / "meta.json").write_text(json.dumps(meta))
        ds = PackedDataset(tmp_path / dtype, "train")
        assert ds.dtype == np.dtype(dtype)
        rows[dtype] = ds.batch(range(len(ds))).astype(np.int64)
    assert np.array_equal(rows["uint16"], rows["uint32"])


def test_mixture_weights_are_per_document_sampling_rates(run, tmp_path):
    a_docs, b_docs = _docs(30, "a"), _docs(200, "b")
    write_jsonl(tmp_path / "a" / "docs.jsonl.gz", a_docs)
    write_jsonl(tmp_path / "b" / "docs.jsonl.gz", b_docs)
    inputs = [MixtureInput("a", 2.0, tmp_path / "a"), MixtureInput("b", 0.5, tmp_path / "b")]
    s = tokenize_documents(inputs, tmp_path / "out", _tok_json(run), 0, "uint16", SEQ, seed=5, progress=False)
    a_nonempty = [d for d in a_docs if d["text"]]
    b_nonempty = [d for d in b_docs if d["text"]]
    assert inputs[0].stats["train"] == 2 * len(a_nonempty)  # weight 2: every document twice
    b_kept = sum(copies_of(0.5, 5, "b", d["id"]) for d in b_nonempty)
    assert inputs[1].stats["train"] == b_kept and 0.35 * len(b_nonempty) < b_kept < 0.65 * len(b_nonempty)
    assert s.splits["train"]["documents"] == 2 * len(a_nonempty) + b_kept

    # the token count is exactly the sum over the sampled copies
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(_tok_json(run))
    tok.encode_special_tokens = True
    n = lambda d: len(tok.encode(d["text"], add_special_tokens=False).ids) + 1  # noqa: E731
    expected = 2 * sum(n(d) for d in a_nonempty) + sum(n(d) for d in b_nonempty if copies_of(0.5, 5, "b", d["id"]))
    assert s.tokens_encoded == expected
    assert s.splits["train"]["tokens"] + s.splits["train"]["dropped_tokens"] == expected


def test_bad_inputs_are_one_line_errors(run, capsys):
    _, toml, _ = run
    rc = cli_main(["tokenize", "--config", str(toml), "--force", "--set", "tokenize.inputs={filter=1.0, nosuch=2.0}"])
    err = capsys.readouterr().err
    assert rc == 2 and "tokenize.inputs: unknown dataset 'nosuch'" in err and len(err.strip().splitlines()) == 1
    rc = cli_main(["tokenize", "--config", str(toml), "--force", "--set", "tokenize.inputs={ingest=1.0}"])
    err = capsys.readouterr().err
    assert rc == 1 and "needs ingest to be done first" in err and len(err.strip().splitlines()) == 1
    rc = cli_main(["tokenize", "--config", str(toml), "--set", "tokenize.inputs={filter=-1.0}"])
    assert rc == 2 and "weight must be a finite number >= 0" in capsys.readouterr().err
