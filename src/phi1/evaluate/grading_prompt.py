"""The grader's prompt and the parsing of its reply.

The phi-1 paper grades solutions with GPT-4 the way a teacher would: the
grader first writes a short verbal evaluation of the student's solution, then
gives a grade from 0 to 10. Graders do not always follow the format, so the
grade is looked for in the forms they actually use ("Grade: 7",
"**Grade**: 7.5", "Final grade: 8/10", "7 out of 10", a bare "8" on the last
line); a reply without a grade in [0, 10] is invalid and is asked again with a
reminder of the format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

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


def reask_messages(messages: list[dict[str, str]], reply: str) -> list[dict[str, str]]:
    """The conversation so far plus a reminder of the format (a new request,
    so the cache does not answer it with the same invalid reply)."""
    return [*messages, {"role": "assistant", "content": reply}, {"role": "user", "content": REASK}]


# --------------------------------------------------------------------------- parsing

_NUM = r"(\d+(?:\.\d+)?)"
_OUT_OF = r"(?:\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?))?"
# "grade" then up to 20 characters of markup/words without a digit, a line
# break or another "grade" ("**: ", " of ", " is **"), then the number,
# optionally "/ 10".
_GAP = r"(?:(?!grade|score)[^\d\n]){0,20}?"
_GRADE = re.compile(r"\bgrade\b" + _GAP + _NUM + _OUT_OF, re.IGNORECASE)
_SCORE = re.compile(r"\b(?:score|rating|mark)\b" + _GAP + _NUM + _OUT_OF, re.IGNORECASE)
_FRACTION = re.compile(_NUM + r"\s*(?:/|out\s+of)\s*10\b", re.IGNORECASE)
_BARE = re.compile(r"^[\s*_`#>]*" + _NUM + r"[\s*_`.]*$")


@dataclass(frozen=True)
class ParsedGrade:
    grade: float | None  # None: no valid grade in the reply
    evaluation: str  # the verbal evaluation (the reply without its grade line)
    error: str = ""  # why the reply is invalid


def parse_grade(reply: str | None) -> ParsedGrade:
    """The 0-10 grade and the evaluation in a grader's reply.

    The last grade-like mention wins (an evaluation may say "a high grade"
    before the final "Grade: 9"). A grade with a denominator other than 10, or
    outside [0, 10], is invalid rather than rescaled: the grader did not
    answer the question asked.
    """
    text = (reply or "").strip()
    if not text:
        return ParsedGrade(None, "", "empty reply")
    match = None
    for pattern in (_GRADE, _SCORE, _FRACTION):
        found = list(pattern.finditer(text))
        if found:
            match = found[-1]
            break
    if match is None:
        last = text.splitlines()[-1]
        bare = _BARE.match(last)
        if bare is None:
            return ParsedGrade(None, text, "no grade found")
        value, start = float(bare.group(1)), len(text) - len(last)
    else:
        value = float(match.group(1))
        denominator = match.group(2) if match.re is not _FRACTION else "10"
        if denominator is not None and float(denominator) != 10:
            return ParsedGrade(None, text, f"grade {match.group(0).strip()!r} is not out of 10")
        start = match.start()
    if not 0 <= value <= 10:
        return ParsedGrade(None, text, f"grade {value:g} is outside 0-10")
    return ParsedGrade(value, _evaluation_before(text, start))


def _evaluation_before(text: str, start: int) -> str:
    """The evaluation: the text before the grade's line, minus an "Evaluation:" label."""
    line_start = text.rfind("\n", 0, start) + 1
    head = text[:line_start].strip() or text[:start].strip()
    head = re.sub(r"^[\s*_#]*(?:verbal\s+)?evaluation[\s*_]*:[\s*_]*", "", head, flags=re.IGNORECASE)
    return head.strip()
