"""`grade`: the grader's prompt, parsing its reply, and the stage against the
local OpenAI-compatible test server, through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.openai_server import Fault, openai_server_factory  # noqa: F401 (fixture)
from helpers.stages import mark_done
from phi1.cli import main
from phi1.config import load_config
from phi1.documents import read_jsonl, write_jsonl
from phi1.evaluate.grading_prompt import fenced, grading_messages, parse_grade, reask_messages
from phi1.pipeline import read_manifest


@pytest.mark.parametrize(
    "reply, grade",
    [
        ("Evaluation: correct and clear.\nGrade: 7", 7.0),
        ("The loop is off by one.\n\n**Grade**: 7.5", 7.5),
        ("Handles the empty list. I'd give it 7/10.", 7.0),
        ("Good.\n\n**Grade: 8/10**", 8.0),
        ("It deserves a high grade. Grade: 9", 9.0),  # the last mention wins
        ("Final grade - 6 out of 10", 6.0),
        ("Score: 4/10", 4.0),
        ("Nice work.\n8", 8.0),  # a bare number on the last line
        ("Nice.\n**10**", 10.0),
        ("Grade: 0", 0.0),
        ("Grade: 85", None),  # out of range
        ("Grade: 8/100", None),  # not out of 10: not rescaled
        ("Grade: N/A\nthe tests call it 10 times", None),
        ("I cannot grade this solution.", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_grade(reply, grade):
    parsed = parse_grade(reply)
    assert parsed.grade == grade
    assert bool(parsed.error) == (grade is None)


@pytest.mark.parametrize("reply", [
    "Grade: -3", "Final grade: −3", "Grade: +7", "Grade: 1e1", "Grade: 7,5", "Grade: 07", "Grade: ７",
    "Grade: 7 or 8", "Grade: 7-8", "Grade: 8\nbut I am not sure", "Grade: 9 (if the tests pass)",
    "Grade: 8\n```python\nassert grade == 9\n```", "```\nGrade: 9\n```", "Grade: `x = 9`",
    "The student wrote `x = 7/10`", "x = 7/10", "It calls f 10 times", "Grade: 1*0", "Grade: 10.5",
    "Grade: 9/100", "Grade: 3/5", "subgrade: 7", "Grade: NaN",
])
def test_parse_grade_takes_only_a_well_delimited_final_grade(reply):
    parsed = parse_grade(reply)
    assert parsed.grade is None and parsed.error, (reply, parsed)


def test_parse_grade_keeps_the_evaluation():
    p = parse_grade("**Evaluation:** The solution sorts twice; correct but slow.\n\nGrade: 8")
    assert p.evaluation == "The solution sorts twice; correct but slow." and p.grade == 8


PROBLEM = {"task_id": "Toy/0", "prompt": 'def add(a, b):\n    """Add a and b."""\n',
           "canonical_solution": "    return a + b\n", "test": "", "entry_point": "add"}


def test_grading_messages_show_problem_reference_and_student():
    msgs = grading_messages(PROBLEM, "    return a - b\n", include_reference=True)
    assert [m["role"] for m in msgs] == ["system", "user"]
    user = msgs[1]["content"]
    assert PROBLEM["prompt"].rstrip() in user
    assert "def add(a, b):\n    \"\"\"Add a and b.\"\"\"\n    return a + b\n```" in user  # the reference
    assert "\"\"\"Add a and b.\"\"\"\n    return a - b\n```" in user  # the student's program
    assert user.rstrip().endswith("Grade: N")
    hidden = grading_messages(PROBLEM, "    return a - b\n", include_reference=False)[1]["content"]
    assert "return a + b" not in hidden and "reference" not in hidden.lower()
    again = reask_messages(msgs, "no idea")
    assert [m["role"] for m in again] == ["system", "user", "assistant", "user"] and again[2]["content"] == "no idea"
    # A completion containing a fence cannot close the code block early.
    assert fenced("x = 1\n```\nprint(x)").startswith("````python\n")


# --------------------------------------------------------------------------- the stage




PROBLEMS = [
    {"task_id": f"Toy/{i}", "prompt": f'def f{i}(a, b):\n    """Return a + b + {i}."""\n',
     "canonical_solution": f"    return a + b + {i}\n", "test": "", "entry_point": f"f{i}"}
    for i in range(4)
]
SAMPLES = [
    {"task_id": "Toy/0", "completion": "    return a + b + 0\n"},  # good -> 9
    {"task_id": "Toy/0", "completion": "    return a - b\n"},  # wrong -> 2/10
    {"task_id": "Toy/1", "completion": "    return a + b + 1  # vague\n"},  # invalid once, then 6
    {"task_id": "Toy/1", "completion": "    return a + b + 1\n"},  # good -> 9
    {"task_id": "Toy/2", "completion": "    pass  # never graded\n"},  # invalid every time
    {"task_id": "Toy/3", "completion": "    return 3  # rejected\n"},  # HTTP 400
]


def grader(req):
    """A deterministic grader keyed on the student's solution."""
    text = req.body["messages"][1]["content"]
    student = text.split("The student's solution:")[1]
    reasked = len(req.body["messages"]) > 2
    if "never graded" in student:
        return "I would rather not give a number."
    if "vague" in student:
        return "Evaluation: fine.\n**Grade**: 6" if reasked else "It is fine, I think."
    if "return a - b" in student:
        return "Evaluation: subtracts instead of adding.\nGrade: 2/10"
    return "Evaluation: correct and clear.\nGrade: 9"


def setup_run(tmp_path: Path, llm: str, grade: str = "") -> Path:
    config = tmp_path / "run.toml"
    config.write_text(f"""
[run]
root = "{tmp_path / 'runs'}"
name = "g"

[grade]
{grade}

[grade.llm]
{llm}
""")
    cfg = load_config(config)
    mark_done(cfg, "finetune")
    gen = cfg.run_dir / "generate"
    gen.mkdir(parents=True)
    write_jsonl(gen / "problems.jsonl", PROBLEMS)
    write_jsonl(gen / "samples.jsonl", SAMPLES)
    mark_done(cfg, "generate", generation={"model": "runs/g/finetune/model"})
    return config


def llm_section(base_url: str) -> str:
    return (f'base_urls = ["{base_url}"]\nmodel = "grader-4"\napi_key_env = ""\n'
            "backoff_base_s = 0.01\nbackoff_max_s = 0.05\nmax_retries = 2")


def test_grade_stage_parses_reasks_excludes_and_caches(openai_server_factory, tmp_path, capsys):
    srv = openai_server_factory(responder=grader, per_request_faults=[Fault("500")],
                                rules=[(lambda r: "rejected" in r.prompt_text, Fault.bad_request())])
    config = setup_run(tmp_path, llm_section(srv.base_url))
    cfg = load_config(config)
    assert main(["grade", "--config", str(config)]) == 0

    grades = list(read_jsonl(cfg.run_dir / "grade" / "grades.jsonl"))
    assert [(g["task_id"], g["sample"], g["grade"]) for g in grades] == [
        ("Toy/0", 0, 9.0), ("Toy/0", 1, 2.0), ("Toy/1", 0, 6.0), ("Toy/1", 1, 9.0),
        ("Toy/2", 0, None), ("Toy/3", 0, None)]
    assert grades[1]["evaluation"] == "subtracts instead of adding." and grades[1]["raw"].endswith("2/10")
    assert grades[2]["attempts"] == 2 and grades[2]["invalid_replies"][0]["reply"] == "It is fine, I think."
    assert grades[4]["attempts"] == 3 and len(grades[4]["invalid_replies"]) == 3 and not grades[4]["valid"]
    assert "400" in grades[5]["error"] and grades[5]["raw"] is None

    asked = srv.ok_requests()
    # 5 first asks + 1 re-ask for Toy/1#0 + 2 re-asks for Toy/2 (the 400 is never answered)
    assert len(asked) == 8 and all(r.endpoint == "chat" for r in asked)
    assert all(r.body["model"] == "grader-4" and r.body["temperature"] == 0.0 for r in asked)
    assert sum("400" == r.outcome for r in srv.requests) == 1  # a 400 is not retried

    m = read_manifest(cfg.run_dir / "grade")
    assert m["metrics"]["grade_pct"] == pytest.approx(10 * (9 + 2 + 6 + 9) / 4, abs=0.01)
    assert m["metrics"]["per_task_pct"] == {"Toy/0": 55.0, "Toy/1": 75.0, "Toy/2": None, "Toy/3": None}
    assert m["metrics"]["grader"] == "grader-4" and m["metrics"]["student"] == "runs/g/finetune/model"
    # the 400 is the endpoint rejecting that request as such: invalid, not a failure a re-run could fix
    assert m["counts"] == {"samples": 6, "tasks": 4, "graded": 4, "invalid_excluded": 2,
                           "failed_excluded": 0, "reasked": 2}
    assert m["failed"] == 0
    assert m["llm"]["model"] == "grader-4"
    out = capsys.readouterr().out
    assert "mean grade 65.0% of 10 over 4 of 6 samples" in out and "excluded: 2 without a valid grade" in out

    # A forced re-run is answered from the cache (the rejected request is asked again: errors are not cached).
    before = [r for r in srv.requests if r.outcome == "ok"]
    assert main(["grade", "--config", str(config), "--force"]) == 0
    assert len(srv.ok_requests()) == len(before)
    assert list(read_jsonl(cfg.run_dir / "grade" / "grades.jsonl")) == grades


def test_reference_can_be_hidden_and_samples_limited(openai_server_factory, tmp_path):
    srv = openai_server_factory(responder=lambda r: "Grade: 5")
    config = setup_run(tmp_path, llm_section(srv.base_url), "include_reference = false\nsamples_per_task = 1")
    assert main(["grade", "--config", str(config)]) == 0
    assert len(srv.ok_requests()) == 4  # first sample of each of the 4 tasks
    assert all("reference" not in r.last_user_message.lower() for r in srv.ok_requests())
    m = read_manifest(load_config(config).run_dir / "grade")
    assert m["metrics"]["grade_pct"] == 50.0 and m["metrics"]["include_reference"] is False


def test_without_endpoint_the_stage_is_skipped_with_a_notice(tmp_path, capsys):
    config = setup_run(tmp_path, "")
    assert main(["run", str(config), "--only", "grade"]) == 0
    out = capsys.readouterr().out
    assert "grade: skipped: no grader endpoint" in out
    assert not (load_config(config).run_dir / "grade").exists()


def test_samples_for_unknown_tasks_are_one_clear_line(openai_server_factory, tmp_path, capsys):
    srv = openai_server_factory(responder=lambda r: "Grade: 5")
    config = setup_run(tmp_path, llm_section(srv.base_url))
    cfg = load_config(config)
    write_jsonl(cfg.run_dir / "generate" / "samples.jsonl", [{"task_id": "Nope/1", "completion": "x"}])
    assert main(["grade", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "samples.jsonl:1: task_id 'Nope/1' is not among the problems" in err
    assert not srv.requests


def test_cut_replies_are_never_parsed_and_failed_requests_are_resent_by_a_plain_rerun(
        openai_server_factory, tmp_path, capsys):
    from phi1.evaluate.grading_prompt import REASK_CUT

    head = "Evaluation: looks right.\nGrade: 9"  # what survives the cut: it must not be read as the grade
    tail = "\nIt fails on negative a. Grade: 3"
    assert len(tail) in (len(head), len(head) + 1)

    def first_sample(req) -> bool:
        return "return a + b + 0\n" in req.body["messages"][1]["content"].split("The student's solution:")[1]

    def respond(req):
        return head + tail if first_sample(req) else grader(req)

    down = [True]
    rules = [(first_sample, Fault.cut()),
             (lambda r: down[0] and "rejected" in r.prompt_text, Fault("500"))]
    srv = openai_server_factory(responder=respond, rules=rules)
    config = setup_run(tmp_path, llm_section(srv.base_url))
    cfg = load_config(config)
    assert main(["run", str(config), "--only", "grade"]) == 0
    out = capsys.readouterr().out
    grades = list(read_jsonl(cfg.run_dir / "grade" / "grades.jsonl"))
    cut = grades[0]
    assert cut["grade"] is None and not cut["valid"] and cut["attempts"] == 3
    assert [x["why"] for x in cut["invalid_replies"]] == ["reply cut at the token limit"] * 3
    asked = [r for r in srv.requests if first_sample(r)]
    assert len(asked) == 6 and sum(r.last_user_message == REASK_CUT for r in asked) == 4  # 3 asks x (512, 1024)
    assert grades[5]["error"].startswith("gave up after 3 attempts: HTTP 500")
    m = read_manifest(cfg.run_dir / "grade")
    assert m["failed"] == 1 and m["counts"]["failed_excluded"] == 1 and m["counts"]["invalid_excluded"] == 2
    assert "1 item(s) failed" in out

    down[0] = False  # the endpoint recovers: a plain re-run sends exactly the failed request
    srv.reset_log()
    assert main(["run", str(config), "--only", "grade"]) == 0
    assert len(srv.requests) == 1 and "rejected" in srv.requests[0].prompt_text
    m = read_manifest(cfg.run_dir / "grade")
    assert m["failed"] == 0 and m["counts"]["graded"] == 4 and m["counts"]["invalid_excluded"] == 2
    assert main(["run", str(config), "--only", "grade"]) == 0 and len(srv.requests) == 1  # current now
