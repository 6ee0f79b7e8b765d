from __future__ import annotations

import gzip
import json

import pytest

from phi1.errors import InputError
from phi1.evaluate.problems import Problem, load_problems, write_problems

REC = {"task_id": "T/0", "prompt": "def f(x):\n", "canonical_solution": "    return x\n",
       "test": "def check(c):\n    assert c(1) == 1\n", "entry_point": "f"}


def test_bundled_humaneval():
    probs = load_problems("humaneval")
    assert len(probs) == 164
    assert list(probs)[:2] == ["HumanEval/0", "HumanEval/1"]
    p = probs["HumanEval/0"]
    assert isinstance(p, Problem) and p.entry_point == "has_close_elements"
    prog = p.program(p.canonical_solution)
    assert prog.startswith(p.prompt + p.canonical_solution + "\n" + p.test)
    assert prog.endswith("check(has_close_elements)")


def test_jsonl_and_gz_roundtrip(tmp_path):
    path = tmp_path / "p.jsonl"
    write_problems(path, [Problem(**REC)])
    assert load_problems(str(path))["T/0"] == Problem(**REC)
    gz = tmp_path / "p.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write("\n" + json.dumps(REC) + "\n\n")
    assert list(load_problems(str(gz))) == ["T/0"]


@pytest.mark.parametrize("line, words", [
    (json.dumps({k: v for k, v in REC.items() if k != "test"}), ["p.jsonl:2", "missing field 'test'"]),
    (json.dumps({**REC, "task_id": "T/1", "prompt": 3}), ["p.jsonl:2", "'prompt' must be a string"]),
    (json.dumps({**REC, "task_id": "T/1", "entry_point": "a b"}), ["p.jsonl:2", "entry_point"]),
    (json.dumps(REC), ["p.jsonl:2", "duplicate task_id 'T/0'"]),
    ("{not json", ["p.jsonl:2", "not valid JSON"]),
    ("[1, 2]", ["p.jsonl:2", "JSON object"]),
])
def test_bad_records_name_file_and_line(tmp_path, line, words):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(REC) + "\n" + line + "\n")
    with pytest.raises(InputError) as e:
        load_problems(str(path))
    for w in words:
        assert w in str(e.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_problems(str(tmp_path / "nope.jsonl"))
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(InputError, match="no problems"):
        load_problems(str(tmp_path / "e.jsonl"))
