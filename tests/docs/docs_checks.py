"""What a shell command shown in the docs must satisfy without running it,
and how a runnable block is run. Used by tests/docs/test_commands.py."""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from docs_markdown import REPO, Block, Command, transcript

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PHI1 = str(Path(sys.executable).with_name("phi1"))
# Top-level folders of the repository: a token starting with one of them names a repository file.
REPO_DIRS = ("configs/", "bench/", "scripts/", "tests/", "src/", "docs/")
PYTHONS = {"python", "python3", sys.executable, ".venv/bin/python"}


# --------------------------------------------------------------------------- parsing


def phi1_args(argv: list[str]) -> list[str] | None:
    """The phi1 arguments of a command that runs phi1 (directly, via `python -m
    phi1.cli` or under torchrun), else None."""
    head = argv[0]
    if head == "phi1" or head.endswith("/phi1"):
        return argv[1:]
    for k, tok in enumerate(argv[:-1]):
        if tok == "-m" and argv[k + 1] in ("phi1.cli", "phi1"):
            return argv[k + 2:]
    return None


def check_phi1(args: list[str], expect_error: bool = False) -> list[str]:
    """Problems with one phi1 invocation: it must parse; a config it names must
    exist and load with its --set overrides; stage names must exist."""
    from phi1.cli import build_parser

    problems: list[str] = []
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            ns = build_parser().parse_args(args)
    except SystemExit:
        return [f"`phi1 {shlex.join(args)}` does not parse: {err.getvalue().strip().splitlines()[-1:]}"]
    if expect_error:
        return problems
    config = getattr(ns, "config", None)
    overrides = getattr(ns, "overrides", [])
    if config and "$" in config + " ".join(overrides):
        return problems  # a shell variable stands for the config (a script's "$@"): parsed only
    if config:
        problems += check_config(config, overrides, only=getattr(ns, "only", None), start=getattr(ns, "start", None))
    elif overrides:
        problems.append(f"`phi1 {shlex.join(args)}`: --set without a config")
    return problems


def check_config(config: str, overrides: list[str], only=None, start=None) -> list[str]:
    from phi1.config import load_config
    from phi1.dataflow import Graph
    from phi1.errors import Phi1Error
    from phi1.registry import all_stages, get_stage

    if not (REPO / config).is_file():
        return [f"config {config} does not exist in the repository"]
    try:
        cfg = load_config(REPO / config, overrides)
        Graph(cfg, all_stages())
        for name in [*(only or []), *([start] if start else [])]:
            get_stage(name, all_stages())
    except (Phi1Error, ValueError) as e:  # ConfigError is a ValueError
        return [f"{config} {' '.join('--set ' + o for o in overrides)}: {e}"]
    return []


def check_python(argv: list[str]) -> list[str]:
    """`python SCRIPT --opt ...`: the script exists and defines every option
    used; `python -m MODULE`: the module can be found."""
    rest = argv[1:]
    if not rest or rest[0] in ("-c", "-", "<<", "-V", "--version"):
        return []
    if rest[0] == "-m":
        if len(rest) < 2:
            return ["`python -m` without a module"]
        mod = rest[1]
        if importlib.util.find_spec(mod.split(".")[0]) is None:
            return [f"python -m {mod}: no module {mod.split('.')[0]!r}"]
        return []
    script = REPO / rest[0]
    if not script.is_file():
        return [f"python {rest[0]}: no such file in the repository"]
    source = script.read_text(encoding="utf-8")
    problems = []
    for tok in rest[1:]:
        if tok.startswith("--"):
            opt = tok.split("=", 1)[0]
            if f'"{opt}"' not in source and f"'{opt}'" not in source:
                problems.append(f"python {rest[0]}: the script defines no option {opt}")
    return problems


def makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return {m.group(1) for m in re.finditer(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M)}


def check_paths(argv: list[str]) -> list[str]:
    """Every token that names a repository file (configs/..., bench/..., ...) exists."""
    problems = []
    for tok in argv:
        for part in [tok, tok.split("=", 1)[-1]]:
            p = part.removeprefix("./")
            if p.startswith(REPO_DIRS) and not any(c in p for c in "*?[$<{"):
                if not (REPO / p).exists():
                    problems.append(f"{part}: no such file or folder in the repository")
                break
    return problems


def check_command(cmd: Command, block: Block) -> list[str]:
    """Everything that can be checked about one command without running it."""
    argv = cmd.argv
    where = f"{block.where}+{cmd.line - 1}"
    problems = check_paths(argv)
    args = phi1_args(argv)
    expect_error = bool(cmd.output and cmd.output[0].startswith("error:"))
    if args is not None:
        problems += check_phi1(args, expect_error)
    elif Path(argv[0]).name in {Path(p).name for p in PYTHONS}:
        problems += check_python(argv)
    elif argv[0] == "make":
        targets = makefile_targets()
        problems += [f"make {t}: no such target in the Makefile" for t in argv[1:]
                     if "=" not in t and not t.startswith("-") and t not in targets]
    elif argv[0].removeprefix("./").startswith("scripts/") and not (REPO / argv[0]).exists():
        problems.append(f"{argv[0]}: no such script")
    return [f"{where}: {p}" for p in problems]


def check_toml(block: Block) -> list[str]:
    """A TOML block is valid TOML; when it names phi1 sections, a config made of
    it loads (keys exist, values have the right type and range)."""
    try:
        data = tomllib.loads(block.text)
    except tomllib.TOMLDecodeError as e:
        return [f"{block.where}: not valid TOML: {e}"]
    from phi1.config import ConfigError, load_config
    from phi1.reference import builtin_sections

    if not data or not set(data) <= set(builtin_sections()):
        return []  # a fragment (keys of a section named in the prose)
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as fh:
        fh.write(block.text)
    try:
        load_config(fh.name)
    except ConfigError as e:
        return [f"{block.where}: {str(e).replace(fh.name, 'this block')}"]
    finally:
        os.unlink(fh.name)
    return []


def check_python_block(block: Block) -> list[str]:
    """A Python block compiles, and every name it imports from phi1 exists."""
    try:
        tree = compile(block.text, block.where, "exec", flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except SyntaxError as e:
        return [f"{block.where}: does not compile: {e}"]
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "phi1":
            try:
                mod = importlib.import_module(node.module)
            except ImportError as e:
                problems.append(f"{block.where}: cannot import {node.module}: {e}")
                continue
            problems += [f"{block.where}: {node.module} has no {a.name!r}" for a in node.names
                         if not hasattr(mod, a.name)]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "phi1" and importlib.util.find_spec(a.name) is None:
                    problems.append(f"{block.where}: no module {a.name}")
    return problems


def check_json(block: Block) -> list[str]:
    try:
        json.loads(block.text)
    except json.JSONDecodeError as e:
        # JSON Lines: every non-empty line is a JSON value
        try:
            for line in block.text.splitlines():
                if line.strip():
                    json.loads(line)
        except json.JSONDecodeError:
            return [f"{block.where}: not valid JSON (or JSON Lines): {e}"]
    return []


# --------------------------------------------------------------------------- running


SHRINK = re.compile(r"^<!--\s*runnable-shrink:\s*(.*?)\s*-->$")


def shrink_args(block: Block) -> list[str]:
    """Extra phi1 arguments the test adds to every config-taking phi1 command
    of the block (written in an HTML comment right above it)."""
    m = SHRINK.match(block.before)
    return shlex.split(m.group(1)) if m else []


WRAPPER = """#!{python}
# phi1, with the arguments of the block's runnable-shrink comment appended to
# commands that take a config (the docs show the command a user types).
import json, os, sys
extra = json.loads(os.environ.get("PHI1_DOCS_SHRINK", "[]"))
args = sys.argv[1:]
takes_config = args and args[0] not in ("config", "export", "contamination", "report", "synth-plan") and \\
    not (args[0] == "execute" and "--config" not in args and "-c" not in args)
os.execv({phi1!r}, [{phi1!r}, *args, *(extra if takes_config else [])])
"""


def workspace(tmp: Path) -> dict[str, str]:
    """A scratch folder that looks like the repository (its folders linked in)
    with phi1 (the shrinking wrapper) and this environment's bin folder first
    on PATH (so `python` is this venv's); returns the env."""
    for name in ("configs", "tests", "bench", "scripts", "src", "docs", "Makefile", "pyproject.toml"):
        if not (tmp / name).exists():
            (tmp / name).symlink_to(REPO / name)
    bin_dir = tmp / ".bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "phi1"
    wrapper.write_text(WRAPPER.format(python=sys.executable, phi1=PHI1))
    wrapper.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1", COLUMNS="200")
    env.pop("PHI1_DOCS_SHRINK", None)
    return env


def matches(expected: list[str], actual: list[str]) -> bool:
    """Doctest-like: a line `...` stands for any number of lines; `...` inside a
    line for any text; trailing blanks ignored."""
    pats = [None if e.strip() == "..." else
            re.compile(".*".join(re.escape(part) for part in e.rstrip().split("...")) + r"\s*$") for e in expected]
    lines = [a.rstrip() for a in actual]
    memo: dict[tuple[int, int], bool] = {}

    def go(i: int, j: int) -> bool:
        if (i, j) in memo:
            return memo[(i, j)]
        if i == len(pats):
            ok = j == len(lines)
        elif pats[i] is None:
            ok = go(i + 1, j) or (j < len(lines) and go(i, j + 1))
        else:
            ok = j < len(lines) and bool(pats[i].match(lines[j])) and go(i + 1, j + 1)
        memo[(i, j)] = ok
        return ok

    return go(0, 0)


def run_block(block: Block, cwd: Path, env: dict[str, str], timeout: float = 120) -> list[str]:
    """Run a runnable block in ``cwd``; the problems found (empty = it did what the docs say)."""
    env = dict(env, PHI1_DOCS_SHRINK=json.dumps(shrink_args(block)))
    if block.lang in ("console", "shell-session"):
        problems = []
        for line, cmd, expected in transcript(block):
            r = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=timeout)
            actual = r.stdout.rstrip("\n").split("\n") if r.stdout.strip() else []
            says_error = bool(expected) and expected[0].startswith("error:")
            if says_error != (r.returncode != 0):
                problems.append(f"{block.where}+{line - 1}: `{cmd}` exited {r.returncode}, the docs show "
                                f"{'an error' if says_error else 'success'}:\n{r.stdout[-2000:]}")
            elif not matches(expected, actual):
                problems.append(f"{block.where}+{line - 1}: `{cmd}` printed\n{r.stdout[-3000:]}\n"
                                f"-- the docs show --\n" + "\n".join(expected))
        return problems
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", block.text], cwd=cwd, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if r.returncode != 0:
        return [f"{block.where}: exited {r.returncode}:\n{r.stdout[-3000:]}"]
    return []
