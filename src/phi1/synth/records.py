"""The CodeExercises record: a function to complete, and its solution.

One JSON object per line (``*.jsonl.gz``)::

    {"id": "...", "prompt": "import math\\n\\ndef area(r):\\n    \\"\\"\\"...\\"\\"\\"\\n",
     "solution": "    return math.pi * r * r\\n", "source": "...", "metadata": {...}}

``prompt`` is imports + signature + docstring, ``solution`` is the body, and
``prompt + solution`` is the whole program, exactly like a HumanEval problem
and its canonical solution. Mined exercises (``mine``) and synthetic ones
(``synth``, later) share this format; ``source`` says where one came from
(a corpus path, a teacher model), ``metadata`` holds anything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from phi1.documents import read_jsonl, write_jsonl
from phi1.errors import InputError

REQUIRED = ("id", "prompt", "solution", "source")


@dataclass
class ExerciseRecord:
    id: str
    prompt: str
    solution: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The whole program (what a model is trained on)."""
        return self.prompt + self.solution

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "prompt": self.prompt, "solution": self.solution, "source": self.source,
                "metadata": self.metadata}

    @classmethod
    def from_json(cls, data: Any) -> "ExerciseRecord":
        if not isinstance(data, dict):
            raise ValueError(f"expected an object, got {type(data).__name__}")
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        for k in REQUIRED:
            if not isinstance(data[k], str):
                raise ValueError(f"{k!r} must be a string, got {type(data[k]).__name__}")
        meta = data.get("metadata") or {}
        if not isinstance(meta, dict):
            raise ValueError(f"'metadata' must be an object, got {type(meta).__name__}")
        return cls(data["id"], data["prompt"], data["solution"], data["source"], dict(meta))


def write_exercises(path: str | Path, records: Iterable[ExerciseRecord]) -> int:
    """Write records atomically (gzip when the name ends in .gz); returns how many."""
    return write_jsonl(path, (r.to_json() for r in records))


def read_exercises(path: str | Path) -> Iterator[ExerciseRecord]:
    """Read records; a malformed one is an error naming the file and record number."""
    for n, data in enumerate(read_jsonl(path), 1):
        try:
            yield ExerciseRecord.from_json(data)
        except ValueError as e:
            raise InputError(f"{path}: record {n} is not an exercise record: {e}") from None
