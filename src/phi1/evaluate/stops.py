"""Stop sequences: where a code completion ends.

A completion model does not know that HumanEval wants one function body; it
keeps writing the next function, a test, a ``print``. Like
bigcode-evaluation-harness, generation stops once the generated text (never
the prompt) contains a stop sequence, and the completion is cut at the first
one. `StopOnSequences` is the per-sequence stopping rule for transformers'
``generate``; `truncate_at_stops` is the cut, applied to every backend's output
(an endpoint may ignore ``stop`` or honour only some of it).
"""

from __future__ import annotations

from typing import Any, Sequence

# Cheap to import: torch / transformers are imported inside `StopOnSequences`
# users only (the endpoint backend and the tests of the cut need neither).


def truncate_at_stops(text: str, stops: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest occurrence of any stop."""
    cut = len(text)
    for stop in stops:
        if not stop:
            continue
        i = text.find(stop)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


def contains_stop(text: str, stops: Sequence[str]) -> bool:
    return any(s and s in text for s in stops)


def make_stopping_criteria(tokenizer: Any, prompt_len: int, stops: Sequence[str]) -> Any:
    """A transformers ``StoppingCriteria`` for a left-padded batch whose prompts
    all end at column ``prompt_len``."""
    from transformers import StoppingCriteria
    import torch

    # A stop found now must end in the newest token (or it was found a step
    # earlier), and every token decodes to at least one byte, so it lies in
    # the last len(stop in bytes) tokens. Two more tokens absorb decoding
    # effects at the window's edge (a split UTF-8 character, a tokenizer that
    # drops the leading space of the first token). This keeps the check
    # O(window) per step instead of O(generated length).
    window = max((len(s.encode("utf-8")) for s in stops if s), default=0) + 2

    class StopOnSequences(StoppingCriteria):
        """Marks each sequence done once its generated text contains a stop.

        Returns one flag per row (transformers >= 4.39 finishes rows
        independently and pads the finished ones), so a batch does not wait
        for its longest member to hit a stop. Only the prompt's end onwards is
        looked at: a stop inside the prompt does not count.
        """

        def __init__(self) -> None:
            self.done: torch.Tensor | None = None

        def __call__(self, input_ids: torch.LongTensor, scores: Any = None, **kwargs: Any) -> torch.BoolTensor:
            if self.done is None or self.done.shape[0] != input_ids.shape[0]:
                self.done = torch.zeros(input_ids.shape[0], dtype=torch.bool)
            start = max(prompt_len, input_ids.shape[1] - window)
            rows = [i for i in range(input_ids.shape[0]) if not self.done[i]]
            if rows and input_ids.shape[1] > start:
                tails = tokenizer.batch_decode(input_ids[rows, start:], skip_special_tokens=True)
                for i, text in zip(rows, tails):
                    if contains_stop(text, stops):
                        self.done[i] = True
            return self.done.to(input_ids.device).clone()

    return StopOnSequences()
