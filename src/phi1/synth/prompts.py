"""Versioned prompt templates for synthetic textbooks and exercises.

Every record keeps the id of the template that asked for it (``prompt_id``);
changing a template's words means a new id, never an edit of an old one, so
records made by different prompts stay distinguishable and a config pinning
an id keeps asking exactly the same thing (and hits the same cache entries).

* ``textbook-v1``: one section of a Python textbook teaching one concept to
  one reader, in one style and at one level, with examples drawn from one
  setting; prose interleaved with runnable ```python examples.
* ``exercise-v1``: one function with a given name, a docstring that states
  the task with examples, its solution, and at least ``min_asserts`` assert
  lines calling it, all in one ```python block; imports limited to the
  allowed modules, no classes.

A reply cut at the token limit is asked again once more per
``synth.reask_cut`` with `shorter_messages`: the same request plus a note to
fit the limit (a new request, so it is cached on its own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from phi1.synth.seeds import ExerciseSeed, TextbookSeed

Messages = list[dict[str, Any]]


def _modules(allowed: Sequence[str]) -> str:
    if not allowed:
        return "Do not import anything."
    names = ", ".join(allowed)
    return f"If you import anything, import only from these standard modules: {names}."


def _parameters(arity: int) -> str:
    if arity == 0:
        return "no parameters"
    return "one parameter" if arity == 1 else f"{arity} parameters"


@dataclass(frozen=True)
class TextbookPromptV1:
    prompt_id: str = "textbook-v1"

    def messages(self, seed: TextbookSeed) -> Messages:
        c = seed.concept
        user = "\n".join([
            "Write one section of a Python textbook.",
            "",
            f"Concept: {c.leaf} (part of {c.area} > {c.topic})",
            f"Reader: {seed.audience}",
            f"Level: {seed.difficulty.name}: {seed.difficulty.text}",
            f"Style: {seed.style.text}",
            f"Examples come from: {seed.scenario.name}",
            "",
            "Teach the concept so the reader can use it: develop each idea in depth before moving on, "
            "rather than listing facts. Interleave the explanation with short Python examples. Put every "
            "example in its own ```python block; each must be complete and run on its own with only the "
            "standard library. When it helps, show what an example prints in a comment. Do not start with a "
            "title or with sentences about what the section will cover, and do not end with exercises: "
            "write the content directly.",
        ])
        return [
            {"role": "system", "content": "You are an experienced author of clear, practical Python textbooks."},
            {"role": "user", "content": user},
        ]


@dataclass(frozen=True)
class ExercisePromptV1:
    prompt_id: str = "exercise-v1"

    def messages(self, seed: ExerciseSeed, allowed_imports: Sequence[str], min_asserts: int) -> Messages:
        c = seed.concept
        name = seed.name
        user = "\n".join([
            "Write one Python exercise with its solution.",
            "",
            f"Topic: {c.leaf} (part of {c.area} > {c.topic})",
            f"Setting: {seed.scenario.name}",
            f"Difficulty: {seed.difficulty.name}: {seed.difficulty.text}",
            f"Function: `{name}`, taking {_parameters(seed.arity)} with type hints and returning {seed.returns}",
            "",
            "Requirements:",
            f"1. Define exactly one function, named `{name}`. Its docstring states the task precisely "
            "(inputs, output, edge cases) and shows one or two example calls with their results. The body "
            "after the docstring is a correct, readable solution that practises the topic.",
            f"2. After the function, write at least {min_asserts} `assert` statements that call `{name}` with "
            "different inputs, including an edge case, and compare each result with the expected value.",
            f"3. {_modules(allowed_imports)} No classes, no input(), no files, no network, no printing. The "
            "function must return the same result for the same arguments.",
            "4. Put the whole program (imports, the function, the asserts) in a single ```python code block.",
        ])
        return [
            {"role": "system", "content": "You are an expert Python teacher who writes short, precise "
             "programming exercises with tested reference solutions."},
            {"role": "user", "content": user},
        ]


TEXTBOOK_PROMPTS = {p.prompt_id: p for p in (TextbookPromptV1(),)}
EXERCISE_PROMPTS = {p.prompt_id: p for p in (ExercisePromptV1(),)}


def shorter_messages(messages: Messages, max_tokens: int) -> Messages:
    """The request again, asking for an answer that fits ``max_tokens``."""
    words = max(20, int(max_tokens * 0.6))
    note = (f"\n\nYour answer must fit in {max_tokens} tokens (about {words} words) and end properly: "
            "keep it shorter than you would otherwise.")
    out = [dict(m) for m in messages]
    for m in reversed(out):
        if m.get("role") == "user":
            m["content"] = str(m.get("content", "")) + note
            break
    return out
