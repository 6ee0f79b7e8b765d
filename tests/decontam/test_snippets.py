"""How documents are cut into the functions the AST and embedding signals compare."""

from __future__ import annotations

from phi1.decontam.snippets import MAX_SNIPPETS, document_snippets, exercise_record

MODULE = '''import os


def top(a):
    return a + 1


class K:
    def method(self, x):
        """Doc."""
        return x * 2

    @staticmethod
    def other(y):
        def inner():
            return y
        return inner
'''


def test_python_module_functions_and_methods_nested_stay_inside():
    snips = document_snippets(MODULE)
    assert [s.label for s in snips] == ["top:4", "method:9", "other:14"]
    assert snips[1].text.startswith("def method(self, x):")  # dedented: parses on its own
    assert snips[2].text.startswith("@staticmethod") and "def inner" in snips[2].text


def test_markdown_textbook_code_blocks():
    md = ("# Lists\n\nSome prose with def in it.\n\n```python\ndef f(xs):\n    return sorted(xs)\n```\n\n"
          "More prose.\n\n~~~\nx = [1, 2]\nprint(x)\n~~~\n")
    snips = document_snippets(md)
    assert [(s.label, s.text.splitlines()[0]) for s in snips] == [("block 1 f:1", "def f(xs):"),
                                                                ("block 2", "x = [1, 2]")]


def test_broken_python_is_cut_at_top_level_defs():
    py2 = "print 'hello'\n\ndef ok(a, b):\n    return a * b\nprint 'bye'\n\ndef bad(:\n    pass\n"
    snips = document_snippets(py2)
    assert [s.label for s in snips] == ["chunk@3 ok:1"]
    assert snips[0].text == "def ok(a, b):\n    return a * b\n"


def test_no_code_no_snippets_and_a_bound_on_huge_files():
    assert document_snippets("Just prose, no code at all.") == []
    assert document_snippets("") == []
    huge = "".join(f"def f{i}():\n    return {i}\n" for i in range(MAX_SNIPPETS + 50))
    assert len(document_snippets(huge)) == MAX_SNIPPETS


def test_exercise_is_one_program():
    r = exercise_record("e1", "def f(x):\n    \"\"\"Doc.\"\"\"\n", "    return x\n")
    assert [s.text for s in r.snippets] == [r.text] and r.text.endswith("return x\n")

