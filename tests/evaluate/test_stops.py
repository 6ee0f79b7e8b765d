"""Stop sequences: the cut applied to every completion, and the per-row
stopping rule used inside transformers' generate."""

from __future__ import annotations

import pytest
from phi1.evaluate.config import DEFAULT_STOPS
from phi1.evaluate.generate import fed_prompt, to_completion
from phi1.evaluate.stops import contains_stop, truncate_at_stops


@pytest.mark.parametrize(
    "text, expected",
    [
        ("    return a + b\n", "    return a + b\n"),  # no stop: unchanged
        ("    return a + b\n\ndef main():\n    pass\n", "    return a + b\n"),
        ("    return x\n\n\nif __name__ == '__main__':\n    main()", "    return x\n\n"),
        ("    return x\nprint(f(1))\n", "    return x"),
        ("    return x\n# test\nclass A: pass", "    return x"),  # earliest of two stops
        ("    return x\n@decorator\n", "    return x"),
        ("    return x\n```\nThat is the code.", "    return x"),
        ("    return x<file_sep>other file", "    return x"),
        ("\ndef", ""),  # a stop at the very start leaves nothing
        ("    if x:\n        return 1\n    # comment inside\n", "    if x:\n        return 1\n    # comment inside\n"),
        ("", ""),
    ],
)
def test_truncate_at_bigcode_stops(text, expected):
    assert truncate_at_stops(text, DEFAULT_STOPS) == expected


def test_indented_keywords_are_not_stops():
    body = "    def helper(y):\n        return y\n    if a:\n        print(a)\n    return helper(a)\n"
    assert truncate_at_stops(body, DEFAULT_STOPS) == body
    assert not contains_stop(body, DEFAULT_STOPS)


def test_custom_and_empty_stops():
    assert truncate_at_stops("abcSTOPdefEND", ["END", "STOP"]) == "abc"
    assert truncate_at_stops("abc", []) == "abc"
    assert truncate_at_stops("abc", [""]) == "abc"  # an empty stop never matches
    assert contains_stop("a\nclass B", ["\nclass"]) and not contains_stop("a class B", ["\nclass"])


def test_completion_continues_the_original_prompt():
    prompt = 'def f(x):\n    """Double x."""\n'
    fed = fed_prompt(prompt, strip=True)
    assert fed == 'def f(x):\n    """Double x."""'
    # The model continues the stripped prompt with "\n    return ...": the
    # stripped newline is taken back off so prompt + completion is the program.
    generated = "\n    return 2 * x\n\ndef g():\n    pass"
    completion = to_completion(prompt, fed, generated, DEFAULT_STOPS)
    assert completion == "    return 2 * x\n"
    assert prompt + completion == 'def f(x):\n    """Double x."""\n    return 2 * x\n'
    # Without stripping the generation is taken as it is.
    assert to_completion(prompt, prompt, "    return 2 * x\n\ndef g", DEFAULT_STOPS) == "    return 2 * x\n"
    # A generation that does not start with the stripped whitespace is kept whole.
    assert to_completion(prompt, fed, "  # odd", []) == "  # odd"
