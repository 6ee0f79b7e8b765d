"""Config sections for `mine` (exercises from the corpus) and `synth` (synthetic textbooks and exercises)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from phi1.llm.config import LLMConfig
from phi1.sections import option


@dataclass
class MineConfig:
    inputs: dict[str, float] = option({"filter": 1.0}, doc="documents to mine: {dataset = sampling rate}")
    min_body_lines: int = option(2, ge=1, doc="drop functions whose body has fewer code lines")
    min_docstring_chars: int = option(16, ge=1)
    max_chars: int = option(4000, ge=100, doc="drop records longer than this")
    self_contained: bool = option(True, doc="drop functions that read module-level names other than imports")
    workers: int = option(2, ge=1, doc="parsing processes", execution=True)


DEFAULT_ALLOWED_IMPORTS = ["typing", "math", "random", "collections", "datetime", "itertools"]


@dataclass
class SynthConfig:
    """Synthetic textbooks and CodeExercises (paper section 2.2) from an LLM.

    Seeds come from the seed space (``phi1/synth/data``, or ``seed_space``);
    prompts are versioned; replies are validated (exercises run against their
    own asserts in the `execute` sandbox, with [execute]'s limits) and
    deduplicated; see docs/synth.md.
    """

    textbooks: int = option(0, ge=0, doc="textbook sections to ask for (the paper: under 1B tokens, "
                            "~700K sections of ~1.4K tokens)")
    exercises: int = option(0, ge=0, doc="exercises to ask for (the paper kept 879.5K)")
    seed_space: str = option("", doc="folder whose seed-space files replace the packaged ones of the same "
                             "name ('' = the packaged seed space)")
    textbook_prompt: Literal["textbook-v1"] = option("textbook-v1", doc="prompt template id (in every record)")
    exercise_prompt: Literal["exercise-v1"] = option("exercise-v1", doc="prompt template id (in every record)")
    textbook_max_tokens: int = option(2048, ge=16, doc="reply limit of a textbook request (a cut reply is "
                                      "re-asked per [synth.llm] cut_retries, then dropped as 'cut')")
    exercise_max_tokens: int = option(768, ge=16, doc="reply limit of an exercise request")
    textbook_reply_tokens: int = option(1400, ge=1, doc="expected reply length, for the cost estimate only")
    exercise_reply_tokens: int = option(300, ge=1, doc="expected reply length, for the cost estimate only")
    allowed_imports: list[str] = option(DEFAULT_ALLOWED_IMPORTS, doc="modules an exercise may import (the "
                                        "paper: 99.8% of CodeExercises use only these six)")
    min_asserts: int = option(3, ge=1, doc="asserts calling the function an exercise must carry")
    min_docstring_chars: int = option(16, ge=1, doc="shortest exercise docstring kept")
    max_exercise_chars: int = option(4000, ge=100, doc="longest exercise (prompt + solution) kept")
    min_textbook_chars: int = option(400, ge=0, doc="shortest textbook section kept")
    near_duplicate: float = option(0.8, gt=0, le=1, doc="MinHash Jaccard estimate (5-token shingles) at or "
                                   "above which a record is a near duplicate of an earlier one")
    dedup_against: str = option("", doc="an exercises dataset (e.g. 'mine') whose records synthetic "
                                "exercises must not duplicate ('' = none)")
    backend: Literal["endpoint", "transformers"] = option(
        "endpoint", doc="endpoint: [synth.llm] (a hosted API, vLLM servers, or batch files); transformers: "
        "local_model in this process (one GPU, no server)")
    local_model: str = option("", doc="backend = 'transformers': a chat model folder or hub name")
    device: str = option("auto", execution=True, doc="transformers backend: auto | cpu | cuda | cuda:N")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = option(
        "auto", execution=True, doc="transformers backend: auto = bfloat16 on CUDA, float32 on CPU")
    batch_size: int = option(8, ge=1, execution=True, doc="transformers backend: prompts per generate call")
    chunk_size: int = option(2000, ge=1, execution=True, doc="seeds per chunk: the unit of progress and of "
                             "resuming an interrupted run (finished chunks are kept)")
    diversity_sample: int = option(1000, ge=0, execution=True, doc="records per dataset embedded with the "
                                   "[embed] backend for the nearest-neighbour histogram (0 = skip)")
    ngram_sample: int = option(10000, ge=1, execution=True, doc="records per dataset sampled for the "
                               "distinct n-gram ratios")
    llm: LLMConfig = option(default_factory=LLMConfig)

    def __post_init__(self) -> None:
        bad = [m for m in self.allowed_imports if not m.isidentifier()]
        if bad:
            raise ValueError(f"allowed_imports: {bad[0]!r} is not a module name")
