"""The paper's numbers, in one place, and the reference line printed beside ours.

Gunasekar et al., "Textbooks Are All You Need", arXiv:2306.11644 (v2). Every
figure here carries where in the paper it stands, so a reader can check it.
The run summary (via `paper_reference`) and the run report both read this
module; nothing else writes the paper's numbers down.

Cheap to import: no numpy, no matplotlib.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

PAPER = "Gunasekar et al. 2023, Textbooks Are All You Need (arXiv:2306.11644)"


@dataclass(frozen=True)
class PaperFigure:
    """One number from the paper."""

    value: float
    unit: str  # "%", "tokens", "params", "docs", "tokens/s", ...
    what: str  # what it measures, in words
    where: str  # section / table / figure of the paper


# --------------------------------------------------------------------------- the figures
FIGURES: dict[str, PaperFigure] = {
    # data
    "corpus_files": PaperFigure(35e6, "files", "Python subset of The Stack (dedup) + StackOverflow", "§2.1"),
    "corpus_tokens": PaperFigure(35e9, "tokens", "Python subset of The Stack (dedup) + StackOverflow", "§2.1"),
    "annotated_samples": PaperFigure(100e3, "samples", "samples rated by GPT-4 for educational value", "§2.1"),
    "filtered_tokens": PaperFigure(6e9, "tokens", "filtered code-language dataset kept by the classifier", "§2"),
    "textbook_tokens": PaperFigure(1e9, "tokens", "synthetic textbooks by GPT-3.5 (less than)", "§2.2"),
    "exercise_tokens": PaperFigure(180e6, "tokens", "CodeExercises, synthetic by GPT-3.5", "§2.2"),
    "exercises": PaperFigure(879.5e3, "exercises", "CodeExercises problems", "§5.2"),
    "codetextbook_tokens": PaperFigure(7e9, "tokens", "all training data (filtered + synthetic), less than", "§2"),
    "tokenizer_vocab": PaperFigure(51200, "tokens", "codegen-350M-mono tokenizer vocabulary", "§2.3"),
    # model and training
    "phi1_params": PaperFigure(1.3e9, "params", "phi-1 / phi-1-base parameters", "§2.3"),
    "phi1_small_params": PaperFigure(350e6, "params", "phi-1-small parameters", "§2.3"),
    "pretrain_tokens_seen": PaperFigure(51e9, "tokens", "tokens seen by phi-1-base", "Figure 2.1 caption"),
    "pretrain_gpu_hours": PaperFigure(770, "A100-hours", "phi-1-base pretraining compute", "Figure 2.1 caption"),
    "finetune_steps": PaperFigure(6000, "steps", "finetuning on CodeExercises, batch 256, lr 1e-4", "§2.3"),
    # evaluation
    "humaneval_phi1": PaperFigure(50.6, "%", "HumanEval pass@1, phi-1 (1.3B params, 7B tokens)", "Abstract, Table 1"),
    "humaneval_phi1_base": PaperFigure(29.0, "%", "HumanEval pass@1, phi-1-base (before finetuning)", "§2, Figure 2.1"),
    "humaneval_phi1_small": PaperFigure(45.0, "%", "HumanEval pass@1, phi-1-small (350M params)", "Abstract"),
    "mbpp_phi1": PaperFigure(55.5, "%", "MBPP pass@1, phi-1", "Abstract, Table 1"),
    "grade_phi1": PaperFigure(52.0, "%", "GPT-4 graded score on 50 unconventional problems, phi-1", "Table 2"),
    "grade_phi1_small": PaperFigure(45.0, "%", "GPT-4 graded score, phi-1-small", "Table 2"),
    "grade_phi1_base": PaperFigure(37.0, "%", "GPT-4 graded score, phi-1-base", "Table 2"),
    "grade_starcoder": PaperFigure(51.0, "%", "GPT-4 graded score, StarCoder (15.5B params, 1T tokens)", "Table 2"),
    # the central experiment: 350M models at equal compute (Figure 2.1 and §2.1)
    "ablation_stack_350m": PaperFigure(12.19, "%", "HumanEval, 350M on unfiltered Stack+ (96k steps, ~200B tokens)",
                                       "§2.1"),
    "ablation_filtered_350m": PaperFigure(17.68, "%", "HumanEval, 350M on the filtered subset (36k steps)", "§2.1"),
    "ablation_codetextbook_350m": PaperFigure(20.12, "%", "HumanEval, 350M on filtered + synthetic textbooks",
                                              "§2.1, Figure 2.1"),
}

# Derived, not printed in the paper: 51B tokens in 770 A100-hours.
PRETRAIN_TOKENS_PER_GPU_S = FIGURES["pretrain_tokens_seen"].value / (FIGURES["pretrain_gpu_hours"].value * 3600)


@dataclass(frozen=True)
class Table3Row:
    """Table 3: pass@1 on HumanEval problems with / without close matches in CodeExercises."""

    tau: float  # AST match-rate threshold
    subset: str  # "similar" | "non-similar" | "total"
    problems: int
    phi1: float  # % solved by phi-1
    phi1_pruned: float  # % solved by phi-1 retrained on CodeExercises pruned at this tau
    starcoder_prompted: float  # % solved by StarCoder-Prompted (15.5B)


TABLE3: tuple[Table3Row, ...] = (
    Table3Row(0.95, "similar", 71, 81.7, 74.6, 57.7),
    Table3Row(0.95, "non-similar", 93, 26.9, 32.3, 29.0),
    Table3Row(0.95, "total", 164, 50.6, 50.6, 41.5),
    Table3Row(0.9, "similar", 93, 63.4, 51.6, 48.4),
    Table3Row(0.9, "non-similar", 71, 33.8, 36.6, 32.4),
    Table3Row(0.9, "total", 164, 50.6, 45.1, 41.5),
    Table3Row(0.85, "similar", 106, 62.3, 52.8, 47.2),
    Table3Row(0.85, "non-similar", 58, 29.3, 34.5, 31.0),
    Table3Row(0.85, "total", 164, 50.6, 46.3, 41.5),
    Table3Row(0.8, "similar", 116, 59.5, 52.6, 45.7),
    Table3Row(0.8, "non-similar", 48, 29.2, 27.1, 31.2),
    Table3Row(0.8, "total", 164, 50.6, 45.1, 41.5),
)
# §5.2: tau from 0.95 to 0.8 removes 42.5K to 354K of the 879.5K exercises (about 4% to 40%).
PRUNED_EXERCISES = {0.95: 42.5e3, 0.8: 354e3}


# --------------------------------------------------------------------------- formatting


def human(n: float | None, unit: str = "") -> str:
    """12_290 -> '12.29K', 1.3e9 -> '1.3B'; '?' for anything but a finite number."""
    if not isinstance(n, (int, float)) or isinstance(n, bool) or not math.isfinite(n):
        return "?"
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            s = f"{n / div:.4g}{suffix}"
            break
    else:
        s = f"{n:.4g}" if isinstance(n, float) and not float(n).is_integer() else f"{int(n)}"
    return f"{s} {unit}".strip() if unit else s


def fig(key: str) -> str:
    """'50.6%' / '6B tokens' for a figure."""
    f = FIGURES[key]
    if f.unit == "%":
        return f"{f.value:g}%"
    return human(f.value, f.unit)


def _num(d: Any, *path: str) -> float | None:
    """A finite number at ``d[path...]``, else None (manifests may be partial or odd)."""
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d):
        return None
    return float(d)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


# --------------------------------------------------------------------------- reference lines
# One function per stage: (manifest) -> the paper's figure, beside this run's.


def _ingest(m: dict[str, Any]) -> str:
    docs = _num(m, "funnel", "documents_in") or _num(m, "counts", "documents_in")
    kept = _num(m, "funnel", "kept") or _num(m, "counts", "kept")
    toks = _num(m, "metrics", "tokens_estimate")
    here = (f"here {human(docs)} files in, {human(kept)}"
            f" kept (~{human(toks)} tokens)")
    return f"paper: >{fig('corpus_files')} / >{fig('corpus_tokens')} (The Stack Python + StackOverflow); {here}"


def _annotate(m: dict[str, Any]) -> str:
    n = _num(m, "counts", "labelled")
    teacher = (m.get("metrics") or {}).get("teacher") if isinstance(m.get("metrics"), dict) else None
    return (f"paper: GPT-4 rated ~{fig('annotated_samples')}; here {human(n)} "
            f"labels from teacher {teacher or '?'}")


def _filter(m: dict[str, Any]) -> str:
    kept = _num(m, "counts", "tokens_kept_est")
    rate = _num(m, "metrics", "keep_rate_tokens")
    share = FIGURES["filtered_tokens"].value / FIGURES["corpus_tokens"].value
    return (f"paper: kept ~{fig('filtered_tokens')} of >{fig('corpus_tokens')} (~{100 * share:.0f}%); "
            f"here ~{human(kept)} tokens ({_pct(rate)})")


def _tokenizer(m: dict[str, Any]) -> str:
    vocab = _num(m, "counts", "vocab_size") or _num(m, "tokenizer", "vocab_size")
    bpt = _num(m, "metrics", "bytes_per_token")
    here = f"here vocabulary {int(vocab):,}" if vocab is not None else "here vocabulary ?"
    if bpt is not None:
        here += f", {bpt:.2f} bytes/token"
    return (f"paper: codegen-350M-mono tokenizer, vocabulary {int(FIGURES['tokenizer_vocab'].value):,} "
            f"(bytes/token not reported); {here}")


def _tokenize(m: dict[str, Any]) -> str:
    toks = _num(m, "counts", "train_tokens")
    return (f"paper: CodeTextbook <{fig('codetextbook_tokens')} (~{fig('filtered_tokens')} filtered + "
            f"<{fig('textbook_tokens')} synthetic textbooks); here {human(toks)} "
            f"training tokens")


def _exercises(m: dict[str, Any]) -> str:
    n = _num(m, "counts", "exercises")
    return (f"paper: CodeExercises {human(FIGURES['exercises'].value)} exercises, ~{fig('exercise_tokens')} "
            f"(GPT-3.5); here {human(n)} exercises")


def _pretrain(m: dict[str, Any]) -> str:
    params = _num(m, "model", "params") or _num(m, "counts", "params")
    toks = _num(m, "counts", "tokens")
    tps = _num(m, "metrics", "tokens_per_s")
    world = _num(m, "world_size") or 1.0
    here = (f"here {human(params)} params, {human(toks)}"
            f" tokens" + (f", {human(tps / world)} tokens/s per device" if tps is not None else ""))
    return (f"paper: phi-1-base {fig('phi1_params')}, {fig('pretrain_tokens_seen')} seen in "
            f"{int(FIGURES['pretrain_gpu_hours'].value)} A100-hours (~{human(PRETRAIN_TOKENS_PER_GPU_S)} tokens/s "
            f"per GPU, derived), {fig('humaneval_phi1_base')} HumanEval pass@1; {here}")


def _finetune(m: dict[str, Any]) -> str:
    steps = _num(m, "counts", "steps")
    return (f"paper: {int(FIGURES['finetune_steps'].value):,} steps on CodeExercises lift HumanEval pass@1 from "
            f"{fig('humaneval_phi1_base')} (phi-1-base) to {fig('humaneval_phi1')} (phi-1); "
            f"here {human(steps)} steps")


def _execute(m: dict[str, Any]) -> str:
    p1 = _num(m, "metrics", "pass@1")
    problems = str(m.get("problems") or "").lower()
    if "mbpp" in problems:
        return f"paper: MBPP pass@1 {fig('mbpp_phi1')} for phi-1 at 1.3B params / 7B tokens; here {_pct(p1)}"
    return (f"paper: HumanEval pass@1 {fig('humaneval_phi1')} for phi-1 at 1.3B params / 7B tokens "
            f"({fig('humaneval_phi1_small')} phi-1-small at 350M, {fig('humaneval_phi1_base')} phi-1-base); "
            f"here {_pct(p1)}")


def _grade(m: dict[str, Any]) -> str:
    g = _num(m, "metrics", "grade_pct")
    here = "n/a" if g is None else f"{g:.1f}%"
    return (f"paper: GPT-4 graded {fig('grade_phi1')} for phi-1 on 50 unconventional problems "
            f"({fig('grade_phi1_small')} phi-1-small, {fig('grade_phi1_base')} phi-1-base, "
            f"{fig('grade_starcoder')} StarCoder); here {here}")


def _synth(m: dict[str, Any]) -> str:
    kept = {k: _num(m, "metrics", k, "kept") for k in ("textbooks", "exercises")}
    for k in kept:  # the counts are there even when the metrics are not (nothing generated offline)
        if kept[k] is None:
            kept[k] = _num(m, "counts", f"{k}_kept")
    here = ", ".join(f"{human(v)} {k}" for k, v in kept.items() if v is not None)
    return (f"paper: <{fig('textbook_tokens')} of synthetic textbooks and {human(FIGURES['exercises'].value)}"
            f" exercises (~{fig('exercise_tokens')}), both by GPT-3.5; here {here + ' kept' if here else 'none yet'}")


def _decontam(m: dict[str, Any]) -> str:
    lo, hi = PRUNED_EXERCISES[0.95], PRUNED_EXERCISES[0.8]
    records = _num(m, "counts", "records")
    tau = _num(m, "decontam", "prune_tau")
    flagged = _num(m, "counts", f"flagged@{tau:g}") if tau is not None else None
    here = (f"here {human(flagged)} of {human(records)} records flagged at tau {tau:g}"
            if flagged is not None and records is not None and tau is not None else "here ?")
    return (f"paper: AST match rate tau 0.95..0.8 pruned {human(lo)}..{human(hi)} of "
            f"{human(FIGURES['exercises'].value)} exercises; retrained phi-1 kept 50.6%..45.1% "
            f"HumanEval pass@1 (Table 3); {here}")


_REFERENCES: dict[str, Callable[[dict[str, Any]], str]] = {
    "ingest": _ingest,
    "annotate": _annotate,
    "filter": _filter,
    "tokenizer": _tokenizer,
    "tokenize": _tokenize,
    "mine": _exercises,
    "synth": _synth,
    "decontam": _decontam,
    "pretrain": _pretrain,
    "finetune": _finetune,
    "execute": _execute,
    "grade": _grade,
}


def stage_family(stage: str) -> str:
    """'pretrain' for 'pretrain', 'pretrain.filtered' or 'pretrain-seed1': what kind of stage it is."""
    return re.split(r"[._\-:/]", stage, maxsplit=1)[0]


def paper_reference(stage: str, manifest: dict[str, Any] | None) -> str | None:
    """The paper's figure for what this stage measured, beside this run's, as one line.

    None when the paper reports nothing comparable for the stage (e.g. embed,
    classifier, generate). Never raises: a partial or odd manifest gives '?'
    for the missing number of this run.
    """
    fn = _REFERENCES.get(stage) or _REFERENCES.get(stage_family(stage))
    if fn is None:
        return None
    try:
        return fn(manifest if isinstance(manifest, dict) else {})
    except Exception:  # a reference line must never break a run's summary
        return None
