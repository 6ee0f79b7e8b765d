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


# --------------------------------------------------------------------------- hostile files (input red team)


@pytest.mark.parametrize("data, words", [
    (b'{"a": 1}\n\xff\xfe garbage\n', ["x.jsonl:2", "not UTF-8"]),
    (b'{"a": 1}\n{"a": ' + b"[" * 100_000 + b"\n", ["x.jsonl:2"]),
])
def test_undecodable_lines_are_one_line_errors(tmp_path, data, words):
    p = tmp_path / "x.jsonl"
    p.write_bytes(data)
    with pytest.raises(InputError) as e:
        list(read_jsonl(p))
    assert all(w in str(e.value) for w in words), str(e.value)


def test_a_byte_order_mark_and_crlf_are_read(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n{"a": 2}\r\n')
    assert list(read_jsonl(p)) == [{"a": 1}, {"a": 2}]


def test_a_huge_line_is_refused_without_reading_it_whole(tmp_path, monkeypatch):
    import phi1.documents as documents

    monkeypatch.setattr(documents, "MAX_LINE_BYTES", 1000)
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a": 1}\n{"a": "' + b"x" * 5000 + b'"}\n')
    with pytest.raises(InputError, match="x.jsonl:2: line longer than"):
        list(read_jsonl(p))


def test_a_truncated_gz_is_an_error_naming_the_file(tmp_path):
    p = tmp_path / "x.jsonl.gz"
    write_jsonl(p, [{"a": i, "pad": "y" * 200} for i in range(2000)])
    p.write_bytes(p.read_bytes()[:3000])
    with pytest.raises(InputError, match="x.jsonl.gz:.*cannot read"):
        list(read_jsonl(p))


def test_a_shard_line_that_is_not_a_document_is_one_line(tmp_path):
    from phi1.documents import read_documents

    p = tmp_path / "docs" / "0.jsonl"
    p.parent.mkdir()
    p.write_text('{"id": "a", "text": "x"}\n[1, 2]\n')
    with pytest.raises(InputError, match=r"0.jsonl:2: not a document record"):
        list(read_documents(p.parent))
