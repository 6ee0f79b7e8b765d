"""Teachers: who gives each sampled document its educational-value score.

* `heuristic_labels` — the offline rubric (`phi1.quality.rubric`), an approximation;
* `llm_labels` — an LLM behind any OpenAI-compatible endpoint (`phi1.llm`),
  with a prompt from `phi1.quality.prompts`; replies without a valid score (or
  cut at the token limit) are re-asked up to ``parse_retries`` times and
  otherwise recorded as invalid, with the reason;
* `imported_labels` — a labels JSONL file someone already has.

Each returns `Label` records: the ``annotate/labels.jsonl`` folder contract.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from phi1.documents import read_jsonl_numbered
from phi1.errors import InputError
from phi1.quality.prompts import SCORE_MAX, SCORE_MIN, get_prompt, read_score, reask_messages, truncate_code
from phi1.quality.rubric import RUBRIC_ID, score_code
from phi1.quality.sampling import SampledDoc


REJECTED = "rejected by the endpoint: "  # prefix of Label.invalid for a request the endpoint refuses (HTTP 400...)


@dataclass
class Label:
    id: str
    score: float | None
    raw: str
    teacher: str
    prompt_id: str
    valid: bool
    error: str | None = None  # the request failed (llm teacher): why (redacted by the client)
    attempts: int = 1  # replies asked for (1 + re-asks)
    invalid: str | None = None  # llm teacher: why the last reply gave no score ("cut at the token limit", ...)

    def to_json(self) -> dict[str, Any]:
        rec: dict[str, Any] = {"id": self.id, "score": self.score, "raw": self.raw, "teacher": self.teacher,
                               "prompt_id": self.prompt_id, "valid": self.valid}
        if self.error is not None:
            rec["error"] = self.error
        elif not self.valid and self.invalid:
            rec["invalid"] = self.invalid
        if self.attempts != 1:
            rec["attempts"] = self.attempts
        return rec


# --------------------------------------------------------------------------- heuristic


def heuristic_labels(docs: list[SampledDoc], max_chars: int, progress: bool = True) -> list[Label]:
    from tqdm.auto import tqdm

    out = []
    for d in tqdm(docs, desc="annotate (heuristic)", unit="doc", disable=not progress, mininterval=1.0):
        r = score_code(truncate_code(d.text, max_chars), d.size)
        out.append(Label(d.id, r.score, r.explain(), "heuristic", RUBRIC_ID, True))
    return out


# --------------------------------------------------------------------------- llm


@dataclass
class LLMTeacherReport:
    reasked: int = 0  # re-ask requests sent (or found in the cache)
    usage: dict[str, Any] | None = None


def llm_labels(docs: list[SampledDoc], llm_cfg: Any, prompt: str, max_chars: int, parse_retries: int,
               cache_path: Path | None, log: Callable[[str], None] = print,
               progress: bool = True) -> tuple[list[Label], LLMTeacherReport]:
    """Ask the LLM for every document; never raise for a single failed request
    (its label says why, and the stage counts it as failed: a re-run asks again).

    A reply cut at the token limit is first asked again with more tokens by
    the client (``llm.cut_retries``, ``llm.cut_max_tokens_factor``); a reply
    still cut, or one without a well-delimited final score, is re-asked in the
    same conversation up to ``parse_retries`` times (a cut one with a request
    for the score line alone), then recorded as invalid with the reason. A
    cut reply is never parsed: a number in a justification cut mid-way is not
    a label.
    """
    from phi1.llm import ChatRequest, LLMClient

    template = get_prompt(prompt)
    teacher = f"llm:{llm_cfg.model}"
    report = LLMTeacherReport()
    conversations = [template.messages(truncate_code(d.text, max_chars)) for d in docs]
    labels: list[Label] = [Label(d.id, None, "", teacher, template.prompt_id, False, attempts=0) for d in docs]

    async def ask_all(client: LLMClient) -> None:
        todo = list(range(len(docs)))
        for round_ in range(parse_retries + 1):
            if not todo:
                return
            if round_:
                log(f"re-asking {len(todo)} replies without a valid score (round {round_}/{parse_retries})")
                report.reasked += len(todo)
            results = await client.chat_many([ChatRequest(conversations[i]) for i in todo], progress=progress,
                                              reask_cut=True)
            again = []
            for i, res in zip(todo, results):
                lab = labels[i]
                lab.attempts += 1 + res.cut_reasks
                if res.rejected:  # the endpoint refuses this request as such: invalid, not retried
                    lab.invalid = f"{REJECTED}{res.error}"
                    continue
                if not res.ok:
                    lab.error = res.error
                    continue
                lab.raw, lab.error = res.text or "", None
                if res.truncated:
                    lab.invalid = "cut at the token limit"
                else:
                    found = read_score(lab.raw)
                    if found.value is not None:
                        lab.score, lab.valid, lab.invalid = found.value, True, None
                        continue
                    lab.invalid = f"no score: {found.error}"
                # Re-ask in the same conversation: a new request (and cache key),
                # so a re-run replays the same exchange from the cache.
                conversations[i] = reask_messages(conversations[i], lab.raw, cut=res.truncated)
                again.append(i)
            todo = again

    with LLMClient(llm_cfg, cache_path, desc="annotate (llm)", log=log) as client:
        try:
            asyncio.run(ask_all(client))
        finally:
            report.usage = client.usage
    return labels, report


# --------------------------------------------------------------------------- imported


@dataclass
class ImportReport:
    unknown_ids: list[str]
    total: int


def imported_labels(path: str | Path, known_ids: set[str]) -> tuple[list[Label], ImportReport]:
    """Labels from a JSONL file with at least ``id`` and ``score`` (0-5 or null).

    A line without an id, a duplicate id, or a score that is not a number in
    0..5 (or null) is an error naming the file and line. Ids that are not in
    the ingested corpus are left out and reported; if none is known, that is
    an error (the file belongs to another corpus).
    """
    path = Path(path)
    if not str(path) or not path.is_file():
        raise InputError(f"annotate.labels_path: labels file not found: {path}")
    labels: list[Label] = []
    unknown: list[str] = []
    seen: dict[str, int] = {}
    for lineno, rec in read_jsonl_numbered(path):
        where = f"{path}:{lineno}"
        if not isinstance(rec, dict) or rec.get("id") is None:
            raise InputError(f"{where}: a label needs an 'id'")
        doc_id = str(rec["id"])
        if doc_id in seen:
            raise InputError(f"{where}: duplicate id {doc_id!r} (first on line {seen[doc_id]})")
        seen[doc_id] = lineno
        score = rec.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))
                                  or not math.isfinite(score) or not SCORE_MIN <= score <= SCORE_MAX):
            raise InputError(f"{where}: score {score!r} for id {doc_id!r} is not a number in "
                             f"{SCORE_MIN:g}..{SCORE_MAX:g} (or null)")
        if doc_id not in known_ids:
            unknown.append(doc_id)
            continue
        valid = score is not None and bool(rec.get("valid", True))
        labels.append(Label(doc_id, float(score) if score is not None else None, str(rec.get("raw") or ""),
                            "labels", str(rec.get("prompt_id") or rec.get("teacher") or "imported"), valid))
    if not seen:
        raise InputError(f"{path}: no labels in the file")
    if not labels:
        raise InputError(f"{path}: none of its {len(seen)} ids is a document of this run's ingest output "
                         f"(first: {unknown[0]!r}); was it made from another corpus?")
    return labels, ImportReport(unknown, len(seen))
