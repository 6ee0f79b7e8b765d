"""Evidence: each flagged pair side by side with its three scores, so a person
can judge a flag (the paper's appendix shows pairs the same way).

A pair is a benchmark problem and a training snippet that some signal put
forward: an AST match rate >= the smallest τ, a shared n-gram, or (when
``embedding_max_distance`` is set) an embedding that close. For every pair
all three scores are computed on the two snippets shown, whichever signal
found it. At most ``evidence_per_problem`` pairs per problem and signal are
kept (the highest scoring); the similarity table has every record.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from phi1.decontam.ast_match import snippet_match_rate
from phi1.decontam.embedding import embed_texts, normalize_rows
from phi1.decontam.ngram import NgramIndex
from phi1.decontam.scan import Pair, ProblemIndex, ScanOptions
from phi1.files import write_atomic


@dataclass
class EvidencePair:
    task_id: str
    problem: str  # the problem's program (prompt + canonical solution)
    record_id: str
    where: str
    label: str
    snippet: str
    ast_rate: float | None
    ngram_shared: int | None
    embedding_distance: float | None
    found_by: list[str]

    def score_line(self) -> str:
        parts = [f"AST match rate {self.ast_rate:.3f}" if self.ast_rate is not None else "AST match rate -",
                 f"shared n-grams {self.ngram_shared}" if self.ngram_shared is not None else "shared n-grams -",
                 f"embedding distance {self.embedding_distance:.3f}" if self.embedding_distance is not None
                 else "embedding distance -"]
        return " · ".join(parts) + f" (found by {', '.join(self.found_by)})"


def score_pairs(pairs: Iterable[Pair], problems: ProblemIndex, options: ScanOptions,
                embedder: Any = None) -> list[EvidencePair]:
    """One `EvidencePair` per (problem, record, snippet), all three scores computed."""
    merged: dict[tuple[int, str, str], tuple[Pair, list[str]]] = {}
    for p in pairs:
        key = (p.problem, p.record_id, p.label)
        if key in merged:
            if p.signal not in merged[key][1]:
                merged[key][1].append(p.signal)
        else:
            merged[key] = (p, [p.signal])
    items = sorted(merged.values(), key=lambda x: (x[0].problem, x[0].record_id, x[0].label))
    ngram_cache: dict[int, NgramIndex] = {}
    dists: list[float | None] = [None] * len(items)
    if options.uses("embedding") and embedder is not None and problems.vectors is not None and items:
        vecs = embed_texts(embedder, [p.snippet for p, _ in items])
        pv = normalize_rows(problems.vectors)[[p.problem for p, _ in items]]
        d = np.linalg.norm(vecs - pv, axis=1)
        dists = [float(x) for x in d]
    out = []
    for (p, found), dist in zip(items, dists):
        rate = snippet_match_rate(problems.programs[p.problem], p.snippet, options.ast) if options.uses("ast") else None
        shared = None
        if options.uses("ngram"):
            if p.problem not in ngram_cache:
                ngram_cache[p.problem] = NgramIndex.build([problems.texts[p.problem]], options.ngram_n)
            shared = ngram_cache[p.problem].hits(p.snippet)[1]
        out.append(EvidencePair(problems.task_ids[p.problem], problems.programs[p.problem], p.record_id, p.where,
                                p.label, p.snippet, rate, shared, dist, sorted(found)))
    order = {t: i for i, t in enumerate(problems.task_ids)}
    out.sort(key=lambda e: (order[e.task_id], -(e.ast_rate or 0.0), e.record_id))
    return out


def write_evidence(path: str | Path, pairs: Sequence[EvidencePair], fmt: str, header: Sequence[str] = ()) -> Path:
    """Write the pairs as an HTML page or a Markdown file (atomically)."""
    path = Path(path)
    text = _html(pairs, header) if fmt == "html" else _markdown(pairs, header)
    write_atomic(path, text)
    return path


def _title(e: EvidencePair) -> str:
    where = " ".join(x for x in (e.where, e.label) if x)
    return f"{e.record_id}" + (f" ({where})" if where else "")


def _side_by_side(e: EvidencePair) -> str:
    esc = html.escape
    return ("<table class=\"pair\"><tr><th>" + esc(e.task_id) + "</th><th>" + esc(_title(e)) + "</th></tr>"
            "<tr><td><pre>" + esc(e.problem) + "</pre></td><td><pre>" + esc(e.snippet) + "</pre></td></tr></table>")


def _html(pairs: Sequence[EvidencePair], header: Sequence[str]) -> str:
    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset=\"utf-8\"><title>phi1 decontamination evidence</title>",
             "<style>body{font-family:sans-serif;margin:2em}table.pair{border-collapse:collapse;width:100%;"
             "table-layout:fixed;margin-bottom:1.5em}table.pair td,table.pair th{border:1px solid #ccc;"
             "vertical-align:top;padding:.4em;text-align:left}pre{white-space:pre-wrap;font-size:12px;margin:0}"
             ".scores{color:#333;margin:.3em 0}</style></head><body>",
             "<h1>Decontamination evidence</h1>"]
    parts += [f"<p>{esc(line)}</p>" for line in header]
    if not pairs:
        parts.append("<p>No pair was flagged.</p>")
    current = None
    for e in pairs:
        if e.task_id != current:
            current = e.task_id
            parts.append(f"<h2>{esc(e.task_id)}</h2>")
        parts.append(f"<p class=\"scores\">{esc(e.score_line())}</p>")
        parts.append(_side_by_side(e))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _markdown(pairs: Sequence[EvidencePair], header: Sequence[str]) -> str:
    # Markdown has no side-by-side code: each pair is an HTML table, which
    # GitHub, GitLab and most viewers render inside Markdown.
    parts = ["# Decontamination evidence", ""]
    parts += [f"{line}  " for line in header]
    parts.append("")
    if not pairs:
        parts.append("No pair was flagged.")
    current = None
    for e in pairs:
        if e.task_id != current:
            current = e.task_id
            parts += [f"## {e.task_id}", ""]
        parts += [f"**{_title(e)}** — {e.score_line()}", "", _side_by_side(e), ""]
    return "\n".join(parts) + "\n"
