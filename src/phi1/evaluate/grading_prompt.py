"""The grader's prompt and the parsing of its reply.

The phi-1 paper grades solutions with GPT-4 the way a teacher would: the
grader first writes a short verbal evaluation of the student's solution, then
gives a grade from 0 to 10. The grade is read from the reply's last line, in
the forms graders actually use ("Grade: 7", "**Grade**: 7.5", "Final grade:
8/10", "7 out of 10", a bare "8"); a reply without such a grade in [0, 10]
(or one cut at the token limit) is invalid and is asked again with a reminder
of the format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from phi1.llm.answers import FinalNumber, final_number

SYSTEM = (
    "You are an experienced Python teacher grading a student's solution to a programming exercise. "
    "The exercise is a function to complete from its signature and docstring. Judge the solution by "
    "reading it (it is not run): correctness first, then the handling of edge cases the docstring "
    "implies, then clarity. A correct solution that differs from the reference deserves full marks."
)

INSTRUCTIONS = (
    "First write a short verbal evaluation of the student's solution (two to four sentences). "
    "Then, on the last line, give a grade from 0 (no progress) to 10 (fully correct and clear), "
    "exactly in this form:\nGrade: N"
)

REASK = (
    "Your reply did not end with a valid grade. Reply again: a short evaluation of the student's "
    "solution, then on the last line `Grade: N` with N a number from 0 to 10."
)
REASK_CUT = (
    "Your reply was too long and was cut off before the grade. Reply again, briefly: at most three "
    "sentences of evaluation, then on the last line `Grade: N` with N a number from 0 to 10."
)


def fenced(code: str, lang: str = "python") -> str:
    """``code`` in a Markdown fence longer than any backtick run inside it
    (a completion that writes ``` cannot close the block early)."""
    longest = max((len(m) for m in re.findall(r"`+", code)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{code.rstrip()}\n{fence}"


def grading_messages(problem: dict[str, Any], completion: str, include_reference: bool) -> list[dict[str, str]]:
    """Chat messages asking for an evaluation and a grade of ``prompt + completion``."""
    parts = ["The exercise:", fenced(problem["prompt"])]
    if include_reference:
        parts += ["A reference solution (one correct way to solve it):",
                  fenced(problem["prompt"] + problem["canonical_solution"])]
    parts += ["The student's solution:", fenced(problem["prompt"] + completion), INSTRUCTIONS]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


def reask_messages(messages: list[dict[str, str]], reply: str, cut: bool = False) -> list[dict[str, str]]:
    """The conversation so far plus a reminder of the format (a new request,
    so the cache does not answer it with the same invalid reply); ``cut``:
    the reply was cut at the token limit, so ask for a shorter one."""
    return [*messages, {"role": "assistant", "content": reply},
            {"role": "user", "content": REASK_CUT if cut else REASK}]


# --------------------------------------------------------------------------- parsing

GRADE_LABELS = ("grade", "score", "rating", "mark")


@dataclass(frozen=True)
class ParsedGrade:
    grade: float | None  # None: no valid grade in the reply
    evaluation: str  # the verbal evaluation (the reply without its grade line)
    error: str = ""  # why the reply is invalid


def parse_grade(reply: str | None) -> ParsedGrade:
    """The 0-10 grade and the evaluation in a grader's reply.

    Only a well-delimited final grade counts (`phi1.llm.answers`): the last
    line ends with "Grade: N", "N/10", "N out of 10" or is the number alone.
    A grade with a denominator other than 10, outside [0, 10], signed,
    written with an exponent or a decimal comma, inside code, or followed by
    more text is invalid rather than guessed at: the grader is asked again.
    """
    text = (reply or "").strip()
    found = final_number(text, GRADE_LABELS, scale=10)
    if found.value is None:
        return ParsedGrade(None, text, found.error)
    return ParsedGrade(found.value, _evaluation_before(text, found))


def _evaluation_before(text: str, found: FinalNumber) -> str:
    """The evaluation: the text before the grade's line (or before the grade on
    its line, when it shares one), minus an "Evaluation:" label."""
    head = text[:found.line_start].strip() or found.before
    head = re.sub(r"^[\s*_#]*(?:verbal\s+)?evaluation[\s*_]*:[\s*_]*", "", head, flags=re.IGNORECASE)
    return head.strip()
