"""Every relative link in README.md and docs/ resolves: the file exists inside
the repository, and an anchor names a heading of the target page (GitHub's
rules) or a line of a source file."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest
from docs_markdown import REPO, anchors, doc_files, is_external, links


def link_problems(page: Path, text: str | None = None) -> list[str]:
    problems = []
    cache: dict[Path, set[str]] = {}
    for link in links(page, text):
        target = link.target.strip()
        if not target or is_external(target):
            continue
        path_part, _, anchor = target.partition("#")
        dest = page if not path_part else (page.parent / unquote(path_part)).resolve()
        if not dest.is_relative_to(REPO):
            problems.append(f"{link.where}: {target} leaves the repository")
            continue
        if path_part and not dest.exists():
            problems.append(f"{link.where}: {target}: no such file")
            continue
        if not anchor:
            continue
        if dest.suffix == ".md":
            if dest not in cache:
                cache[dest] = anchors(dest, text if dest == page and text is not None else None)
            if unquote(anchor) not in cache[dest]:
                problems.append(f"{link.where}: {target}: no heading with anchor #{anchor} in "
                                f"{dest.relative_to(REPO)}")
        elif dest.is_file() and (m := re.fullmatch(r"L(\d+)(?:-L(\d+))?", anchor)):
            n = len(dest.read_text(encoding="utf-8", errors="replace").splitlines())
            if int(m.group(2) or m.group(1)) > n:
                problems.append(f"{link.where}: {target}: the file has {n} lines")
        else:
            problems.append(f"{link.where}: {target}: an anchor on a file that has no headings")
    return problems


@pytest.mark.parametrize("page", doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    problems = link_problems(page)
    assert not problems, "\n".join(problems)


def test_the_link_check_catches_what_it_should(tmp_path):
    page = REPO / "docs" / "_probe.md"  # never written: the text is passed in
    text = "\n".join([
        "# Probe page",
        "## Identity and `execution` options",
        "[ok](configuration.md) [ok](configuration.md#identity-and-execution-options)",
        "[ok](#probe-page) [ok](#identity-and-execution-options) [ok](../src/phi1/cli.py#L1)",
        "[ok](https://example.com/x.md) [ok](mailto:a@b.c)",
        "`[not a link](nowhere.md)`",
        "```",
        "[not a link either](nowhere.md)",
        "```",
        "[bad file](nowhere.md)",
        "[bad anchor](configuration.md#no-such-heading)",
        "[bad self anchor](#nope)",
        "[outside](../../etc/passwd)",
        "[bad line](../src/phi1/cli.py#L999999)",
        "[ref]: also-missing.md",
        '<a href="missing.html">x</a>',
    ])
    problems = link_problems(page, text)
    found = {p.split(": ", 1)[1].split(":")[0] for p in problems}
    assert found == {"nowhere.md", "configuration.md#no-such-heading", "#nope", "../../etc/passwd leaves the repository",
                     "../src/phi1/cli.py#L999999", "also-missing.md", "missing.html"}, problems


def test_every_docs_page_is_reachable_from_the_readme():
    """A newcomer reaches every page from README.md by following links."""
    seen, todo = set(), [REPO / "README.md"]
    while todo:
        page = todo.pop()
        if page in seen:
            continue
        seen.add(page)
        for link in links(page):
            if is_external(link.target):
                continue
            path = link.target.partition("#")[0]
            if path.endswith(".md"):
                dest = (page.parent / unquote(path)).resolve()
                if dest.exists():
                    todo.append(dest)
    orphans = [str(p.relative_to(REPO)) for p in doc_files() if p not in seen]
    assert not orphans, f"pages no link leads to from README.md: {orphans}"
