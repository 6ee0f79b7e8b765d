"""Replies -> code: fences, exercises (record, tests, drop reasons), textbook checks, sandbox verdicts."""

from __future__ import annotations

import ast
import textwrap

import pytest

from phi1.evaluate.sandbox import Job, SandboxLimits, SandboxPool
from phi1.synth.exercises import Candidate, ExerciseRules, parse_exercise
from phi1.synth.parse import code_blocks, exercise_code, session_source
from phi1.synth.records import ExerciseRecord
from phi1.synth.validate import check_textbook, sandbox_reason

RULES = ExerciseRules()

PROGRAM = textwrap.dedent('''\
    from typing import List
    import math


    def count_orders(orders: List[int], limit: int) -> int:
        """Count the orders above limit.

        >>> count_orders([1, 5, 7], 4)
        2
        """
        total = 0
        for o in orders:
            if o > limit:
                total += 1
        return total


    assert count_orders([1, 5, 7], 4) == 2
    assert count_orders([], 4) == 0
    assert count_orders([10, 20], math.floor(15.5)) == 1
    ''')


def fenced(code: str, before: str = "Here is the exercise:\n\n", after: str = "\nIt counts orders.\n") -> str:
    return f"{before}```python\n{code}```\n{after}"


# --------------------------------------------------------------------------- fences


def test_code_blocks_follow_commonmark_fences():
    text = ("intro\n```python\na = 1\n```\n~~~py title\nb = 2\n~~~\n  ```\n  c = 3\n  ```\n"
            "````markdown\n```python\nnot a block\n```\n````\n```bash\nls\n```\n```python\nunclosed = 1\n")
    blocks = code_blocks(text)
    assert [(b.lang, b.code, b.closed) for b in blocks] == [
        ("python", "a = 1\n", True), ("py", "b = 2\n", True), ("", "c = 3\n", True),
        ("markdown", "```python\nnot a block\n```\n", True), ("bash", "ls\n", True),
        ("python", "unclosed = 1\n\n", False)]
    assert [b.is_python for b in blocks] == [True, True, True, False, False, True]


def test_exercise_code_is_the_last_python_block_else_the_whole_reply():
    reply = "```python\nfirst = 1\n```\ntext\n```text\noutput\n```\n```python\nlast = 2\n```\nbye"
    assert exercise_code(reply) == ("last = 2\n", True)
    assert exercise_code("def f():\r\n    return 1\r\n") == ("def f():\n    return 1\n", False)


def test_session_source_keeps_what_was_typed():
    assert session_source(">>> x = [1, 2]\n>>> for v in x:\n...     print(v)\n1\n2\n") == \
        "x = [1, 2]\nfor v in x:\n    print(v)\n"
    assert session_source("plain = 1\n") == "plain = 1\n"


# --------------------------------------------------------------------------- exercises


def test_a_valid_exercise_becomes_mines_record_and_a_check_function():
    c = parse_exercise(fenced(PROGRAM), "count_orders", RULES)
    assert isinstance(c, Candidate)
    assert c.name == "count_orders" and c.name_followed and c.asserts == 3
    assert c.modules == ["math", "typing"]
    # mine's cut: the imports the function uses + signature + docstring / the body
    assert c.prompt.startswith("from typing import List\n\n\ndef count_orders(")
    assert c.prompt.rstrip().endswith('"""') and "import math" not in c.prompt
    assert c.solution.startswith("    total = 0\n") and c.solution.endswith("return total\n")
    rec = ExerciseRecord("x", c.prompt, c.solution, "s")
    assert ast.dump(ast.parse(rec.text).body[-1]) == ast.dump(ast.parse(PROGRAM).body[2])
    # the check function holds every import and every test statement
    assert "import math" in c.test and "def check(candidate):" in c.test
    assert c.tests.count("assert count_orders") == 3


@pytest.mark.parametrize("reply,reason", [
    ("I am sorry, I cannot write that exercise.", "no_code"),
    ("```python\n\n```", "no_code"),
    (fenced("def count_orders(x:\n    return 1\n"), "syntax_error"),
    ("def count_orders(x:\n    return 1\n", "syntax_error"),  # unfenced, but code
    (fenced("return 5\n"), "syntax_error"),  # parses, does not compile
    (fenced("x = 1\nassert x == 1\n"), "no_function"),
    (fenced(PROGRAM.replace("import math", "import os")), "imports"),
    (fenced(PROGRAM.replace("import math", "from . import helpers")), "imports"),
    (fenced(PROGRAM.replace("total = 0", "total = __import__('os').getpid() * 0")), "imports"),
    (fenced(PROGRAM.replace("assert count_orders([], 4) == 0\n", "")), "few_asserts"),
    (fenced(PROGRAM.replace("assert count_orders([], 4) == 0", "assert len([]) == 0")), "few_asserts"),
    (fenced(PROGRAM.replace(PROGRAM[PROGRAM.index('    """'):PROGRAM.index("    total = 0")], "")), "no_docstring"),
    (fenced(PROGRAM.replace("Count the orders above limit.", "Count.").replace(
        PROGRAM[PROGRAM.index("\n\n    >>>"):PROGRAM.index('\n    """\n')], "")), "short_docstring"),
    (fenced(PROGRAM.replace("total = 0", "total = BASE")), "module_context"),
])
def test_drop_reasons_of_exercises(reply, reason):
    assert parse_exercise(reply, "count_orders", RULES) == reason


def test_the_function_the_asserts_test_is_taken_when_the_name_differs():
    helper = "def fmt(x):\n    return str(x)\n\n\n"
    c = parse_exercise(fenced(helper + PROGRAM), "wanted_name", RULES)
    assert isinstance(c, Candidate) and c.name == "count_orders" and not c.name_followed


def test_main_guard_and_called_test_functions_count():
    body = PROGRAM.split("assert")[0]
    reply = fenced(body + textwrap.dedent('''\
        def test_all():
            assert count_orders([1], 0) == 1
            assert count_orders([1], 1) == 0


        if __name__ == "__main__":
            test_all()
            assert count_orders([3, 4], 3) == 1
        '''))
    c = parse_exercise(reply, "count_orders", RULES)
    assert isinstance(c, Candidate) and c.asserts == 3
    # a test function that is never called does not count
    assert parse_exercise(reply.replace("    test_all()\n", ""), "count_orders", RULES) == "few_asserts"


def test_allowed_imports_are_configurable():
    assert isinstance(parse_exercise(fenced(PROGRAM), "count_orders", ExerciseRules(frozenset({"math", "typing"}))),
                      Candidate)
    assert parse_exercise(fenced(PROGRAM), "count_orders", ExerciseRules(frozenset({"typing"}))) == "imports"


# --------------------------------------------------------------------------- sandbox verdicts


def test_sandbox_tells_failed_asserts_errors_and_timeouts_apart():
    cases = {
        "passed": PROGRAM,
        "assert_failed": PROGRAM.replace("== 0", "== 3"),
        "runtime_error": PROGRAM.replace("total += 1", "total += int('x')"),
        "timeout": PROGRAM.replace("total = 0", "while True:\n            pass"),
        "solution_assert": PROGRAM.replace("total = 0", "assert limit > 100\n    total = 0"),
    }
    cands = {k: parse_exercise(fenced(v), "count_orders", RULES) for k, v in cases.items()}
    assert all(isinstance(c, Candidate) for c in cands.values())
    with SandboxPool(2, SandboxLimits(timeout_s=1.0)) as pool:
        runs = pool.run([Job(c.prompt, c.solution, c.test, c.name) for c in cands.values()])
    got = {k: sandbox_reason(ex.passed, ex.result) for k, ex in zip(cands, runs)}
    assert got == {"passed": None, "assert_failed": "assert_failed", "runtime_error": "runtime_error",
                   "timeout": "timeout", "solution_assert": "assert_failed"}


# --------------------------------------------------------------------------- textbooks


def test_textbook_checks():
    prose = "Lists hold items in order. " * 30
    good = prose + "\n\n```python\nxs = [3, 1]\nxs.sort()\nprint(xs)  # [1, 3]\n```\n\n```python\n>>> len(xs)\n2\n```\n"
    ok = check_textbook(good, 400)
    assert ok.reason is None and ok.code_blocks == 2
    assert check_textbook(good.replace("import", ""), 10_000).reason == "too_short"
    assert check_textbook(prose, 100).reason == "no_code"
    assert check_textbook(prose + "\n```python\ndef broken(:\n```\n", 100).reason == "syntax_error"
    # untagged blocks are code when they parse, output when they do not
    assert check_textbook(prose + "\n```\n[1, 3]\n```\n```\nTraceback (most recent call last):\n```\n",
                          100).code_blocks == 1
    with_import = check_textbook(prose + "\n```python\nimport math\nfrom collections import Counter\n```\n", 100)
    assert with_import.modules == ["collections", "math"]


def test_replies_are_cleaned_before_parsing():
    from phi1.synth.chunks import clean_text

    assert clean_text("<think>\nplan it\n</think>\n\n```python\nx = 1\n```") == "```python\nx = 1\n```"
    assert clean_text("keep <think>inline</think> text") == "keep <think>inline</think> text"
    assert clean_text("a\ud800b\x00c") == "a?bc" and clean_text("é plain") == "é plain"
