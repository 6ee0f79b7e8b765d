"""Score parsing, the heuristic rubric and the stratified sample of `annotate`."""

from __future__ import annotations

import random
import sysconfig
from pathlib import Path

import pytest

from phi1.documents import Doc
from phi1.quality.prompts import DIRECT, REASONING, parse_score, reask_messages, truncate_code
from phi1.quality.rubric import score_code
from phi1.quality.sampling import stratified_sample


@pytest.mark.parametrize("reply, score", [
    ("Educational score: 4", 4.0),
    ("The code is clear.\n\nEducational score: 3", 3.0),
    ("**Score:** 3/5", 3.0),
    ("Educational Score = **5** points", 5.0),
    ("educational value score: 2.5 out of 5", 2.5),
    ("Justification: uses loops (score 1 for valid code, +1 practical).\nEducational score: 2", 2.0),
    ("Educational score: 2\n...on reflection...\nEducational score: 4", 4.0),
    ("Total score: 4 (out of 5)", 4.0),
    ("I'd give it a 3/5.", 3.0),
    ("4", 4.0),
    ("## Final score\n`1`", 1.0),
    ("Score: 0", 0.0),
])
def test_parse_score_accepts_common_formats(reply, score):
    assert parse_score(reply) == score


@pytest.mark.parametrize("reply", [
    "", None, "This code is quite educational.", "Educational score: <total points>",
    "Educational score: 7", "Score: 8/10", "Educational score: -1", "The file has 200 lines.",
])
def test_parse_score_rejects_replies_without_a_0_to_5_score(reply):
    assert parse_score(reply) is None


# Replies a lax parser turns into a wrong label. Each is "no score" (then re-asked).
ADVERSARIAL = [
    "Final score -3",  # a sign is not ignored
    "Final score: −3",  # nor a unicode minus
    "Educational score: +3",
    "Educational score: 1e1",  # no exponents
    "Educational score: 2E0",
    "Educational score: 3,5",  # a decimal comma is ambiguous
    "3,5",
    "Educational score: 3.5.1",
    "Educational score: 03",  # leading zeros
    "Educational score: ３",  # other scripts' digits
    "Educational score: 4\u0663".encode().decode("unicode_escape"),
    "Educational score: NaN",
    "Educational score: inf",
    "x = 3/5",  # code, not a score
    "The ratio is `x = 3/5`",
    "Educational score: `x = 3`",
    "Educational score: 4\n```python\nscore = 3\n```",  # ends inside quoted code
    "Educational score: 4\n```python\nscore = 3",  # an unclosed fence
    "```\nEducational score: 4\n```",
    "Educational score: 3 or 4",
    "Educational score: 3-4",
    "Educational score: 3 to 4",
    "Educational score: 4 (but see below)",
    "Educational score: 4\nOn reflection the file is mostly data.",  # the score is not final
    "Educational score: 4/10",  # another scale is not rescaled
    "Educational score: 2/3",
    "Educational score: 5.5",
    "Educational score: 1*0",
    "Educational score: 1_0",
    "subscore: 3",
    "score-3",
    "The code has 5 functions and 3 classes",
    "It uses 3/5 of the standard library",
    "Score: 4 because it is clear",
]


@pytest.mark.parametrize("reply", ADVERSARIAL)
def test_parse_score_takes_only_a_well_delimited_final_score(reply):
    assert parse_score(reply) is None, reply


@pytest.mark.parametrize("number", ["0", "1", "2.5", "5", "4.0"])
def test_every_wrapper_of_a_good_number_is_judged_by_its_delimiters(number):
    good = [f"Educational score: {number}", f"**Educational score:** {number}", f"Score = {number} points",
            f"Educational score: {number}/5.", f"Score: `{number}`", f"- Educational score: {number}",
            f"Some words.\n\nEducational score: {number}\n\n"]
    bad = [f"Educational score: -{number}", f"Educational score: {number}e0", f"Educational score: {number},0",
           f"`score = {number}`", f"Educational score: {number} maybe", f"Educational score: {number}\nmore",
           f"```\nEducational score: {number}\n```", f"x = {number}/5", f"Educational score: {number}/50"]
    assert [parse_score(r) for r in good] == [float(number)] * len(good)
    assert [parse_score(r) for r in bad] == [None] * len(bad)


def test_prompts_and_reask():
    msgs = REASONING.messages("def f():\n    return 1\n")
    assert msgs[0]["role"] == "system" and "def f()" in msgs[1]["content"]
    assert "additive" in msgs[1]["content"] and "Educational score" in msgs[1]["content"]
    assert "student whose goal is to learn basic coding concepts" in DIRECT.messages("x = 1")[1]["content"]
    again = reask_messages(msgs, "no idea")
    assert again[:2] == msgs and again[2] == {"role": "assistant", "content": "no idea"}
    assert again[3]["role"] == "user" and "Educational score: N" in again[3]["content"]
    long = "x = 1\n" * 2000
    cut = truncate_code(long, 1000)
    assert len(cut) < 1100 and cut.endswith("(file truncated)") and truncate_code("a = 1", 1000) == "a = 1"


TEXTBOOK = '''"""Binary search, step by step."""


def binary_search(items, target):
    """Return the index of `target` in the sorted list `items`, or -1.

    >>> binary_search([1, 3, 5, 7], 5)
    2
    """
    low, high = 0, len(items) - 1
    while low <= high:
        middle = (low + high) // 2  # look in the middle of what is left
        if items[middle] == target:
            return middle
        if items[middle] < target:  # the target can only be on the right
            low = middle + 1
        else:
            high = middle - 1
    return -1


if __name__ == "__main__":
    print(binary_search([1, 3, 5, 7], 7))
'''

TABLE = "from ._tables import *\nTABLE = [" + ", ".join(str(i * 7919 % 1000) for i in range(400)) + "]\nq=TABLE[3];z=q*2\n"


def test_rubric_ranks_textbook_code_above_tables_and_prose():
    good, table, prose = score_code(TEXTBOOK), score_code(TABLE), score_code("Just some notes.\nNot code at all: {")
    assert good.score >= 4.0 and table.score < 2.0 and prose.score <= 1.0
    assert good.score == score_code(TEXTBOOK).score  # deterministic
    assert set(good.parts) == {"documentation", "structure", "imports", "data", "examples", "length", "names"}
    # a file cut mid-function (what the teacher is shown) still parses up to the cut
    assert score_code(TEXTBOOK[:420], size=len(TEXTBOOK)).parts.get("documentation", 0) > 0


def test_rubric_splits_the_standard_library_into_both_classes():
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py"))[::4]
    scores = [score_code(truncate_code(p.read_text(errors="replace"), 6000), p.stat().st_size).score for p in files]
    share = sum(s >= 3 for s in scores) / len(scores)
    assert len(scores) >= 30 and 0.2 <= share <= 0.8, (len(scores), share)
    assert len({round(s, 1) for s in scores}) >= 10  # continuous, not a handful of values


def _docs(n: int) -> list[Doc]:
    rng = random.Random(3)
    return [Doc(f"d{i:03d}", "x" * (size := rng.randrange(10, 5000)), {"size": size, "path": f"f{i}.py"})
            for i in range(n)]


def test_stratified_sample_is_seeded_order_free_and_balanced():
    docs = _docs(200)
    a = stratified_sample(docs, 40, 4, seed=1, max_chars=100)
    shuffled = docs[:]
    random.Random(9).shuffle(shuffled)
    b = stratified_sample(shuffled, 40, 4, seed=1, max_chars=100)
    assert [d.id for d in a.docs] == [d.id for d in b.docs] and a.corpus_documents == 200
    assert [d.id for d in a.docs] != [d.id for d in stratified_sample(docs, 40, 4, seed=2, max_chars=100).docs]
    assert sorted(sum(d.stratum == s for d in a.docs) for s in range(4)) == [10, 10, 10, 10]
    assert all(len(d.text) <= 100 for d in a.docs) and a.size_edges == sorted(a.size_edges)
    sizes = {d.id: d.metadata["size"] for d in docs}
    for d in a.docs:  # each stratum's documents fall inside its size bounds
        lo = a.size_edges[d.stratum - 1] if d.stratum else 0
        assert lo <= sizes[d.id] <= a.size_edges[d.stratum]
    small = stratified_sample(docs[:7], 40, 4, seed=1, max_chars=100)
    assert len(small.docs) == 7  # fewer documents than asked: all of them
