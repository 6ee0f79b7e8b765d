"""The docs tests' own reading of Markdown and shell: hostile cases, so a
parsing slip cannot make the docs tests pass vacuously."""

from __future__ import annotations

from pathlib import Path

from docs_checks import check_command, check_toml, matches
from docs_markdown import REPO, Block, anchors, blocks, commands, heredoc_free, links, slug, split_commands

P = REPO / "docs" / "_probe.md"


def test_fences_backticks_tildes_and_longer_closers():
    text = "\n".join([
        "````markdown", "```bash", "inner", "```", "````",
        "~~~console runnable", "$ phi1 --help", "~~~",
        "``` not a fence because `backticks` in its info string",
        "  ```toml", "  [run]", "  seed = 1", "  ```",
        "```bash", "unclosed",
    ])
    bs = blocks(P, text)
    assert [(b.lang, b.words) for b in bs] == [("markdown", []), ("console", ["runnable"]), ("toml", []),
                                               ("bash", [])]
    assert bs[0].text == "```bash\ninner\n```"
    assert bs[2].text == "[run]\nseed = 1" and bs[1].runnable


def test_links_outside_code_only_with_line_numbers():
    text = "a [x](a.md)\n`[y](b.md)`\n```\n[z](c.md)\n```\n[w](d.md \"title\") ![img](e.png)\n[r]: f.md"
    found = [(lk.line, lk.target) for lk in links(P, text)]
    assert sorted(found) == [(1, "a.md"), (6, "d.md"), (6, "e.png"), (7, "f.md")]


def test_github_slugs():
    assert slug("The run directory: manifests, staleness, resume, crashes") == \
        "the-run-directory-manifests-staleness-resume-crashes"
    assert slug("`[ingest.executor]`") == "ingestexecutor"
    assert slug("Stage `ingest`: sources → clean") == "stage-ingest-sources--clean"
    assert slug("Identity and *execution* options") == "identity-and-execution-options"
    assert slug("max_steps & [link](x.md)") == "max_steps--link"
    assert slug("Config keys (`[<stage>.llm]`)") == "config-keys-stagellm"
    assert slug("A <em>b</em> c") == "a-b-c"
    a = anchors(P, "# A\n## A\nSetext\n======\n```\n# not a heading\n```\n<a id=\"custom\"></a>")
    assert a == {"a", "a-1", "setext", "custom"}


def test_shell_splitting():
    assert split_commands("HF_HUB_OFFLINE=1 phi1 run c.toml --set 'a=b c' && ls x | head -3 # note") == [
        ["phi1", "run", "c.toml", "--set", "a=b c"], ["ls", "x"], ["head", "-3"]]
    assert split_commands("kill %1   # prints ...") == [["kill", "%1"]]
    assert split_commands("phi1 x 2>&1 > out.txt < in && cat <<'EOF'") == [["phi1", "x"], ["cat"]]
    b = Block(P, 1, "bash", "phi1 run configs/demo.toml \\\n  --only ingest\npython - <<'EOF'\nimport os; x = 1\nEOF\nls")
    assert [c.argv for c in commands(b)] == [["phi1", "run", "configs/demo.toml", "--only", "ingest"],
                                             ["python", "-"], ["ls"]]
    b = Block(P, 1, "bash", 'python -c "\nimport os\nprint(1)"\nls')
    assert [c.argv for c in commands(b)] == [["python", "-c", "\nimport os\nprint(1)"], ["ls"]]
    assert heredoc_free("cat <<EOF\nrm -rf /\nEOF\necho") == "cat <<EOF\n\n\necho"


def test_transcripts_attach_output_to_their_command():
    b = Block(P, 1, "console runnable", "$ phi1 stages configs/demo.toml\nrun demo\n...\n\n$ ls\nx\n")
    cs = commands(b)
    assert [c.argv[0] for c in cs] == ["phi1", "ls"] and cs[0].output == ["run demo", "..."] and cs[1].output == ["x"]


def test_output_matching():
    assert matches(["a", "...", "z"], ["a", "b", "c", "z"])
    assert matches(["a", "...", "z"], ["a", "z"])
    assert matches(["done in ...s -> runs/x"], ["done in 4.2s -> runs/x"])
    assert not matches(["a", "z"], ["a", "b", "z"])
    assert not matches(["error: x"], ["error: y"])
    assert not matches(["a (1.0)"], ["a (100)"])  # regex characters are literal
    assert matches([], [])


def _problems(text: str, info: str = "bash") -> list[str]:
    b = Block(P, 1, info, text)
    found = [p for c in commands(b) for p in check_command(c, b)]
    return ["\n".join(found)] if found else []


def test_command_checks_catch_drift():
    assert _problems("phi1 run configs/demo.toml --set pretrain.max_steps=10 --only pretrain") == []
    assert _problems("torchrun --nproc_per_node 8 -m phi1.cli pretrain --config configs/phi-1.toml") == []
    assert "config configs/nope.toml does not exist" in _problems("phi1 run configs/nope.toml")[0]
    assert "unknown key 'bogus'" in _problems("phi1 run configs/demo.toml --set ingest.bogus=1")[0]
    assert "unknown dataset" in _problems("phi1 stages configs/demo.toml --set tokenize.inputs.nope=1")[0]
    assert "unknown stage" in _problems("phi1 run configs/demo.toml --only ingset")[0]
    assert _problems('srun torchrun --nnodes=2 -m phi1.cli run "$@" --only pretrain') == []
    assert "does not parse" in _problems("phi1 run configs/demo.toml --bogus-flag")[0]
    assert "no such target" in _problems("make demo && make nonesuch")[0]
    assert "no such file" in _problems("python bench/nonesuch.py")[0]
    assert "no option --nonesuch" in _problems("python bench/execute_throughput.py --nonesuch 3")[0]
    assert "no such file or folder" in _problems("ls configs/missing.toml")[0]
    # a transcript that shows the error is checked by running it, not by loading the config
    assert _problems("$ phi1 run configs/demo.toml --set ingest.bogus=1\nerror: ...", "console") == []


def test_toml_checks_catch_drift():
    assert check_toml(Block(P, 1, "toml", "[pretrain]\nmax_steps = 10")) == []
    assert "unknown key" in check_toml(Block(P, 1, "toml", "[pretrain]\nmax_stepz = 10"))[0]
    assert "not valid TOML" in check_toml(Block(P, 1, "toml", "[pretrain\n"))[0]
    assert check_toml(Block(P, 1, "toml", "max_steps = 10")) == []  # a fragment: keys of a section in the prose


def test_docs_tests_have_no_dependence_on_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _problems("phi1 stages configs/demo.toml") == []
    assert Path.cwd() == tmp_path
