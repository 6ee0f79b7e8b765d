"""Mining CodeExercises records from a small synthetic module, and the `mine` stage."""

from __future__ import annotations

import ast
import textwrap

import pytest

from helpers.stages import mark_done
from phi1.cli import main as cli_main
from phi1.config import load_config
from phi1.documents import Doc, write_jsonl
from phi1.errors import InputError
from phi1.pipeline import read_manifest
from phi1.synth.mine import MineOptions, dedup_key, mine_documents, mine_source
from phi1.synth.records import ExerciseRecord, read_exercises, write_exercises

MODULE = textwrap.dedent('''\
    """A module with every kind of function the miner must tell apart."""
    from __future__ import annotations

    import json
    import os.path
    import collections as col
    from functools import lru_cache, reduce as fold
    from typing import List, Optional
    from .sibling import helper

    LIMIT = 10


    def join_all(parts: List[str], sep: Optional[str] = None) -> str:
        """Join path parts, or with sep when given.

        >>> join_all(["a", "b"], "-")
        'a-b'
        """
        if sep is None:
            return os.path.join(*parts)
        return sep.join(parts)


    @lru_cache(maxsize=None)
    def fib(n):
        """Return the n-th Fibonacci number (fib(0) == 0)."""
        # recursion through the cached name
        if n < 2:
            return n
        return fib(n - 1) + fib(n - 2)


    def count_words(text):
        """Count how often each word occurs in text."""
        counts = col.Counter(text.split())
        return dict(counts)


    def product(xs):
    \t"""Multiply the numbers in xs together (tabs)."""
    \tacc = fold(lambda a, b: a * b, xs, 1)
    \treturn acc


    async def twice(x):
        """Return x doubled, asynchronously."""
        y = x + x
        return y


    def no_docstring(a, b):
        c = a + b
        return c


    def todo(x):
        """Not written yet, so it must be skipped."""
        raise NotImplementedError("later")


    def constant():
        """Always the same answer, nothing to learn."""
        return 42


    def stub():
        """A stub whose body is just an ellipsis."""
        ...


    def one_liner(x):
        """Too short a body to be an exercise."""
        return x + 1


    def uses_module_constant(x):
        """Reads LIMIT, which a standalone program lacks."""
        y = min(x, LIMIT)
        return y


    def uses_relative(x):
        """Calls a helper from a relative import."""
        y = helper(x)
        return y


    class Greeter:
        def greet(self, name):
            """Methods are not top-level functions."""
            text = "hi " + name
            return text


    def outer(x):
        """Nested functions stay inside their parent's exercise."""
        def inner(y):
            """Inner docstring."""
            z = y * 2
            return z
        return inner(x)
    ''')

# Same program as count_words with different formatting and comments: a duplicate.
DUPLICATE = textwrap.dedent('''\
    from __future__ import annotations
    import collections as col

    def count_words(text):
        """Count how often each word occurs in text."""
        counts = col.Counter( text.split() )   # same code, other spacing

        return dict(counts)
    ''')

EXPECTED = ["join_all", "fib", "count_words", "product", "twice", "outer"]


def _mine(text=MODULE, **kw):
    return mine_source(text, "doc-1", "pkg/mod.py", MineOptions(**kw))


def test_expected_functions_with_their_imports():
    records, stats = _mine()
    assert [r.metadata["function"] for r in records] == EXPECTED
    by = {r.metadata["function"]: r for r in records}
    join_all = by["join_all"]
    assert join_all.prompt.startswith("from __future__ import annotations\nimport os.path\nfrom typing import "
                                      "List, Optional\n\n\ndef join_all(")
    assert "json" not in join_all.prompt and "functools" not in join_all.prompt
    assert join_all.prompt.endswith("    'a-b'\n    \"\"\"\n")  # docstring exactly as in the source
    assert join_all.solution == "    if sep is None:\n        return os.path.join(*parts)\n    return sep.join(parts)\n"
    assert "from functools import lru_cache\n" in by["fib"].prompt and "@lru_cache(maxsize=None)\ndef fib" in by["fib"].prompt
    assert by["fib"].solution.startswith("    # recursion through the cached name\n")
    assert "import collections as col\n" in by["count_words"].prompt
    assert "from functools import reduce as fold\n" in by["product"].prompt
    assert by["product"].solution.startswith("\tacc = ")  # original indentation kept
    assert join_all.source == "pkg/mod.py" and join_all.metadata["doc_id"] == "doc-1"
    assert stats["functions"] == 13  # Greeter.greet and inner are not top level
    assert stats["dropped_no_docstring"] == 1
    assert stats["dropped_trivial"] == 3  # raise NotImplementedError, return 42, ...
    assert stats["dropped_short_body"] == 1
    assert stats["dropped_module_context"] == 1
    assert stats["dropped_relative_import"] == 1


def test_prompt_plus_solution_is_the_working_function():
    import asyncio

    records, _ = _mine()
    funcs = {}
    for r in records:
        assert ast.parse(r.text)
        ns: dict = {}
        exec(compile(r.text, r.id, "exec"), ns)
        funcs[r.metadata["function"]] = ns[r.metadata["function"]]
    assert funcs["join_all"](["a", "b"], "-") == "a-b"
    assert funcs["join_all"](["a", "b"]) == "a/b"
    assert funcs["fib"](20) == 6765
    assert funcs["count_words"]("a b a") == {"a": 2, "b": 1}
    assert funcs["product"]([2, 3, 4]) == 24
    assert asyncio.run(funcs["twice"](4)) == 8
    assert funcs["outer"](5) == 10


def test_options_change_what_is_kept():
    names = lambda recs: [r.metadata["function"] for r in recs]  # noqa: E731
    records, _ = _mine(min_body_lines=1)
    assert "one_liner" in names(records)
    records, _ = _mine(self_contained=False)
    assert "uses_module_constant" in names(records) and "uses_relative" not in names(records)
    records, stats = _mine(min_docstring_chars=42)
    assert names(records) == ["join_all", "fib", "product", "outer"] and stats["dropped_short_docstring"] >= 2
    records, stats = _mine(max_chars=200)
    assert "join_all" not in names(records) and stats["dropped_too_long"] >= 1


def test_crlf_and_broken_sources():
    crlf = MODULE.replace("\n", "\r\n")
    records, _ = _mine(crlf)
    assert [r.metadata["function"] for r in records] == EXPECTED
    ns: dict = {}
    exec(records[2].text, ns)
    assert ns["count_words"]("x x") == {"x": 2}
    records, stats = _mine("def broken(:\n    pass\n")
    assert records == [] and stats["unparseable_docs"] == 1


def test_corpus_dedup_split_and_workers():
    docs = [Doc(f"m{i}", MODULE, {"path": f"m{i}.py"}) for i in range(3)] + [Doc("dup", DUPLICATE, {"path": "d.py"})]
    one = mine_documents(docs, validation_fraction=0.5, seed=1, workers=1)
    assert one.stats["kept"] == len(EXPECTED)  # 3 copies + a reformatted duplicate collapse
    assert one.stats["dropped_duplicate"] == 2 * len(EXPECTED) + 1
    kept = one.train + one.val
    assert len({dedup_key(r) for r in kept}) == len(kept)
    assert {r.metadata["doc_id"] for r in one.val}.isdisjoint({r.metadata["doc_id"] for r in one.train})
    two = mine_documents(docs, validation_fraction=0.5, seed=1, workers=2)
    assert [r.to_json() for r in two.train] == [r.to_json() for r in one.train]
    assert [r.to_json() for r in two.val] == [r.to_json() for r in one.val]


def test_records_round_trip_and_errors(tmp_path):
    rec = ExerciseRecord("x:1", "def f():\n    \"\"\"Doc.\"\"\"\n", "    return 1\n", "src.py", {"k": [1, "é"]})
    assert ExerciseRecord.from_json(rec.to_json()) == rec
    assert write_exercises(tmp_path / "r.jsonl.gz", [rec, rec]) == 2
    assert list(read_exercises(tmp_path / "r.jsonl.gz")) == [rec, rec]
    write_jsonl(tmp_path / "bad.jsonl", [rec.to_json(), {"id": "y", "prompt": "p"}])
    with pytest.raises(InputError, match=r"bad.jsonl: record 2 .*missing solution, source"):
        list(read_exercises(tmp_path / "bad.jsonl"))


def _fake_filter(cfg, docs):
    folder = cfg.run_dir / "filter"
    write_jsonl(folder / "docs" / "000_00000.jsonl.gz", [{"id": d.id, "text": d.text, "metadata": d.metadata} for d in docs])
    mark_done(cfg, "filter")


def test_mine_stage_through_the_cli(tmp_path, capsys):
    toml = tmp_path / "t.toml"
    toml.write_text(f'[run]\nroot = "{tmp_path}"\nname = "t"\nvalidation_fraction = 0.3\n[mine]\nworkers = 1\n')
    cfg = load_config(toml)
    docs = [Doc(f"m{i}", MODULE.replace("join_all", f"join_all_{i}"), {"path": f"m{i}.py"}) for i in range(8)]
    _fake_filter(cfg, docs)
    assert cli_main(["mine", "--config", str(toml)]) == 0
    out = cfg.run_dir / "mine"
    train = list(read_exercises(out / "train.jsonl.gz"))
    val = list(read_exercises(out / "val.jsonl.gz"))
    assert train and val
    assert len(train) + len(val) == len(EXPECTED) + 7  # join_all_i differ per doc, the rest dedup
    counts = read_manifest(out)["counts"]
    assert counts["exercises"] == len(train) + len(val) and counts["docs"] == 8
    assert "exercises" in capsys.readouterr().out

    # a corpus with nothing to mine is one clear error
    _fake_filter(cfg, [Doc("x", "x = 1\n", {})])
    assert cli_main(["mine", "--config", str(toml), "--force"]) == 1
    assert "no exercises from 1 documents" in capsys.readouterr().err
