"""Config section for `mine` (CodeExercises-format records from the filtered corpus)."""

from __future__ import annotations

from dataclasses import dataclass

from phi1.sections import option


@dataclass
class MineConfig:
    min_body_lines: int = option(2, ge=1, doc="drop functions whose body has fewer code lines")
    min_docstring_chars: int = option(16, ge=1)
    max_chars: int = option(4000, ge=100, doc="drop records longer than this")
    validation_fraction: float = option(0.05, ge=0, lt=1, doc="source documents held out (seeded)")
    self_contained: bool = option(True, doc="drop functions that read module-level names other than imports")
    workers: int = option(2, ge=1, doc="parsing processes")
