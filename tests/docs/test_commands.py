"""The commands and code shown in README.md and docs/ are true.

Every shell block is parsed (phi1 commands parse, their configs exist and
load with their --set overrides, scripts and their options exist, make
targets exist, repository paths exist); TOML, Python and JSON blocks are
checked; blocks marked ``runnable`` are executed, in page order, in a scratch
copy of the repository layout, and must print what the docs show.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from docs_checks import (check_command, check_json, check_python_block, check_toml, run_block, shrink_args,
                         workspace)
from docs_markdown import REPO, SHELL_LANGS, blocks, commands, doc_files

ALL = [b for page in doc_files() for b in blocks(page)]
SHELL = [b for b in ALL if b.lang in SHELL_LANGS]
RUNNABLE = [b for b in SHELL if b.runnable]


def _id(block) -> str:
    return block.where


def test_the_docs_have_blocks_of_every_checked_kind():
    """Guards the collection itself: if parsing broke, every test below would pass vacuously."""
    langs = {b.lang for b in ALL}
    assert {"bash", "console", "toml", "python"} <= langs, langs
    assert len(RUNNABLE) >= 5, [b.where for b in RUNNABLE]
    assert sum(len(commands(b)) for b in SHELL) >= 40


@pytest.mark.parametrize("block", SHELL, ids=_id)
def test_every_shell_command_parses(block):
    problems = [p for cmd in commands(block) for p in check_command(cmd, block)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("block", [b for b in ALL if b.lang == "toml"], ids=_id)
def test_every_toml_block_is_a_valid_config(block):
    assert not check_toml(block), check_toml(block)


@pytest.mark.parametrize("block", [b for b in ALL if b.lang in ("python", "py")], ids=_id)
def test_every_python_block_compiles_and_imports_real_names(block):
    assert not check_python_block(block), check_python_block(block)


@pytest.mark.parametrize("block", [b for b in ALL if b.lang in ("json", "jsonl")], ids=_id)
def test_every_json_block_is_json(block):
    assert not check_json(block), check_json(block)


def test_scale_test_blocks_are_run_by_the_scale_tests():
    """docs/scale-out.md's ``scale-test:NAME`` blocks run on a real (single-node)
    cluster in tests/scale; each name must be used there."""
    scale_src = "\n".join(p.read_text() for p in (REPO / "tests" / "scale").rglob("*.py"))
    names = [w.split(":", 1)[1] for b in SHELL for w in b.words if w.startswith("scale-test:")]
    missing = [n for n in names if not re.search(rf"['\"]{re.escape(n)}['\"]", scale_src)]
    assert not missing, f"scale-test blocks no test in tests/scale runs: {missing}"


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory):
    made: dict[Path, tuple[Path, dict[str, str]]] = {}

    def get(page: Path):
        if page not in made:
            tmp = tmp_path_factory.mktemp(page.stem)
            made[page] = (tmp, workspace(tmp))
        return made[page]

    return get


@pytest.mark.parametrize("block", RUNNABLE, ids=_id)
def test_runnable_block_does_what_the_docs_show(block, workspaces):
    """Blocks of one page share a scratch folder and run in page order."""
    cwd, env = workspaces(block.path)
    problems = run_block(block, cwd, env)
    assert not problems, "\n\n".join(problems)


def test_shrink_comments_only_add_overrides():
    """A runnable-shrink comment may only make a run smaller (--set), never change the command."""
    for b in RUNNABLE:
        extra = shrink_args(b)
        assert all(a == "--set" or extra[i - 1] == "--set" for i, a in enumerate(extra)), (b.where, extra)
