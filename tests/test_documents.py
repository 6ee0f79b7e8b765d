"""Shared record I/O: JSONL readers name the real line of a problem."""

from __future__ import annotations

import gzip

import pytest

from phi1.documents import read_jsonl, read_jsonl_numbered, write_jsonl
from phi1.errors import InputError


def test_numbered_lines_survive_blank_lines(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n\n\n{"a": 2}\n')
    assert list(read_jsonl_numbered(p)) == [(1, {"a": 1}), (4, {"a": 2})]
    assert list(read_jsonl(p)) == [{"a": 1}, {"a": 2}]


def test_broken_line_error_names_file_and_real_line(tmp_path):
    p = tmp_path / "x.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.write('{"a": 1}\n\n{oops\n')
    with pytest.raises(InputError, match=r"x\.jsonl\.gz:3: not valid JSON"):
        list(read_jsonl(p))


def test_write_is_atomic_and_round_trips(tmp_path):
    p = tmp_path / "sub" / "y.jsonl.gz"
    assert write_jsonl(p, [{"id": "1", "t": "é"}]) == 1
    assert list(read_jsonl(p)) == [{"id": "1", "t": "é"}]
    assert [x.name for x in p.parent.iterdir()] == ["y.jsonl.gz"]


def test_imported_labels_error_names_the_real_line(tmp_path):
    from phi1.quality.teachers import imported_labels

    p = tmp_path / "labels.jsonl"
    p.write_text('{"id": "a", "score": 3}\n\n{"id": "a", "score": 4}\n')
    with pytest.raises(InputError, match=r"labels\.jsonl:3: duplicate id 'a' \(first on line 1\)"):
        imported_labels(p, {"a"})
