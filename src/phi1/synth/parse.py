"""Code out of model replies: fenced blocks, exercises, imports.

Fences follow CommonMark: a line of three or more backticks (or tildes),
indented at most three spaces, opens a block whose info string's first word
is its language; a line of the same character, at least as long, closes it;
an unclosed block runs to the end of the reply. Python blocks are those
tagged ``python``, ``py``, ``python3``, ``py3``, ``pycon`` or untagged.

An exercise reply is parsed from its *last* Python block (the whole reply
when it has none): the program a model is asked to end with. A textbook keeps
its prose and code; each of its blocks tagged as Python must parse
(interactive ``>>>`` sessions are read as the statements typed in them).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

PYTHON_TAGS = frozenset({"python", "py", "python3", "py3", "pycon", "ipython"})
_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")
_PROMPT = re.compile(r"^\s*(>>>|\.\.\.)( |$)")


@dataclass(frozen=True)
class CodeBlock:
    lang: str  # lower-cased first word of the info string ("" when untagged)
    code: str
    closed: bool
    line: int  # 1-based line of the opening fence

    @property
    def is_python(self) -> bool:
        return self.lang in PYTHON_TAGS or self.lang == ""


def code_blocks(text: str) -> list[CodeBlock]:
    """Every fenced block of a Markdown reply, in order."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    blocks: list[CodeBlock] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m or (m.group(2)[0] == "`" and "`" in m.group(3)):  # a backtick fence's info has no backtick
            i += 1
            continue
        indent, fence, info = len(m.group(1)), m.group(2), m.group(3).strip()
        lang = info.split()[0].lower().strip("{}.") if info else ""
        body: list[str] = []
        j = i + 1
        closed = False
        while j < len(lines):
            c = _FENCE.match(lines[j])
            if c and c.group(2)[0] == fence[0] and len(c.group(2)) >= len(fence) and not c.group(3).strip():
                closed = True
                break
            line = lines[j]
            # CommonMark: the opening fence's indentation is removed from content lines
            strip = min(indent, len(line) - len(line.lstrip(" ")))
            body.append(line[strip:])
            j += 1
        blocks.append(CodeBlock(lang, "\n".join(body) + ("\n" if body else ""), closed, i + 1))
        i = j + 1
    return blocks


def python_blocks(text: str) -> list[CodeBlock]:
    return [b for b in code_blocks(text) if b.is_python]


def exercise_code(reply: str) -> tuple[str, bool]:
    """The program of an exercise reply: its last Python block, else the whole
    reply. Returns (code, whether it came from a fenced block)."""
    blocks = python_blocks(reply)
    if blocks:
        return blocks[-1].code, True
    return reply.replace("\r\n", "\n").replace("\r", "\n"), False


def session_source(code: str) -> str:
    """The statements typed in an interactive ``>>>`` session (output lines
    dropped); code without prompts is returned as it is."""
    lines = code.split("\n")
    if not any(_PROMPT.match(ln) and ln.lstrip().startswith(">>>") for ln in lines):
        return code
    out = []
    for ln in lines:
        m = _PROMPT.match(ln)
        if m:
            out.append(ln[m.end():])
    return "\n".join(out) + "\n"


def parses(code: str) -> bool:
    try:
        ast.parse(code)
        return True
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False


def imported_modules(tree: ast.AST) -> tuple[set[str], bool]:
    """Top-level names of every module a program imports (anywhere in it), and
    whether it imports in ways that cannot be checked statically (relative
    imports, ``__import__``, ``importlib``)."""
    modules: set[str] = set()
    dynamic = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                dynamic = True
            elif node.module:
                modules.add(node.module.split(".")[0])
        elif isinstance(node, ast.Name) and node.id in ("__import__", "importlib"):
            dynamic = True
        elif isinstance(node, ast.Attribute) and node.attr == "__import__":
            dynamic = True
    return modules, dynamic


def block_modules(blocks: list[CodeBlock]) -> set[str]:
    """Modules imported by the blocks that parse."""
    out: set[str] = set()
    for b in blocks:
        try:
            tree = ast.parse(session_source(b.code))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        out |= imported_modules(tree)[0]
    return out
