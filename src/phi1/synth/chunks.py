"""Generate and validate one chunk of seeds; keep the result as part files.

A chunk (``synth.chunk_size`` consecutive seeds of one kind) is asked for,
its replies parsed and validated (exercises in the sandbox), and what passes
is written under ``<stage>.partial/parts/``::

    <kind>-<chunk>.jsonl.gz   kept records, before deduplication
    <kind>-<chunk>.npy        their MinHash signatures (one row per record)
    <kind>-<chunk>.json       counts, drop reasons, dedup keys (written last:
                              the chunk is finished when this file exists)

An interrupted run resumes after its last finished chunk; a chunk with failed
requests is redone on every run (its replies that did come back are in the
LLM cache, so only the failed requests are sent again).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from phi1.files import atomic_path, write_json_atomic, write_jsonl_atomic
from phi1.synth.dedup import MinHasher, text_key
from phi1.synth.exercises import Candidate, ExerciseRules, parse_exercise
from phi1.synth.plan import Plan
from phi1.synth.records import ExerciseRecord
from phi1.synth.validate import CUT, REQUEST_FAILED, check_textbook, sandbox_reason

PARTS = "parts"


@dataclass
class ChunkResult:
    kind: str
    chunk: int
    start: int
    stop: int
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    failed: list[int] = field(default_factory=list)  # seed indices whose request failed
    first_error: str = ""
    keys: list[str] = field(default_factory=list)  # exact-dedup keys of the kept records, in order
    name_followed: int = 0  # exercises defining the function name their seed asked for
    prompt_tokens: int = 0  # of the replies used (cached ones included)
    completion_tokens: int = 0
    cost_usd: float | None = 0.0  # of the replies used, at list price (None: unpriced)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "chunk": self.chunk, "start": self.start, "stop": self.stop,
                "kept": self.kept, "dropped": dict(self.dropped), "failed": self.failed,
                "first_error": self.first_error, "keys": self.keys, "name_followed": self.name_followed,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cost_usd": self.cost_usd}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ChunkResult":
        return cls(d["kind"], d["chunk"], d["start"], d["stop"], d["kept"], Counter(d["dropped"]), d["failed"],
                   d.get("first_error", ""), d["keys"], d.get("name_followed", 0), d.get("prompt_tokens", 0),
                   d.get("completion_tokens", 0), d.get("cost_usd"))


_THINKING = re.compile(r"\A\s*<think>.*?</think>\s*", re.S)


def clean_text(text: str) -> str:
    """A reply as text every writer and reader takes: a reasoning model's
    leading ``<think>...</think>`` removed, lone surrogates (valid in JSON, not
    in UTF-8) replaced by "?", NUL characters removed."""
    text = _THINKING.sub("", text)
    if text.isascii() and "\x00" not in text:
        return text
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


def part_paths(folder: Path, kind: str, chunk: int) -> tuple[Path, Path, Path]:
    stem = folder / PARTS / f"{kind}-{chunk:05d}"
    return stem.with_suffix(".jsonl.gz"), stem.with_suffix(".npy"), stem.with_suffix(".json")


def finished_chunk(folder: Path, kind: str, chunk: int, start: int, stop: int) -> ChunkResult | None:
    """A chunk an earlier attempt finished without failed requests (else None)."""
    _, _, state = part_paths(folder, kind, chunk)
    try:
        res = ChunkResult.from_json(json.loads(state.read_text()))
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        return None
    if res.failed or (res.start, res.stop) != (start, stop):
        return None
    return res


class ChunkWorker:
    """Turns chunks of a plan into part files."""

    def __init__(self, plan: Plan, backend: Any, folder: Path, *, rules: ExerciseRules,
                 min_textbook_chars: int, pool: Callable[[], Any], hasher: MinHasher):
        self.plan = plan
        self.backend = backend
        self.folder = folder
        self.rules = rules
        self.min_textbook_chars = min_textbook_chars
        self.pool = pool  # () -> a started SandboxPool (made once, on first use)
        self.hasher = hasher

    def run(self, chunk: int, start: int, stop: int) -> ChunkResult:
        plan = self.plan
        seeds = [plan.seed(i) for i in range(start, stop)]
        results = self.backend.ask([plan.request(s) for s in seeds])
        res = ChunkResult(plan.kind, chunk, start, stop)
        records: list[tuple[dict[str, Any], str, str]] = []  # (record json, dedup text, key)
        pending: list[tuple[Any, Any, Candidate]] = []  # exercises waiting for the sandbox
        for seed, r in zip(seeds, results):
            if not r.ok:
                res.dropped[REQUEST_FAILED] += 1
                res.failed.append(seed.index)
                res.first_error = res.first_error or str(r.error)
                continue
            self._account(res, r)
            if r.truncated:
                res.dropped[CUT] += 1
                continue
            text = clean_text(r.text or "")
            if plan.kind == "textbooks":
                check = check_textbook(text, self.min_textbook_chars)
                if check.reason:
                    res.dropped[check.reason] += 1
                    continue
                records.append(self._textbook(seed, r, text.strip() + "\n", check))
            else:
                cand = parse_exercise(text, seed.name, self.rules)
                if isinstance(cand, str):
                    res.dropped[cand] += 1
                    continue
                pending.append((seed, r, cand))
        if pending:
            from phi1.evaluate.sandbox import Job

            runs = self.pool().run([Job(c.prompt, c.solution, c.test, c.name) for _, _, c in pending])
            for (seed, r, cand), ex in zip(pending, runs):
                reason = sandbox_reason(ex.passed, ex.result)
                if reason:
                    res.dropped[reason] += 1
                    continue
                res.name_followed += cand.name_followed
                records.append(self._exercise(seed, r, cand))
        records.sort(key=lambda rec: rec[0]["metadata"]["seed"]["index"])  # seed order, whatever the path
        res.kept = len(records)
        res.keys = [k for _, _, k in records]
        self._write(res, records)
        return res

    # ------------------------------------------------------------------ records

    def _account(self, res: ChunkResult, r: Any) -> None:
        u = r.usage or {}
        res.prompt_tokens += int(u.get("prompt_tokens", 0))
        res.completion_tokens += int(u.get("completion_tokens", 0))
        price = self.backend.price(u)
        res.cost_usd = None if price is None or res.cost_usd is None else res.cost_usd + price

    def _meta(self, seed: Any, r: Any) -> dict[str, Any]:
        price = self.backend.price(r.usage or {})
        return {"seed": seed.to_json(), "prompt_id": self.plan.prompt_id, "model": self.backend.model,
                "cost_usd": round(price, 8) if price is not None else None,
                "tokens": dict(r.usage or {}), "cut_reasks": r.cut_reasks}

    def _textbook(self, seed: Any, r: Any, text: str, check: Any) -> tuple[dict[str, Any], str, str]:
        key = text_key(text)
        meta = {"source": f"synth:{self.backend.model}", "size": len(text.encode("utf-8")),
                "origin": "synthetic", **self._meta(seed, r), **check.to_json(), "key": key}
        return {"id": self.plan.record_id(seed.index), "text": text, "metadata": meta}, text, key

    def _exercise(self, seed: Any, r: Any, c: Candidate) -> tuple[dict[str, Any], str, str]:
        from phi1.synth.mine import dedup_key

        rec = ExerciseRecord(self.plan.record_id(seed.index), c.prompt, c.solution, f"synth:{self.backend.model}")
        key = dedup_key(rec)
        rec.metadata = {"origin": "synthetic", **self._meta(seed, r), "function": c.name,
                        "name_followed": c.name_followed, "asserts": c.asserts, "tests": c.tests,
                        "imports": c.modules, "key": key}
        return rec.to_json(), rec.text, key

    def _write(self, res: ChunkResult, records: list[tuple[dict[str, Any], str, str]]) -> None:
        data, sigs, state = part_paths(self.folder, res.kind, res.chunk)
        write_jsonl_atomic(data, (rec for rec, _, _ in records))
        matrix = self.hasher.signatures([t for _, t, _ in records])
        with atomic_path(sigs) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, matrix)
        write_json_atomic(state, res.to_json())  # last: the chunk is finished


def read_signatures(folder: Path, kind: str, chunk: int) -> np.ndarray:
    return np.load(part_paths(folder, kind, chunk)[1])


def remove_parts(folder: Path) -> None:
    parts = folder / PARTS
    if parts.is_dir():
        for p in parts.iterdir():
            os.unlink(p)
        parts.rmdir()
