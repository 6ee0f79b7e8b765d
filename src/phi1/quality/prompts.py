"""Teacher prompts for educational value, and robust parsing of the score.

Two prompts (``annotate.prompt``):

* ``direct`` — the paper's question (phi-1, section 2.1: GPT-4 was prompted to
  "determine its educational value for a student whose goal is to learn basic
  coding concepts"), answered with the score alone. The paper does not publish
  its prompt; this is the question it quotes, plus an answer format.
* ``reasoning`` — a short justification first, then the score, on an additive
  0-5 rubric. Modelled on FineWeb-Edu's additive 5-point prompt (Penedo et al.
  2024) as Hugging Face adapted it to code for Stack-Edu (SmolLM2): each
  criterion adds a point, and asking for the reasoning before the number tends
  to give steadier labels than a bare number.

Both ask for a final line ``Educational score: N``. `parse_score` takes only
a well-delimited final score (``phi1.llm.answers``): that line and its usual
variations ("**Score:** 3/5", "Educational Score = 4 points", a bare "4" on
the last line). A reply with no such score in 0..5, or one cut at the token
limit, is invalid and is re-asked with `reask_messages` (which changes the
request, hence its cache key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from phi1.llm.answers import FinalNumber, final_number

SCORE_MIN, SCORE_MAX = 0.0, 5.0


@dataclass(frozen=True)
class EducationalValuePrompt:
    """A versioned prompt: changing the text must change ``prompt_id``."""

    prompt_id: str
    system: str
    template: str  # str.format with {code}

    def messages(self, code: str) -> list[dict[str, Any]]:
        return [{"role": "system", "content": self.system},
                {"role": "user", "content": self.template.format(code=code)}]


_SYSTEM = ("You are an experienced programming teacher who rates code by how useful it is "
           "for teaching programming.")

DIRECT = EducationalValuePrompt(
    "direct-v1",
    _SYSTEM,
    "Here is a Python code file:\n\n<code>\n{code}\n</code>\n\n"
    "Determine its educational value for a student whose goal is to learn basic coding concepts.\n"
    "Rate it from 0 (no educational value) to 5 (excellent: a textbook-quality example).\n"
    "Reply with a single line and nothing else:\n"
    "Educational score: <integer from 0 to 5>",
)

# Additive rubric after FineWeb-Edu / Stack-Edu, adapted to phi-1's goal (a
# student learning basic coding concepts): each criterion adds one point.
REASONING = EducationalValuePrompt(
    "reasoning-v1",
    _SYSTEM,
    "Below is a Python code file. Evaluate its educational value for a student whose goal is to "
    "learn basic coding concepts, using the additive 5-point system described below. Points "
    "accumulate as each criterion is met (0 points if none is):\n\n"
    "- Add 1 point if the file contains valid Python code, even if it is not educational "
    "(boilerplate, configuration, generated code, niche internals).\n"
    "- Add another point if the code addresses practical programming concepts, even if it has "
    "no comments or explanations.\n"
    "- Award a third point if the code is suitable for teaching and shows key programming "
    "concepts (functions, control flow, data structures, classes, standard library use) in a "
    "well-structured way, with some comments or docstrings. Advanced topics are fine.\n"
    "- Grant a fourth point if the code is self-contained, readable (clear names, reasonable "
    "length, no large data tables or configuration dumps) and highly relevant to learning to "
    "program, like a textbook example, a tutorial or an exercise with its solution.\n"
    "- Award a fifth point if the code is outstanding for teaching: clear and well written, "
    "explaining its steps in docstrings or comments, easy for a beginner to follow.\n\n"
    "<code>\n{code}\n</code>\n\n"
    "After examining the code:\n"
    "- Briefly justify your total score, in at most 100 words.\n"
    "- Then end with a final line in exactly this format: \"Educational score: <total points>\"",
)

PROMPTS = {"direct": DIRECT, "reasoning": REASONING}

REASK = ("Your reply did not end with a valid score. Reply with one line only, in exactly this "
         "format: \"Educational score: N\", where N is an integer from 0 to 5.")
REASK_CUT = ("Your reply was too long and was cut off before the score. Reply with one line only, in "
             "exactly this format: \"Educational score: N\", where N is an integer from 0 to 5.")


def get_prompt(name: str) -> EducationalValuePrompt:
    return PROMPTS[name]


def truncate_code(text: str, max_chars: int) -> str:
    """The teacher sees the first ``max_chars`` characters, cut at a line break
    when one is near, and told that the file goes on."""
    if len(text) <= max_chars:
        return text
    cut = text.rfind("\n", 0, max_chars)
    if cut < max_chars * 0.8:
        cut = max_chars
    return text[:cut] + "\n# ... (file truncated)"


def reask_messages(messages: list[dict[str, Any]], reply: str, cut: bool = False) -> list[dict[str, Any]]:
    """The conversation so far, the unusable (or ``cut``) reply, and a request for the score alone."""
    return [*messages, {"role": "assistant", "content": reply},
            {"role": "user", "content": REASK_CUT if cut else REASK}]


# --------------------------------------------------------------------------- parsing

# "Educational score", "educational value score", "total score", "score", "rating"
SCORE_LABELS = (r"(?:educational\s+(?:value\s+)?)?score", "rating")


def read_score(reply: str | None) -> FinalNumber:
    """The 0-5 score a reply ends with, or why there is none (`phi1.llm.answers`:
    only a well-delimited final score counts)."""
    return final_number(reply, SCORE_LABELS, scale=SCORE_MAX, low=SCORE_MIN, high=SCORE_MAX)


def parse_score(reply: str | None) -> float | None:
    """The score a reply ends with, or None when it has no well-delimited
    final score in 0..5 (a signed number, an exponent, "3,5", a number inside
    code, "7/10", a score followed by more text: all None)."""
    return read_score(reply).value
