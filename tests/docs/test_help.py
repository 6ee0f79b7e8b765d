"""`phi1 --help` and every command's help name a docs page that exists; every
stage has a page, and the README links to each stage's page (one click)."""

from __future__ import annotations

import re

import pytest
from docs_markdown import REPO, links

from phi1.cli import build_parser
from phi1.reference import STAGE_DOCS, docs_page
from phi1.registry import all_stages

PARSER = build_parser()
COMMANDS = sorted(PARSER._subparsers._group_actions[0].choices)  # every subcommand, whoever added it


def test_main_help_points_to_the_docs(capsys):
    with pytest.raises(SystemExit):
        PARSER.parse_args(["--help"])
    out = capsys.readouterr().out
    assert "docs: docs/index.md" in out and (REPO / "docs" / "index.md").is_file()


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_names_an_existing_page(command, capsys):
    with pytest.raises(SystemExit):
        PARSER.parse_args([command, "--help"])
    out = capsys.readouterr().out
    m = re.search(r"docs: (\S+\.md)", out)
    assert m, f"phi1 {command} --help names no docs page"
    assert m.group(1) == docs_page(command)
    assert (REPO / m.group(1)).is_file(), f"phi1 {command} --help points to {m.group(1)}, which does not exist"


def test_every_stage_has_a_page():
    names = [s.name for s in all_stages() if s.entry.startswith("phi1.")]
    assert not [n for n in names if n not in STAGE_DOCS], "stages without a docs page in phi1.reference.STAGE_DOCS"
    missing = [p for p in STAGE_DOCS.values() if not (REPO / p).is_file()]
    assert not missing, missing


def test_the_readme_links_every_stage_page_directly():
    targets = {(REPO / lk.target.partition("#")[0]).resolve() for lk in links(REPO / "README.md")}
    missing = [p for p in STAGE_DOCS.values() if (REPO / p).resolve() not in targets]
    assert not missing, f"README.md does not link: {missing}"


def test_the_readme_pipeline_table_matches_the_registry():
    """One row per registered stage, naming the paper section the registry gives
    and linking the stage's page."""
    rows = {}
    for line in (REPO / "README.md").read_text().splitlines():
        m = re.match(r"^\| `([a-z_-]+)` \| ([^|]*) \|.*\| \[[^\]]*\]\(([^)]+)\) \|$", line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3))
    for spec in all_stages():
        if not spec.entry.startswith("phi1."):
            continue
        assert spec.name in rows, f"README.md's pipeline table has no row for stage {spec.name!r}"
        paper, link = rows[spec.name]
        section = spec.paper.split()[0] if spec.paper else ""
        assert paper.startswith(section), (spec.name, paper, spec.paper)
        assert link == docs_page(spec.name), (spec.name, link)
