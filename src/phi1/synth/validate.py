"""Why a synthetic record is dropped, and the checks that decide it.

Every reply ends as a kept record or as exactly one drop reason, counted in
the manifest (``<kind>.dropped.<reason>``); the counts and the kept records
add up to the seeds asked for.

Both kinds:
  request_failed   the LLM request failed after its retries (re-sent by a re-run)
  cut              the reply hit max_tokens, also after ``synth.reask_cut`` shorter re-asks
  no_code          no Python code in the reply
  syntax_error     a Python block does not parse
  duplicate, near_duplicate
                   the same text (after normalisation) / MinHash Jaccard >= ``synth.near_duplicate``
                   as an earlier kept record
Textbooks:
  too_short        fewer than ``synth.min_textbook_chars`` characters
Exercises:
  no_function      the program defines no top-level function
  imports          it imports a module outside ``synth.allowed_imports`` (or imports dynamically)
  few_asserts      fewer than ``synth.min_asserts`` asserts call the function
  assert_failed    the solution fails its own asserts in the sandbox
  runtime_error    the program raises anything else (or is killed) in the sandbox
  timeout          it runs past ``execute.timeout_s``
  duplicate_of_reference, near_duplicate_of_reference
                   the same program as / a near duplicate of an exercise of ``synth.dedup_against``
  and mine's shape checks on the function (`phi1.synth.mine`): no_docstring,
  short_docstring, trivial, short_body, module_context, relative_import,
  layout, too_long, invalid.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

from phi1.synth.parse import imported_modules, python_blocks, session_source

REQUEST_FAILED = "request_failed"
CUT = "cut"
NO_CODE = "no_code"
SYNTAX_ERROR = "syntax_error"
TOO_SHORT = "too_short"
NO_FUNCTION = "no_function"
IMPORTS = "imports"
FEW_ASSERTS = "few_asserts"
ASSERT_FAILED = "assert_failed"
RUNTIME_ERROR = "runtime_error"
TIMEOUT = "timeout"
DUPLICATE = "duplicate"
NEAR_DUPLICATE = "near_duplicate"
DUPLICATE_OF_REFERENCE = "duplicate_of_reference"
NEAR_DUPLICATE_OF_REFERENCE = "near_duplicate_of_reference"

# Markers the exercise harness puts in front of a failure (see `phi1.synth.exercises`).
ASSERT_MARK = "[phi1-assert]"
ERROR_MARK = "[phi1-error]"


def sandbox_reason(passed: bool, result: str) -> str | None:
    """The drop reason for one sandbox `Execution` (None: it passed)."""
    if passed:
        return None
    if result == "timed out":
        return TIMEOUT
    if result.startswith(f"failed: {ASSERT_MARK}"):
        return ASSERT_FAILED
    return RUNTIME_ERROR


@dataclass
class TextbookCheck:
    reason: str | None  # None: keep
    code_blocks: int = 0
    modules: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"code_blocks": self.code_blocks, "imports": self.modules}


def check_textbook(text: str, min_chars: int) -> TextbookCheck:
    """A textbook section keeps its prose and code; it needs code, and every
    block tagged as Python must parse. Untagged blocks count as code only when
    they parse (they are often program output)."""
    if len(text.strip()) < min_chars:
        return TextbookCheck(TOO_SHORT)
    code = 0
    modules: set[str] = set()
    for block in python_blocks(text):
        source = session_source(block.code)
        if not source.strip():
            continue
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            if block.lang:
                return TextbookCheck(SYNTAX_ERROR, code)
            continue
        code += 1
        modules |= imported_modules(tree)[0]
    if not code:
        return TextbookCheck(NO_CODE)
    return TextbookCheck(None, code, sorted(modules))
