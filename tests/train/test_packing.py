"""Packing rows and reading packed shards back (no tokenizer needed)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from phi1.errors import InputError
from phi1.train.packing import PackedDataset, SequencePacker, dtype_for_vocab


def test_packer_remainder_and_range_check():
    p = SequencePacker(5, np.uint16)
    assert p.add([1, 2, 3]).shape == (0, 5)
    assert p.remainder == 3
    out = p.add(list(range(12)))
    assert out.shape == (3, 5) and p.remainder == 0 and p.rows_out == 3
    with pytest.raises(ValueError, match="out of range"):
        p.add([70000])


def test_dtype_for_vocab():
    assert dtype_for_vocab(50304) == "uint16"
    assert dtype_for_vocab(65536) == "uint16"
    assert dtype_for_vocab(65537) == "uint32"
    assert dtype_for_vocab(151680) == "uint32"


def _write_split(folder, split, shards, seq_len, dtype):
    (folder / split).mkdir(parents=True)
    files, n = [], 0
    for k, rows in enumerate(shards):
        arr = np.asarray(rows, dtype=dtype).reshape(-1, seq_len)
        name = f"{split}/{k:06d}.bin"
        arr.tofile(folder / name)
        files.append(name)
        n += arr.shape[0]
    return {"files": files, "sequences": n, "tokens": n * seq_len}


def test_packed_dataset_reads_across_shards(tmp_path):
    seq_len = 4
    a = np.arange(0, 12).reshape(3, 4)
    b = np.arange(100, 108).reshape(2, 4)
    meta = {"seq_len": seq_len, "dtype": "uint32", "vocab_size": 70000, "eot_id": 0,
            "train": _write_split(tmp_path, "train", [a, b], seq_len, np.uint32),
            "val": _write_split(tmp_path, "val", [a[:1]], seq_len, np.uint32)}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    ds = PackedDataset(tmp_path, "train")
    assert len(ds) == 5 and ds.n_tokens == 20 and ds.seq_len == 4 and ds.dtype == np.uint32
    assert ds[0].tolist() == [0, 1, 2, 3]
    assert ds[3].tolist() == [100, 101, 102, 103]
    assert ds[-1].tolist() == [104, 105, 106, 107]
    assert ds.batch([4, 0]).tolist() == [[104, 105, 106, 107], [0, 1, 2, 3]]
    with pytest.raises(IndexError):
        ds[5]
    again = pickle.loads(pickle.dumps(ds))
    assert again[4].tolist() == ds[4].tolist()
    assert len(PackedDataset(tmp_path, "val")) == 1
    with pytest.raises(InputError, match="no split"):
        PackedDataset(tmp_path, "test")


def test_packed_dataset_rejects_torn_shard(tmp_path):
    meta = {"seq_len": 4, "dtype": "uint16", "vocab_size": 100, "eot_id": 0,
            "train": _write_split(tmp_path, "train", [np.arange(8)], 4, np.uint16)}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with open(tmp_path / "train/000000.bin", "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(InputError, match="whole number"):
        PackedDataset(tmp_path, "train")
    with pytest.raises(InputError, match="no meta.json"):
        PackedDataset(tmp_path / "train", "train")
