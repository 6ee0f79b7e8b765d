"""Reading the final number of an LLM's reply: a score, a grade.

A teacher or grader is asked to end with a line like ``Educational score: N``
or ``Grade: N``. What counts as that number is deliberately narrow, because a
number taken from the wrong place becomes a wrong label without anyone
noticing, while a reply with no number is simply asked again:

* only the **last non-empty line** counts, and not when it is inside (or is
  the fence of) a fenced code block; inline code is opaque unless it holds
  nothing but the number (``Score: `4` ``);
* the line must **end** with the statement: a label (``score``, ``grade``,
  ...), a separator (``:``, ``=``, ``is``, a spaced dash, or a space), the
  number, optionally ``/ SCALE``, ``out of SCALE`` or ``(out of SCALE)``,
  optionally ``points``, and at most a final ``.`` or ``!``; or be just the
  number (optionally over the scale); or end with ``... a 3/5.`` after a word;
* the number is plain ASCII decimal: no sign, no exponent, no thousands or
  decimal comma, no leading zeros, no other scripts' digits;
* a denominator other than the scale, or a value outside the range, is not
  rescaled or clipped: it is no answer.

Markdown emphasis (``**``, ``__``), heading marks, quote marks and a list
bullet at the start of the line are ignored. Anything else is "no answer",
with the reason in ``FinalNumber.error``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

_NUM = r"(?:0|[1-9][0-9]*)(?:\.[0-9]+)?"
_NUM_ONLY = re.compile(rf"^\s*{_NUM}\s*$")
_DEN = (rf"(?:\s*/\s*(?P<d1>{_NUM})|\s+out\s+of\s+(?P<d2>{_NUM})"
        rf"|\s*\(\s*out\s+of\s+(?P<d3>{_NUM})\s*\))")
_UNIT = r"(?:\s*points?)?"
_END = r"\s*[.!]?\s*$"
_SEP = r"(?:\s*[:=]\s*|\s+(?:is|of)\s*:?\s*|\s+[-\u2013\u2014]\s+|\s+)"
_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(.*?)\1")
_LEAD = re.compile(r"^\s*(?:#+\s*|>\s*|[-+*]\s+)*")
# Emphasis marks, but not between two characters of a word or number ("1*0", "1_000" stay as they are).
_EMPHASIS = re.compile(r"(?<![0-9A-Za-z])[*_]+|[*_]+(?![0-9A-Za-z])")
_BLOCK = "\x00"  # stands for inline code: nothing can match across it


@dataclass(frozen=True)
class FinalNumber:
    value: float | None  # None: no valid answer
    error: str = ""  # why not (empty when found)
    line_start: int = 0  # offset in the reply of the line that holds the answer
    before: str = ""  # that line's text before the statement (normalised)


def final_number(reply: str | None, labels: Sequence[str], scale: float,
                 low: float = 0.0, high: float | None = None) -> FinalNumber:
    """The answer a reply ends with, in ``[low, high]`` (``high`` defaults to
    ``scale``); see the module docstring for what qualifies."""
    high = scale if high is None else high
    text = reply or ""
    if not text.strip():
        return FinalNumber(None, "empty reply")
    line, start, in_code = _last_line(text)
    if in_code:
        return FinalNumber(None, "the reply ends inside a code block", start)
    norm = _normalise(line)
    label = "|".join(f"(?:{x})" for x in labels)
    patterns = (
        re.compile(rf"(?<![\w-])(?:{label}){_SEP}(?P<num>{_NUM}){_DEN}?{_UNIT}{_END}", re.IGNORECASE),
        re.compile(rf"^\s*(?P<num>{_NUM}){_DEN}?{_UNIT}{_END}", re.IGNORECASE),
        re.compile(rf"(?<=[A-Za-z])\s+(?P<num>{_NUM})(?:\s*/\s*|\s+out\s+of\s+)(?P<d1>{_NUM}){_END}",
                   re.IGNORECASE),
    )
    for pattern in patterns:
        m = pattern.search(norm)
        if m is None:
            continue
        value = float(m.group("num"))
        den = next((m.group(g) for g in ("d1", "d2", "d3") if g in m.groupdict() and m.group(g)), None)
        if den is not None and float(den) != scale:
            return FinalNumber(None, f"{m.group(0).strip()!r} is not out of {scale:g}", start)
        if not low <= value <= high:
            return FinalNumber(None, f"{value:g} is outside {low:g}-{high:g}", start)
        return FinalNumber(value, "", start, norm[: m.start()].strip())
    return FinalNumber(None, "the last line is not a final answer", start)


def _last_line(text: str) -> tuple[str, int, bool]:
    """(last non-empty line, its offset, whether it is code: in a fence or a fence)."""
    in_fence = False
    last, last_start, last_code = "", 0, False
    offset = 0
    for raw in text.splitlines(keepends=True):
        line = raw.rstrip("\r\n")
        if _FENCE.match(line):
            in_fence = not in_fence
            if line.strip():
                last, last_start, last_code = line, offset, True
        elif line.strip():
            last, last_start, last_code = line, offset, in_fence
        offset += len(raw)
    return last, last_start, last_code


def _normalise(line: str) -> str:
    line = _CODE_SPAN.sub(lambda m: m.group(2) if _NUM_ONLY.match(m.group(2)) else _BLOCK, line)
    if "`" in line:  # an unclosed code span: opaque from there on
        line = line[: line.index("`")] + _BLOCK
    line = _LEAD.sub("", line)
    return _EMPHASIS.sub("", line)
