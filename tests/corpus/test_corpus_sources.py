"""Each source kind as a datatrove reader: listing, sharding, ids, metadata, bad input."""

from __future__ import annotations

import json
import os
import sys

import pytest
from corpus_helpers import make_tree, snippet, write_jsonl

from phi1.corpus.config import SourceConfig
from phi1.corpus.readers import build_readers, files_done
from phi1.corpus.sources import (
    fingerprint_source, list_python_tree, resolve_sources, stdlib_path,
)
from phi1.errors import InputError


def read_all(sources, problems_dir, world_size=2, max_read_bytes=-1, progress_dir=""):
    """Every document each task would read, by rank."""
    out = {}
    for rank in range(world_size):
        docs = []
        for reader in build_readers(sources, str(problems_dir), max_read_bytes, str(progress_dir)):
            docs.extend(reader.run(None, rank, world_size))
        out[rank] = docs
    return out


def test_python_tree_listing_skips_tests_site_packages_hidden(tmp_path):
    make_tree(tmp_path, {
        "pkg/__init__.py": "", "pkg/core.py": "x = 1\n", "pkg/notes.txt": "no",
        "pkg/test_core.py": "", "pkg/core_test.py": "", "pkg/tests/helpers.py": "", "test/x.py": "",
        "idlelib/idle_test/t.py": "", "conftest.py": "",
        "site-packages/dep/mod.py": "", ".hidden/a.py": "", "pkg/__pycache__/c.py": "",
        "encodings/cp1.py": "", "encodings/cp2.py": "",
    })
    rels = [r for r, _ in list_python_tree(tmp_path)]
    assert rels == ["encodings/cp1.py", "encodings/cp2.py", "pkg/__init__.py", "pkg/core.py"]
    with_tests = [r for r, _ in list_python_tree(tmp_path, include_tests=True, exclude=["encodings/*"])]
    assert "pkg/test_core.py" in with_tests and "pkg/tests/helpers.py" in with_tests
    assert "idlelib/idle_test/t.py" in with_tests
    assert not any(r.startswith(("encodings/", "site-packages/", ".hidden/")) for r in with_tests)


def test_stdlib_default_is_this_interpreters_stdlib(monkeypatch):
    src = SourceConfig()  # kind python_tree, path ''
    rels = [r for r, _ in list_python_tree(stdlib_path())]
    assert "os.py" in rels and "json/decoder.py" in rels
    assert not any("/test/" in f"/{r}" or r.startswith("test/") for r in rels)
    assert not any("site-packages" in r for r in rels)
    fp = fingerprint_source(src)
    assert fp == fingerprint_source(src)  # stable
    monkeypatch.setattr(sys, "version", sys.version + " (another build)")
    assert fingerprint_source(src) != fp  # a different interpreter means a different stdlib


def test_fingerprint_follows_files(tmp_path):
    make_tree(tmp_path, {"a.py": "x = 1\n"})
    src = SourceConfig(path=str(tmp_path))
    fp1 = fingerprint_source(src)
    (tmp_path / "b.py").write_text("y = 2\n")
    fp2 = fingerprint_source(src)
    assert fp2 != fp1
    st = (tmp_path / "a.py").stat()
    os.utime(tmp_path / "a.py", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert fingerprint_source(src) != fp2
    assert fingerprint_source(SourceConfig(path=str(tmp_path / "missing"))) != fp2  # no exception


def test_python_tree_reader_shards_by_file(tmp_path):
    tree = make_tree(tmp_path / "tree", {f"m{i}.py": snippet(i) for i in range(5)})
    (tree / "latin1.py").write_bytes(b"# caf\xe9\nx = 1\n")
    sources = resolve_sources([SourceConfig(path=str(tree), name="mine")], tmp_path / "paths")
    assert sources[0].n_files == 6
    by_rank = read_all(sources, tmp_path / "problems", progress_dir=tmp_path / "progress")
    assert files_done(tmp_path / "progress") == 6  # what the progress bar polls
    ids = [d.id for docs in by_rank.values() for d in docs]
    assert sorted(ids) == sorted(f"mine/{n}" for n in ["latin1.py"] + [f"m{i}.py" for i in range(5)])
    assert len(by_rank[0]) == 3 and len(by_rank[1]) == 3  # every other file
    doc = next(d for docs in by_rank.values() for d in docs if d.id == "mine/m2.py")
    assert doc.text == snippet(2)
    assert doc.metadata == {"source": "mine", "path": "m2.py", "size": len(snippet(2).encode())}
    bad = next(d for docs in by_rank.values() for d in docs if d.id == "mine/latin1.py")
    assert "decode_error" in bad.metadata  # the encoding filter drops it as not_utf8


def test_python_tree_limit_and_large_files(tmp_path):
    tree = make_tree(tmp_path / "tree", {f"m{i}.py": snippet(i) for i in range(5)})
    sources = resolve_sources([SourceConfig(path=str(tree), limit=2)], tmp_path / "paths")
    assert sources[0].n_files == 2
    docs = [d for ds in read_all(sources, tmp_path / "p", max_read_bytes=10).values() for d in ds]
    assert len(docs) == 2
    assert all(d.text == "" and d.metadata["size"] > 10 for d in docs)  # not loaded, size kept for the filter


def test_jsonl_sources_with_broken_lines(tmp_path):
    good = [{"content": snippet(i), "sha": f"h{i}"} for i in range(4)]
    write_jsonl(tmp_path / "data" / "a.jsonl", [good[0], "{not json", good[1], "", "[1, 2]"])
    write_jsonl(tmp_path / "data" / "sub" / "b.jsonl.gz", [good[2], {"content": None, "sha": "x"}, good[3], '{"tr'])
    src = SourceConfig(kind="jsonl", path=str(tmp_path / "data"), text_field="content", id_field="sha")
    sources = resolve_sources([src], tmp_path / "paths")
    assert sources[0].n_files == 2 and sources[0].name == "data"
    by_rank = read_all(sources, tmp_path / "problems")
    docs = [d for ds in by_rank.values() for d in ds]
    assert sorted(d.id for d in docs) == ["data/h0", "data/h1", "data/h2", "data/h3"]
    d1 = next(d for d in docs if d.id == "data/h1")
    assert d1.metadata["path"] == "a.jsonl:3" and d1.text == snippet(1)
    problems = {}
    for p in (tmp_path / "problems").glob("*.json"):
        problems.update(json.loads(p.read_text()))
    assert problems["a.jsonl"]["count"] == 2
    assert [x["at"] for x in problems["a.jsonl"]["first"]] == ["line 2", "line 5"]
    assert [x["at"] for x in problems["sub/b.jsonl.gz"]["first"]] == ["line 2", "line 4"]


def test_truncated_jsonl_gz_keeps_what_was_readable(tmp_path):
    f = write_jsonl(tmp_path / "t.jsonl.gz", [{"text": snippet(i) * 20} for i in range(30)])
    data = f.read_bytes()
    f.write_bytes(data[: len(data) * 2 // 3])  # a download that stopped early
    sources = resolve_sources([SourceConfig(kind="jsonl", path=str(f))], tmp_path / "paths")
    docs = [d for ds in read_all(sources, tmp_path / "problems", world_size=1).values() for d in ds]
    assert 0 < len(docs) < 30
    problems = json.loads(next((tmp_path / "problems").glob("*.json")).read_text())
    (entry,) = problems["t.jsonl.gz"]["first"]
    assert entry["at"] == f"line {len(docs) + 1}" and "unreadable from here on" in entry["why"]


def test_jsonl_without_id_field_uses_file_and_line(tmp_path):
    f = write_jsonl(tmp_path / "one.jsonl", [{"text": snippet(0)}, {"text": snippet(1)}])
    sources = resolve_sources([SourceConfig(kind="jsonl", path=str(f))], tmp_path / "paths")
    docs = [d for ds in read_all(sources, tmp_path / "p", world_size=1).values() for d in ds]
    assert [d.id for d in docs] == ["one/one.jsonl:1", "one/one.jsonl:2"]


def test_wrong_text_field_names_field_file_and_available(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", ["{broken", {"content": "x = 1", "repo": "r"}])
    with pytest.raises(InputError) as e:
        resolve_sources([SourceConfig(kind="jsonl", path=str(f), text_field="text")], tmp_path / "paths")
    msg = str(e.value)
    assert "'text'" in msg and str(f) in msg and "content, repo" in msg and "\n" not in msg
    with pytest.raises(InputError, match="id_field 'hexsha'"):
        resolve_sources([SourceConfig(kind="jsonl", path=str(f), text_field="content", id_field="hexsha")],
                        tmp_path / "paths")


def test_parquet_source_shards_by_row_group(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "pq").mkdir()
    for k in range(2):
        table = pa.table({"content": [snippet(2 * k), None, snippet(2 * k + 1)],
                          "hexsha": [f"s{2 * k}", "null", f"s{2 * k + 1}"]})
        pq.write_table(table, tmp_path / "pq" / f"part-{k}.parquet", row_group_size=2)
    src = SourceConfig(kind="parquet", path=str(tmp_path / "pq"), text_field="content", id_field="hexsha", name="stack")
    sources = resolve_sources([src], tmp_path / "paths")
    assert (sources[0].n_files, sources[0].n_units) == (2, 4)
    by_rank = read_all(sources, tmp_path / "problems")
    # units: part-0 rows 0-1, part-0 row 2, part-1 rows 0-1, part-1 row 2; every other unit per task
    assert [d.id for d in by_rank[0]] == ["stack/s0", "stack/s2"]
    assert [d.id for d in by_rank[1]] == ["stack/s1", "stack/s3"]
    assert by_rank[1][1].metadata["path"] == "part-1.parquet#2"
    problems = {}
    for p in (tmp_path / "problems").glob("*.json"):
        for path, e in json.loads(p.read_text()).items():
            problems.setdefault(path, []).extend(x["at"] for x in e["first"])
    assert problems == {"part-0.parquet": ["row 1"], "part-1.parquet": ["row 1"]}
    with pytest.raises(InputError, match="text_field 'text' not found .*available fields: content, hexsha"):
        resolve_sources([SourceConfig(kind="parquet", path=str(tmp_path / "pq"))], tmp_path / "paths")
    (tmp_path / "pq" / "junk.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="not a readable parquet file: .*junk.parquet"):
        resolve_sources([SourceConfig(kind="parquet", path=str(tmp_path / "pq"), text_field="content")],
                        tmp_path / "paths")


def test_hf_disk_source(tmp_path):
    from datasets import Dataset

    Dataset.from_dict({"code": [snippet(i) for i in range(5)], "n": list(range(5))}).save_to_disk(
        str(tmp_path / "ds"))
    src = SourceConfig(kind="hf_disk", path=str(tmp_path / "ds"), text_field="code")
    sources = resolve_sources([src], tmp_path / "paths")
    by_rank = read_all(sources, tmp_path / "problems")
    assert [d.id for d in by_rank[0]] == ["ds/#0", "ds/#1"]
    assert [d.id for d in by_rank[1]] == ["ds/#2", "ds/#3", "ds/#4"]
    assert by_rank[1][0].text == snippet(2)
    limited = resolve_sources([SourceConfig(kind="hf_disk", path=str(tmp_path / "ds"), text_field="code", limit=3)],
                              tmp_path / "paths")
    assert sum(len(v) for v in read_all(limited, tmp_path / "p2").values()) == 3
    with pytest.raises(InputError, match="text_field 'text' not found .*available fields: code, n"):
        resolve_sources([SourceConfig(kind="hf_disk", path=str(tmp_path / "ds"))], tmp_path / "paths")
    with pytest.raises(InputError, match="not a dataset saved with save_to_disk"):
        resolve_sources([SourceConfig(kind="hf_disk", path=str(tmp_path / "paths"))], tmp_path / "paths")


def test_several_sources_and_names(tmp_path):
    tree = make_tree(tmp_path / "code", {"a.py": snippet(0)})
    f = write_jsonl(tmp_path / "extra.jsonl.gz", [{"text": snippet(1)}])
    sources = resolve_sources([SourceConfig(path=str(tree)), SourceConfig(kind="jsonl", path=str(f)),
                               SourceConfig(path=str(tree))], tmp_path / "paths")
    assert [s.name for s in sources] == ["code", "extra", "code-2"]
    docs = [d for ds in read_all(sources, tmp_path / "p", world_size=1).values() for d in ds]
    assert [d.id for d in docs] == ["code/a.py", "extra/extra.jsonl.gz:1", "code-2/a.py"]
    with pytest.raises(InputError, match="used twice"):
        resolve_sources([SourceConfig(path=str(tree), name="x"), SourceConfig(path=str(tree), name="x")],
                        tmp_path / "paths")


def test_missing_and_empty_sources(tmp_path):
    with pytest.raises(InputError, match=r"ingest source 1 \(python_tree\): path not found: .*nowhere"):
        resolve_sources([SourceConfig(path=str(tmp_path / "nowhere"))], tmp_path / "paths")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("hi")
    with pytest.raises(InputError, match=r"no \*\.py files under .*empty"):
        resolve_sources([SourceConfig(path=str(tmp_path / "empty"))], tmp_path / "paths")
    with pytest.raises(InputError, match=r"no \*\.jsonl or \*\.jsonl\.gz files"):
        resolve_sources([SourceConfig(kind="jsonl", path=str(tmp_path / "empty"))], tmp_path / "paths")
    with pytest.raises(InputError, match="no sources"):
        resolve_sources([], tmp_path / "paths")


def test_jsonl_with_a_byte_order_mark_keeps_its_first_record(tmp_path):
    f = tmp_path / "bom.jsonl"
    f.write_bytes(b"\xef\xbb\xbf" + json.dumps({"text": snippet(0)}).encode() + b"\r\n"
                  + json.dumps({"text": snippet(1)}).encode() + b"\r\n")
    sources = resolve_sources([SourceConfig(kind="jsonl", path=str(f))], tmp_path / "paths")
    docs = [d for ds in read_all(sources, tmp_path / "p", world_size=1).values() for d in ds]
    assert [d.text for d in docs] == [snippet(0), snippet(1)]


def test_a_huge_jsonl_line_is_skipped_without_reading_it_whole(tmp_path, monkeypatch):
    # a multi-GB "line" (a file that is not JSONL, a dump without newlines) cost its size in memory
    from phi1.corpus import sources as sources_mod

    f = tmp_path / "huge.jsonl"
    f.write_bytes(json.dumps({"text": snippet(0)}).encode() + b"\n" + b'{"text": "' + b"x" * 1_200_000 + b'"}\n'
                  + json.dumps({"text": snippet(1)}).encode() + b"\n" + b'{"text": "' + b"y" * 1_100_000)
    reads = []
    real = sources_mod.bounded_lines

    def spy(fh, limit=sources_mod.JSONL_MAX_LINE):
        reads.append(limit)
        yield from real(fh, limit)

    monkeypatch.setattr("phi1.corpus.readers.bounded_lines", spy)
    sources = resolve_sources([SourceConfig(kind="jsonl", path=str(f))], tmp_path / "paths")
    docs = [d for ds in read_all(sources, tmp_path / "p", world_size=1, max_read_bytes=1000).values() for d in ds]
    assert [d.text for d in docs] == [snippet(0), snippet(1)]
    assert reads == [6 * 1000 + (1 << 20)]
    problems = json.loads(next((tmp_path / "p").glob("*.json")).read_text())["huge.jsonl"]
    assert [x["at"] for x in problems["first"]] == ["line 2", "line 4"]


def test_bounded_lines_keeps_memory_to_the_limit():
    import io

    from phi1.corpus.sources import bounded_lines

    data = b"a\n" + b"b" * 1000 + b"\n" + b"c\n" + b"d" * 10
    assert list(bounded_lines(io.BytesIO(data), 100)) == [(b"a\n", 2), (None, 1001), (b"c\n", 2), (b"d" * 10, 10)]
