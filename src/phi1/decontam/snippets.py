"""Training records as the code snippets decontamination compares.

A benchmark problem is one function (with its imports and helpers); training
data comes in two shapes:

* an exercise record (``prompt`` + ``solution``) is one snippet, its program;
* a document is cut into functions, as a copied problem would appear in it:
  every function defined at module level or in a class body (nested
  functions stay inside their parent). A module with no function is one
  snippet. A document that is not Python as a whole (a textbook in Markdown,
  a Python 2 file) is cut first into its fenced code blocks, else into the
  chunks that start at a line beginning with ``def``/``async def``/``class``;
  each piece is then cut as above.

The n-gram signal reads the whole text; the AST and embedding signals read
the snippets.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any

_FENCE = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.MULTILINE | re.DOTALL)
_TOP_START = re.compile(r"^(?:async[ \t]+def|def|class)[ \t]", re.MULTILINE)
_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)
MAX_SNIPPETS = 2000  # per document: a generated file with 100k functions stays bounded


@dataclass(frozen=True)
class Snippet:
    text: str
    label: str = ""  # where in the record: "" (the record), "f:12" (function f at line 12), "block 3"


@dataclass
class TrainingRecord:
    """One record of a training dataset, as the scan sees it."""

    id: str
    text: str  # what the n-gram signal reads
    snippets: list[Snippet] = field(default_factory=list)
    where: str = ""  # file (and line) it came from, for messages and the table
    meta: dict[str, Any] = field(default_factory=dict)


def exercise_record(rec_id: str, prompt: str, solution: str, where: str = "") -> TrainingRecord:
    program = prompt + solution
    return TrainingRecord(str(rec_id), program, [Snippet(program)], where)


def document_record(doc_id: str, text: str, where: str = "") -> TrainingRecord:
    return TrainingRecord(str(doc_id), text, document_snippets(text), where)


def document_snippets(text: str) -> list[Snippet]:
    """The functions of a document (see the module doc)."""
    tree = _parse(text)
    if tree is not None:
        return _functions(tree, text, "")[:MAX_SNIPPETS]
    pieces = [(m.group(2), f"block {i}") for i, m in enumerate(_FENCE.finditer(text), 1)]
    if not pieces:
        starts = [m.start() for m in _TOP_START.finditer(text)]
        pieces = [(text[a:b], f"chunk@{text.count(chr(10), 0, a) + 1}")
                  for a, b in zip(starts, starts[1:] + [len(text)])]
    out: list[Snippet] = []
    for piece, label in pieces:
        piece = _trim_chunk(piece)
        t = _parse(piece)
        if t is None:
            continue
        out.extend(_functions(t, piece, label))
        if len(out) >= MAX_SNIPPETS:
            break
    return out[:MAX_SNIPPETS]


def _parse(text: str) -> ast.Module | None:
    if not text.strip():
        return None
    try:
        return ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return None


def _trim_chunk(piece: str) -> str:
    """A chunk cut at the next top-level def may end in unrelated module-level
    lines (or prose): keep the indented body only."""
    lines = piece.splitlines(keepends=True)
    if not lines:
        return piece
    keep = [lines[0]]
    for line in lines[1:]:
        if line.strip() and not line[:1].isspace() and not line.lstrip().startswith(("#", ")", "]", "}")):
            break
        keep.append(line)
    return "".join(keep)


def _functions(tree: ast.Module, text: str, prefix: str) -> list[Snippet]:
    lines = text.splitlines(keepends=True)
    out: list[Snippet] = []
    found = False
    for node in tree.body:
        nodes = [node] if isinstance(node, _FUNCS) else (
            [n for n in node.body if isinstance(n, _FUNCS)] if isinstance(node, ast.ClassDef) else [])
        for fn in nodes:
            found = True
            first = min([fn.lineno] + [d.lineno for d in fn.decorator_list])
            src = "".join(lines[first - 1: fn.end_lineno])
            if fn.col_offset:  # a method: dedent so it parses on its own
                import textwrap

                src = textwrap.dedent(src)
            label = f"{fn.name}:{fn.lineno}"
            out.append(Snippet(src, f"{prefix} {label}".strip()))
    if not found:
        out.append(Snippet(text, prefix))
    return out
