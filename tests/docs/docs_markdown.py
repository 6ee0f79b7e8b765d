"""Reading the docs as a test sees them: fenced blocks (with their info
string), relative links, heading anchors (GitHub's rules), shell commands.

Conventions the docs follow (docs/index.md, "How these docs are tested"):

- a fenced block whose info string holds the word ``runnable`` is executed by
  tests/docs/test_commands.py: ``bash runnable`` must exit 0; ``console
  runnable`` is a transcript (``$ command`` lines, then the output expected,
  where a line ``...`` stands for any number of lines);
- ``scale-test:NAME`` blocks are executed by tests/scale (a Slurm/Ray cluster);
- every other ``bash``/``sh``/``shell``/``console`` block is parsed: its phi1
  commands must parse, name configs that exist and keys those configs take,
  and every repository path it names must exist;
- ``text`` blocks (synopses, screen output) are not read as commands.
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHELL_LANGS = {"bash", "sh", "shell", "console", "shell-session", "zsh"}


def doc_files() -> list[Path]:
    """README.md and every Markdown file under docs/."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    info: str  # the info string after the fence
    text: str
    before: str = ""  # the nearest non-blank line above the fence (for <!-- runnable-... --> notes)

    @property
    def lang(self) -> str:
        return self.info.split()[0].lower() if self.info.split() else ""

    @property
    def words(self) -> list[str]:
        return self.info.split()[1:]

    @property
    def runnable(self) -> bool:
        return "runnable" in self.words

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")


def blocks(path: Path, text: str | None = None) -> list[Block]:
    """The fenced code blocks of a Markdown file (CommonMark fences: ``` or ~~~,
    closed by a fence of the same character at least as long)."""
    lines = (text if text is not None else path.read_text(encoding="utf-8")).split("\n")
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m or (m.group(2)[0] == "`" and "`" in m.group(3)):
            i += 1
            continue
        indent, fence, info = len(m.group(1)), m.group(2), m.group(3).strip()
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            close = re.match(r"^ {0,3}(`{3,}|~{3,})\s*$", lines[j])
            if close and close.group(1)[0] == fence[0] and len(close.group(1)) >= len(fence):
                break
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j].lstrip())
            j += 1
        out.append(Block(path, i + 1, info, "\n".join(body), before))
        i = j + 1
    return out


def prose(text: str) -> str:
    """The text outside fenced blocks (fenced lines blanked, so line numbers hold)."""
    lines = text.split("\n")
    inside: str | None = None
    for k, line in enumerate(lines):
        m = _FENCE.match(line)
        if inside is None and m and not (m.group(2)[0] == "`" and "`" in m.group(3)):
            inside = m.group(2)
            lines[k] = ""
            continue
        if inside is not None:
            close = re.match(r"^ {0,3}(`{3,}|~{3,})\s*$", line)
            if close and close.group(1)[0] == inside[0] and len(close.group(1)) >= len(inside):
                inside = None
            lines[k] = ""
    return "\n".join(lines)


_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)


def _blank_code_spans(text: str) -> str:
    return _CODE_SPAN.sub(lambda m: " " * len(m.group(0)), text)


@dataclass(frozen=True)
class Link:
    path: Path
    line: int
    target: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


_INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s<>]*(?:\([^()\s]*\)[^()\s<>]*)*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFDEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
_HTML = re.compile(r"""<(?:a|img)\s[^>]*(?:href|src)\s*=\s*["']([^"']+)["']""", re.I)


def links(path: Path, text: str | None = None) -> list[Link]:
    """Every link target of a Markdown file outside code (inline, reference
    definitions, HTML ``href``/``src``)."""
    body = _blank_code_spans(prose(text if text is not None else path.read_text(encoding="utf-8")))
    out = []
    for rx in (_INLINE, _REFDEF, _HTML):
        for m in rx.finditer(body):
            out.append(Link(path, body.count("\n", 0, m.start()) + 1, m.group(1)))
    return out


def is_external(target: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target)) or target.startswith("//")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: inline markup dropped, lower case,
    everything but letters, digits, marks, connector punctuation, spaces and
    hyphens removed, spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](url) -> text
    # inline HTML is dropped, but not inside code spans (`<stage>` there is text)
    parts = re.split(r"(`+[^`]*`+)", text)
    text = "".join(p.strip("`") if p.startswith("`") else re.sub(r"<[^>]+>", "", p) for p in parts)
    text = text.strip().lower()
    kept = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in " -" or cat[0] in "LNM" or cat == "Pc":
            kept.append(ch)
    return "".join(kept).replace(" ", "-")


def anchors(path: Path, text: str | None = None) -> set[str]:
    """The anchors a Markdown file defines: one per ATX or setext heading (with
    GitHub's -1, -2 suffixes for repeats) and explicit ``<a id|name=...>``."""
    raw = text if text is not None else path.read_text(encoding="utf-8")
    body = prose(raw)
    seen: dict[str, int] = {}
    found: set[str] = set()
    lines = body.split("\n")
    for k, line in enumerate(lines):
        m = re.match(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$", line)
        heading = m.group(2) if m else None
        if heading is None and k + 1 < len(lines) and line.strip() and re.match(r"^ {0,3}(=+|-+)\s*$", lines[k + 1]) \
                and not re.match(r"^ {0,3}([-*+]\s|\|)", line):
            heading = line.strip()
        if heading is None:
            continue
        s = slug(heading)
        n = seen.get(s, 0)
        found.add(s if n == 0 else f"{s}-{n}")
        seen[s] = n + 1
    for m in re.finditer(r"""<a\s[^>]*(?:id|name)\s*=\s*["']([^"']+)["']""", body, re.I):
        found.add(m.group(1))
    return found


# --------------------------------------------------------------------------- shell


@dataclass
class Command:
    """One simple command of a shell block (env assignments dropped)."""

    argv: list[str]
    line: int  # line inside the block (1-based)
    prompt: bool = False  # a `$ ` line of a console transcript
    output: list[str] = field(default_factory=list)  # the transcript lines after it


def _open_quote(text: str) -> bool:
    lex = shlex.shlex(text, posix=True, punctuation_chars=";&|()<>")
    lex.whitespace_split = True
    lex.commenters = "#"
    try:
        list(lex)
    except ValueError:
        return True
    return False


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Lines with backslash continuations and multi-line quoted strings joined:
    (first line number, text)."""
    out: list[tuple[int, str]] = []
    buf, start = "", 0
    for k, line in enumerate(text.split("\n"), 1):
        if not buf:
            start = k
        if line.rstrip().endswith("\\") and not _open_quote(buf + line.rstrip()[:-1]):
            buf += line.rstrip()[:-1] + " "
            continue
        if _open_quote(buf + line):
            buf += line + "\n"
            continue
        out.append((start, buf + line))
        buf = ""
    if buf:
        out.append((start, buf))
    return out


_SEPARATORS = {"&&", "||", ";", "|", "&", ";;", "(", ")"}


def split_commands(line: str) -> list[list[str]]:
    """The simple commands of one shell line (comments dropped; `a && b | c`
    gives three), each without leading VAR=value assignments and without
    redirections (`> file`, `2>&1`, `<<EOF`)."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=";&|()<>")
    lex.whitespace_split = True
    lex.commenters = "#"
    try:
        tokens = list(lex)
    except ValueError as e:
        raise ValueError(f"cannot split {line!r}: {e}") from None
    out, cur = [], []
    skip = False
    for t in tokens:
        if skip:
            skip = False
            continue
        if t and set(t) <= set("<>&") and set(t) & set("<>"):
            if cur and cur[-1].isdigit():
                cur.pop()  # the 2 of 2>&1
            skip = True  # the file, descriptor or here-document word
            continue
        if t in _SEPARATORS or (t and set(t) <= set(";&|()")):
            if cur:
                out.append(cur)
            cur = []
        else:
            cur.append(t)
    if cur:
        out.append(cur)
    cleaned = []
    for argv in out:
        while argv and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", argv[0]):
            argv = argv[1:]
        if argv:
            cleaned.append(argv)
    return cleaned


def transcript(block: Block) -> list[tuple[int, str, list[str]]]:
    """A console block's steps: (line, command line after `$ `, output lines shown)."""
    steps: list[tuple[int, str, list[str]]] = []
    lines = block.text.split("\n")
    k = 0
    while k < len(lines):
        line = lines[k]
        if not line.startswith("$ "):
            if steps:
                steps[-1][2].append(line)
            k += 1
            continue
        start, cmd = k + 1, line[2:]
        while cmd.rstrip().endswith("\\") and k + 1 < len(lines):
            k += 1
            cmd = cmd.rstrip()[:-1] + " " + lines[k].strip()
        steps.append((start, cmd, []))
        k += 1
    for _start, _cmd, output in steps:
        while output and not output[-1].strip():
            output.pop()
    return steps


def commands(block: Block) -> list[Command]:
    """The simple commands of a shell block (for a console transcript, those
    of its `$ ` lines)."""
    out: list[Command] = []
    if block.lang in ("console", "shell-session"):
        for start, cmd, output in transcript(block):
            for argv in split_commands(cmd):
                out.append(Command(argv, start, prompt=True, output=output))
        return out
    for start, line in logical_lines(heredoc_free(block.text)):
        for argv in split_commands(line):
            out.append(Command(argv, start))
    return out


def heredoc_free(text: str) -> str:
    """A shell block with here-document bodies blanked (they are data, not commands)."""
    out, lines, k = [], text.split("\n"), 0
    while k < len(lines):
        line = lines[k]
        out.append(line)
        m = re.search(r"<<-?\s*(['\"]?)(\w+)\1", line)
        k += 1
        if m:
            end = m.group(2)
            while k < len(lines) and lines[k].strip() != end:
                out.append("")
                k += 1
            if k < len(lines):
                out.append("")
                k += 1
    return "\n".join(out)
