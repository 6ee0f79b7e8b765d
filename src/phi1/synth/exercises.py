"""An exercise reply -> a CodeExercises record and the tests to run it against.

The program (the reply's last Python block) must define a top-level function
(the one the seed named, else the one its asserts call most) with a
docstring, import only allowed modules, and carry at least ``min_asserts``
assert statements that call the function. The record is cut exactly as
`phi1.synth.mine` cuts a corpus function (mine's rules and record format:
``prompt`` = imports it uses + signature + docstring, ``solution`` = body),
so synthetic and mined exercises are interchangeable.

Every other top-level statement of the program (asserts, example data,
helper test functions, the body of an ``if __name__ == "__main__":``) becomes
the body of a ``check(candidate)`` function run by the `execute` sandbox after
the function's definition; failures are marked so an assert that fails is
told apart from any other error.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass, field
from typing import Any, Iterable

from phi1.synth.mine import MineOptions, mine_source
from phi1.synth.parse import exercise_code, imported_modules
from phi1.synth.validate import ASSERT_MARK, ERROR_MARK, FEW_ASSERTS, IMPORTS, NO_CODE, NO_FUNCTION, SYNTAX_ERROR

_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)
_IMPORTS = (ast.Import, ast.ImportFrom)
_CODE_START = ("def ", "async def ", "import ", "from ", "assert ", "class ", "@")


@dataclass(frozen=True)
class ExerciseRules:
    allowed_imports: frozenset[str] = frozenset({"typing", "math", "random", "collections", "datetime",
                                                 "itertools"})
    min_asserts: int = 3
    min_docstring_chars: int = 16
    max_chars: int = 4000


@dataclass
class Candidate:
    """A parsed exercise, not yet run."""

    name: str
    prompt: str
    solution: str
    test: str  # defines check(candidate): what the sandbox runs after prompt + solution
    tests: str  # the program's own test statements, as written (unparsed)
    asserts: int
    modules: list[str] = field(default_factory=list)
    name_followed: bool = True


def parse_exercise(reply: str, want_name: str, rules: ExerciseRules) -> Candidate | str:
    """A `Candidate`, or the drop reason (a `phi1.synth.validate` constant or mine's)."""
    code, fenced = exercise_code(reply)
    if not code.strip():
        return NO_CODE
    try:
        tree = ast.parse(code)
        compile(tree, "<exercise>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError, TypeError):
        looks = fenced or any(ln.lstrip().startswith(_CODE_START) for ln in code.splitlines())
        return SYNTAX_ERROR if looks else NO_CODE
    funcs = [n for n in tree.body if isinstance(n, _FUNCS)]
    if not funcs:
        return NO_FUNCTION
    modules, dynamic = imported_modules(tree)
    if dynamic or modules - rules.allowed_imports:
        return IMPORTS

    statements = _unwrap_main(tree.body)
    called = _called_names(statements)
    by_name = {f.name: f for f in funcs}
    if want_name in by_name:
        target = by_name[want_name]
    else:  # the function the asserts test most (first defined on ties)
        target = max(funcs, key=lambda f: _count_asserts([s for s in statements if s is not f], f.name, called))
    body = [s for s in statements if s is not target and not isinstance(s, _IMPORTS)]
    n_asserts = _count_asserts(body, target.name, called)
    if n_asserts < rules.min_asserts:
        return FEW_ASSERTS

    record = _mined(code, tree, target, rules)
    if isinstance(record, str):
        return record
    prompt, solution = record
    imports = [s for s in statements if isinstance(s, _IMPORTS)
               and not (isinstance(s, ast.ImportFrom) and s.module == "__future__")]
    tests = "\n".join(ast.unparse(s) for s in body) + "\n"
    return Candidate(target.name, prompt, solution, check_function(imports, body), tests, n_asserts,
                     sorted(modules), target.name == want_name)


def check_function(imports: list[ast.stmt], body: list[ast.stmt]) -> str:
    """``check(candidate)`` running the statements; a failing assert raises
    ``AssertionError("[phi1-assert] ...")``, anything else
    ``RuntimeError("[phi1-error] <type>: ...")``."""
    head = "".join(ast.unparse(s) + "\n" for s in imports)
    inner = textwrap.indent("\n".join(ast.unparse(s) for s in body) or "pass", " " * 8)
    return (f"{head}\n\ndef check(candidate):\n"
            f"    try:\n{inner}\n"
            f"    except AssertionError as _phi1_e:\n"
            f"        raise AssertionError({ASSERT_MARK!r} + ' ' + str(_phi1_e)) from None\n"
            f"    except Exception as _phi1_e:\n"
            f"        raise RuntimeError({ERROR_MARK!r} + ' ' + type(_phi1_e).__name__ + ': ' + str(_phi1_e))"
            f" from None\n")


def _is_main_guard(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    t = node.test
    if len(t.ops) != 1 or not isinstance(t.ops[0], ast.Eq):
        return False
    sides = [t.left, t.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    consts = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(consts) == 1


def _unwrap_main(body: Iterable[ast.stmt]) -> list[ast.stmt]:
    """Top-level statements with ``if __name__ == "__main__":`` replaced by its
    body (in the sandbox the program is not run as a script)."""
    out: list[ast.stmt] = []
    for s in body:
        out.extend(_unwrap_main(s.body) if _is_main_guard(s) else [s])
    return out


def _called_names(statements: list[ast.stmt]) -> set[str]:
    """Names called by expression statements at the top level (test functions that run)."""
    return {s.value.func.id for s in statements
            if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call) and isinstance(s.value.func, ast.Name)}


def _calls(node: ast.AST, name: str) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name
               for n in ast.walk(node))


def _count_asserts(statements: list[ast.stmt], name: str, called: set[str]) -> int:
    """Assert statements that will run and call ``name``: at the top level, in
    compound statements, and in top-level functions that are called."""
    n = 0
    stack: list[Any] = list(statements)
    while stack:
        s = stack.pop()
        if isinstance(s, ast.Assert):
            n += _calls(s.test, name)
        elif isinstance(s, _FUNCS):
            if s.name in called and s.name != name:
                stack.extend(s.body)
        elif isinstance(s, (ast.ClassDef, ast.Lambda)):
            continue
        else:
            for child in ast.iter_child_nodes(s):
                if isinstance(child, ast.stmt):
                    stack.append(child)
                elif isinstance(child, (ast.excepthandler, ast.match_case)):
                    stack.extend(child.body)
    return n


def _span(node: ast.stmt) -> tuple[int, int]:
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return first, node.end_lineno or node.lineno


def _mined(code: str, tree: ast.Module, target: ast.stmt, rules: ExerciseRules) -> tuple[str, str] | str:
    """(prompt, solution) of ``target`` cut by mine, or mine's drop reason.

    Mine sees the program with every top-level statement but the imports and
    the target blanked out (line numbers kept), so the reason it gives is the
    target's own."""
    lines = code.split("\n")
    keep: set[int] = set()
    for node in tree.body:
        if node is target or isinstance(node, _IMPORTS):
            a, b = _span(node)
            keep.update(range(a, b + 1))
    for node in tree.body:
        if node is target or isinstance(node, _IMPORTS):
            continue
        a, b = _span(node)
        if keep & set(range(a, b + 1)):
            return "layout"  # shares a line with the function or an import
        for i in range(a - 1, b):
            lines[i] = ""
    reduced = "\n".join(lines)
    opts = MineOptions(min_body_lines=1, min_docstring_chars=rules.min_docstring_chars,
                       max_chars=rules.max_chars, self_contained=True)
    records, stats = mine_source(reduced, "synth", "", opts)
    for r in records:
        if r.metadata.get("function") == target.name:
            return r.prompt, r.solution
    dropped = [k[len("dropped_"):] for k, v in stats.items() if k.startswith("dropped_") and v]
    return dropped[0] if dropped else "invalid"
