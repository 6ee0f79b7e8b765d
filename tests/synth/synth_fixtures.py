"""Scripted replies for `synth` against the OpenAI-compatible test server.

A `Script` maps each seed of a small plan to a reply *kind* (a valid
exercise, one whose asserts fail, a syntax error, a cut reply, ...). The
server's responder recognises a request by what its prompt asks for (the
exercise's function name, the textbook's concept and reader), so the test
knows exactly how many records each drop reason must count.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

from phi1.synth.plan import make_plans
from phi1.synth.seeds import SeedSpace

# Five different algorithms: valid exercises that are not near duplicates of each other.
BODIES = [
    ('Count the values of xs greater than limit, scanning once.', "xs: list, limit: int", "int", '''\
    count = 0
    for value in xs:
        if value > limit:
            count += 1
    return count
''', ["({n}([1, 5, 7], 4) == 2)", "({n}([], 4) == 0)", "({n}([9, 9, 1], 1) == 2)"]),
    ('Return the running maximum of xs as a new list of the same length.', "xs: list", "list", '''\
    best = None
    out = []
    for x in xs:
        best = x if best is None or x > best else best
        out.append(best)
    return out
''', ["({n}([1, 3, 2]) == [1, 3, 3])", "({n}([]) == [])", "({n}([5, 1]) == [5, 5])"]),
    ('Merge two sorted lists a and b into one sorted list, keeping duplicates.', "a: list, b: list", "list", '''\
    i = j = 0
    merged = []
    while i < len(a) and j < len(b):
        if a[i] <= b[j]:
            merged.append(a[i])
            i += 1
        else:
            merged.append(b[j])
            j += 1
    return merged + a[i:] + b[j:]
''', ["({n}([1, 4], [2, 3]) == [1, 2, 3, 4])", "({n}([], [1]) == [1])", "({n}([2], []) == [2])"]),
    ('Map every word of text (split on whitespace, lower-cased) to how often it occurs.', "text: str", "dict", '''\
    from collections import Counter
    words = text.lower().split()
    return dict(Counter(words))
''', ["({n}('a b A') == {{'a': 2, 'b': 1}})", "({n}('') == {{}})", "({n}('x') == {{'x': 1}})"]),
    ('Return the greatest common divisor of all numbers in xs (0 for an empty list).', "xs: list", "int", '''\
    import math
    g = 0
    for x in xs:
        g = math.gcd(g, x)
    return g
''', ["({n}([12, 18]) == 6)", "({n}([]) == 0)", "({n}([7]) == 7)"]),
]


def exercise(name: str, variant: int = 0, *, asserts: int = 3, docstring_pad: int = 0,
             imports: str = "", body: str | None = None, near: bool = False) -> str:
    """A program: imports, ``def name`` with a docstring, the body, asserts."""
    doc, params, ret, default_body, tests = BODIES[variant % len(BODIES)]
    pad = "".join(f"\n    Note {i}: this line only makes the docstring longer." for i in range(docstring_pad))
    code = body if body is not None else default_body
    if near:  # one more statement: another program (another exact key), most shingles shared
        code = "    unused = None\n" + code
    head = f"{imports}\n\n" if imports else ""
    lines = [f"assert {t.format(n=name)}" for t in tests[:asserts]]
    return (f"{head}def {name}({params}) -> {ret}:\n    \"\"\"{doc}{pad}\n    \"\"\"\n{code}\n\n"
            + "\n".join(lines) + "\n")


def fenced(code: str) -> str:
    return f"Here is the exercise.\n\n```python\n{code}```\n\nThe asserts check it.\n"


PROSE = ("A list keeps its items in the order they were added, and a loop visits them in that order. "
         "Each example below builds on the previous one. ") * 6


def textbook(variant: int) -> str:
    return (f"{PROSE}\n\nExample {variant}:\n\n```python\ntotals = [n * {variant + 2} for n in range({variant + 3})]\n"
            f"print(sum(totals))\n```\n\nIn a session:\n\n```python\n>>> xs = [{variant}, 2]\n>>> max(xs)\n"
            f"{max(variant, 2)}\n```\n\n" + " ".join(f"word{variant}x{i}" for i in range(60)) + "\n")


class Script:
    """Which reply each seed gets. ``kinds``: {"exercises": [kind, ...], "textbooks": [...]}."""

    def __init__(self, cfg: Any, kinds: dict[str, list[str]]):
        synth = cfg.section("synth")
        self.plans = {p.kind: p for p in make_plans(synth, SeedSpace.load(synth.seed_space), cfg.run.seed)}
        self.kinds = kinds
        self.by_name: dict[str, int] = {}
        self.by_reader: dict[tuple[str, str], int] = {}
        if "exercises" in self.plans:
            names = [self.plans["exercises"].seed(i).name for i in range(self.plans["exercises"].count)]
            assert len(set(names)) == len(names), "the test needs distinct function names"
            self.by_name = {n: i for i, n in enumerate(names)}
            self.names = names
        if "textbooks" in self.plans:
            p = self.plans["textbooks"]
            pairs = [(p.seed(i).concept.leaf, p.seed(i).audience) for i in range(p.count)]
            assert len(set(pairs)) == len(pairs)
            self.by_reader = {pr: i for i, pr in enumerate(pairs)}
        self.max_tokens = synth.exercise_max_tokens

    def index(self, prompt: str) -> tuple[str, int]:
        m = re.search(r"^Function: `(\w+)`", prompt, re.M)
        if m:
            return "exercises", self.by_name[m.group(1)]
        leaf = re.search(r"^Concept: (.*) \(part of", prompt, re.M).group(1)
        reader = re.search(r"^Reader: (.*)$", prompt, re.M).group(1)
        return "textbooks", self.by_reader[(leaf, reader)]

    def kind_of(self, req: Any) -> tuple[str, int, str]:
        kind, i = self.index(req.last_user_message)
        return kind, i, self.kinds[kind][i]

    def respond(self, req: Any) -> str:
        kind, i, what = self.kind_of(req)
        return self.exercise_reply(i, what) if kind == "exercises" else self.textbook_reply(i, what)

    def exercise_reply(self, i: int, what: str) -> str:
        name = self.names[i]
        chars = 4 * self.max_tokens  # the server cuts a reply longer than this
        if what.startswith("valid"):  # "valid" or "valid:<variant>" (bodies differ by variant)
            return fenced(exercise(name, int(what.split(":")[1]) if ":" in what else i))
        if what == "assert_failed":
            return fenced(exercise(name, i).replace("== 0)", "== 3)").replace("== [])", "== [0])")
                          .replace("== [2])", "== [3])").replace("== {})", "== {'z': 1})"))
        if what == "syntax_error":
            return fenced(f"def {name}(xs:\n    return xs\n")
        if what == "no_code":
            return "I would rather explain this in words: count the values one by one."
        if what == "no_function":
            return fenced("values = [1, 2, 3]\nassert sum(values) == 6\n")
        if what == "imports":
            return fenced(exercise(name, 0, imports="import os"))
        if what == "few_asserts":
            return fenced(exercise(name, 0, asserts=2))
        if what == "runtime_error":
            return fenced(exercise(name, 0, body="    return int('not a number')\n"))
        if what == "timeout":
            return fenced(exercise(name, 0, body="    while True:\n        pass\n"))
        if what.startswith("duplicate_of:"):  # the very program of another seed (its function name too)
            return fenced(exercise(self.names[int(what.split(":")[1])], int(what.split(":")[1])))
        if what.startswith("near_of:"):
            j = int(what.split(":")[1])
            return fenced(exercise(self.names[j], j, near=True))
        if what == "cut_then_fits":  # longer than max_tokens, shorter than twice that
            pad = 0
            while len(fenced(exercise(name, 0, docstring_pad=pad))) <= chars * 1.2:
                pad += 1
            text = fenced(exercise(name, 0, docstring_pad=pad))
            assert chars < len(text) < 2 * chars
            return text
        if what == "cut_always":
            pad = 0
            while len(fenced(exercise(name, 0, docstring_pad=pad))) <= chars * 3:
                pad += 1
            return fenced(exercise(name, 0, docstring_pad=pad))
        if what.startswith("reference:"):  # a program given by the test (e.g. one of mine's)
            return fenced(REFERENCES[what.split(":", 1)[1]].replace("NAME", name))
        raise ValueError(what)

    def textbook_reply(self, i: int, what: str) -> str:
        if what == "valid_surrogate":  # a lone surrogate: valid JSON, not valid UTF-8
            return textbook(i) + "Done \ud800 here.\n"
        if what.startswith("valid"):
            return textbook(i)
        if what == "no_code":
            return PROSE * 2
        if what == "syntax_error":
            return textbook(i) + "\n```python\nfor x in range(3) print(x)\n```\n"
        if what == "too_short":
            return "```python\nprint(1)\n```\n"
        if what.startswith("duplicate_of:"):
            return textbook(int(what.split(":")[1]))
        if what.startswith("near_of:"):
            return textbook(int(what.split(":")[1])) + "That is all for this example.\n"
        raise ValueError(what)


# Programs a test puts into a reference (mine) dataset; NAME is the function name.
REFERENCES = {
    "clamp": textwrap.dedent('''\
        def NAME(values: list, low: int, high: int) -> list:
            """Clamp every value into [low, high] and return the new list in the same order."""
            out = []
            for v in values:
                if v < low:
                    out.append(low)
                elif v > high:
                    out.append(high)
                else:
                    out.append(v)
            return out


        assert NAME([1, 5, 9], 2, 8) == [2, 5, 8]
        assert NAME([], 0, 1) == []
        assert NAME([3], 3, 3) == [3]
        '''),
}
REFERENCES["clamp_near"] = REFERENCES["clamp"].replace("out.append(v)\n", "out.append(v + 0)\n")
