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

Both ask for a final line ``Educational score: N``. `parse_score` accepts
that and the usual variations ("**Score:** 3/5", "Educational Score = 4 points",
a bare "4"); a reply with no score in 0..5 is invalid and is re-asked with
`reask_messages` (which changes the request, hence its cache key).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

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


def reask_messages(messages: list[dict[str, Any]], reply: str) -> list[dict[str, Any]]:
    """The conversation so far, the unusable reply, and a request for the score alone."""
    return [*messages, {"role": "assistant", "content": reply}, {"role": "user", "content": REASK}]


# --------------------------------------------------------------------------- parsing

_NUM = r"(\d+(?:\.\d+)?)"
# "... score ... : 4", "score is 4", "score = 4 points", with an optional "/5" or "out of 5"
_SCORE_PATTERNS = [
    re.compile(r"educational\s+(?:value\s+)?score\s*(?:is|of|:|=|-|—)?\s*:?\s*" + _NUM + r"(?P<den>\s*(?:/|out\s+of)\s*\d+)?", re.I),
    re.compile(r"\b(?:total\s+|final\s+|overall\s+)?score\s*(?:is|of|:|=|-|—)?\s*:?\s*" + _NUM + r"(?P<den>\s*(?:/|out\s+of)\s*\d+)?", re.I),
    re.compile(r"(?<![\d.])" + _NUM + r"(?P<den>\s*(?:/|out\s+of)\s*5)\b", re.I),
]
_BARE = re.compile(r"^\s*" + _NUM + r"\s*(?:points?)?\s*\.?\s*$", re.I)
_MARKUP = re.compile(r"[*_`#>]")


def parse_score(reply: str | None) -> float | None:
    """The score a reply ends with, or None when it has none in 0..5.

    The last match wins (a justification may quote other numbers first); a
    score over another scale ("7/10") is not a 0-5 score and is rejected.
    """
    if not reply:
        return None
    text = _MARKUP.sub("", reply)
    for pattern in _SCORE_PATTERNS:
        matches = list(pattern.finditer(text))
        if matches:
            return _checked(matches[-1])
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if lines:
        m = _BARE.match(lines[-1])
        if m:
            return _in_range(float(m.group(1)))
    return None


def _checked(m: re.Match[str]) -> float | None:
    den = m.group("den")
    if den and int(re.sub(r"\D", "", den)) != 5:
        return None
    return _in_range(float(m.group(1)))


def _in_range(value: float) -> float | None:
    return value if SCORE_MIN <= value <= SCORE_MAX else None
