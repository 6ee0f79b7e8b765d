"""The one atomic writer: a failed write never leaves a half file or a stray temporary."""

from __future__ import annotations

import gzip
import json

import pytest

from phi1.files import atomic_open, jsonl_line, write_atomic, write_json_atomic, write_jsonl_atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "out.json"
    write_json_atomic(p, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_open(p, "w") as fh:
            fh.write('{"v": 2, "half')
            raise RuntimeError("killed mid-write")
    assert json.loads(p.read_text()) == {"v": 1}
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out.json"]


def test_every_json_value_round_trips_lone_surrogates_included(tmp_path):
    records = [{"completion": "x = '\ud800'"}, {"t": "é \u2028 \x00"}, {"n": [1, 2.5, None, True]}]
    assert write_jsonl_atomic(tmp_path / "a.jsonl.gz", records) == 3
    back = [json.loads(x) for x in gzip.open(tmp_path / "a.jsonl.gz", "rt").read().splitlines()]
    assert back == records
    write_json_atomic(tmp_path / "m.json", {"s": "\udfff"})
    assert json.loads((tmp_path / "m.json").read_text()) == {"s": "\udfff"}
    assert "é" in jsonl_line({"t": "é"})  # readable where it can be


def test_bytes_and_text(tmp_path):
    write_atomic(tmp_path / "b", b"\x00\x01")
    write_atomic(tmp_path / "t", "héllo", durable=False)
    assert (tmp_path / "b").read_bytes() == b"\x00\x01" and (tmp_path / "t").read_text() == "héllo"
