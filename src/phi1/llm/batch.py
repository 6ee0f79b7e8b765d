"""OpenAI Batch API files: export requests, import outputs into the cache.

The request file has one line per request::

    {"custom_id": KEY, "method": "POST", "url": "/v1/chat/completions", "body": {...}}

and the output file one line per reply::

    {"id": ..., "custom_id": KEY, "response": {"status_code": 200, "body": {...}}, "error": null}

These are the files OpenAI's Batch API and vLLM's ``run_batch``
(``python -m vllm.entrypoints.openai.run_batch -i requests.jsonl -o out.jsonl
--model M``) read and write. ``custom_id`` is phi1's cache key, so importing
an output file fills the cache and the next run of the stage finds every
reply there, exactly as if it had been sent live.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from phi1.documents import read_jsonl_numbered
from phi1.errors import InputError, SkipStage
from phi1.files import write_jsonl_atomic
from phi1.llm.cache import ResponseCache
from phi1.llm.schema import CHAT_PATH, COMPLETIONS_PATH, MalformedResponse, parse_response

# OpenAI's limit per batch file; larger exports are split into parts.
MAX_REQUESTS_PER_FILE = 50_000
_KEY = re.compile(r"^[0-9a-f]{64}$")


class BatchExported(SkipStage):
    """Requests were written to Batch API files instead of being sent; the
    stage stops here and finishes once the outputs are imported."""

    def __init__(self, paths: list[Path], count: int, section: str = "llm"):
        self.paths = paths
        self.count = count
        files = ", ".join(str(p) for p in paths)
        super().__init__(
            f"exported {count} requests missing from the cache to {files}; run them with the "
            f"OpenAI Batch API or vLLM's run_batch, then re-run with {section}.batch_import = "
            f"[\"<output file>\"] (and {section}.batch_export = \"\" or a new file for any re-asks)"
        )


def batch_line(key: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": key, "method": "POST", "url": path, "body": body}


def export_batch(path: str | Path, items: Iterable[tuple[str, str, dict[str, Any]]],
                 max_per_file: int = MAX_REQUESTS_PER_FILE) -> list[Path]:
    """Write ``(key, url path, body)`` items as Batch API request JSONL.

    More than ``max_per_file`` requests go to ``<stem>-part00001<suffix>``,
    ... instead of one file. Files are written atomically. Returns the paths.
    """
    path = Path(path)
    items = list(items)
    chunks = [items[i:i + max_per_file] for i in range(0, len(items), max_per_file)] or [[]]
    if len(chunks) == 1:
        targets = [path]
    else:
        suffix = "".join(path.suffixes) or ".jsonl"
        stem = path.name[: len(path.name) - len("".join(path.suffixes))] if path.suffixes else path.name
        targets = [path.with_name(f"{stem}-part{i:05d}{suffix}") for i in range(len(chunks))]
    for target, chunk in zip(targets, chunks):
        write_jsonl_atomic(target, (batch_line(key, url, body) for key, url, body in chunk))
    return targets


@dataclass
class BatchOutputLine:
    custom_id: str
    status_code: int
    body: Any
    error: str | None


def read_batch_output(path: str | Path) -> Iterator[BatchOutputLine]:
    """Lines of a Batch API output (or error) file; a malformed line is an
    error naming the file and line."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"batch output file not found: {path}")
    for lineno, rec in read_jsonl_numbered(path):  # BOM, UTF-8, JSON, line-size and .gz checks in one place
        where = f"{path}:{lineno}"
        if not isinstance(rec, dict) or not isinstance(rec.get("custom_id"), str):
            raise InputError(f"{where}: not a Batch API output line (no custom_id)")
        response = rec.get("response") or {}
        if not isinstance(response, dict):
            raise InputError(f"{where}: 'response' must be an object")
        error = rec.get("error")
        if error is not None and not isinstance(error, str):
            error = (error.get("message") if isinstance(error, dict) else None) or json.dumps(error)
        if "body" not in response and "choices" in response:  # the reply itself, without the envelope
            response = {"status_code": 200, "body": response}
        status = response.get("status_code") or 0
        if isinstance(status, bool) or not isinstance(status, (int, str)) or not str(status).isdigit():
            raise InputError(f"{where}: response.status_code is not an HTTP status (a JSON {type(status).__name__})")
        yield BatchOutputLine(rec["custom_id"], int(status), response.get("body"), error)


@dataclass
class ImportReport:
    path: Path
    imported: int = 0  # replies newly put into the cache
    already: int = 0  # replies the cache held already (a re-import costs nothing)
    failed: dict[str, str] = field(default_factory=dict)  # custom_id -> why (not imported)
    foreign: int = 0  # custom_ids that are not phi1 cache keys (skipped)
    usage: dict[str, dict[str, int] | None] = field(default_factory=dict)  # newly imported: key -> usage or None


def import_batch_output(cache: ResponseCache, path: str | Path) -> ImportReport:
    """Put every successful reply of a Batch API output file into the cache.

    Idempotent: importing a file twice changes nothing, and only newly
    imported replies are counted (and priced). Failed lines, and replies that
    are not a well-formed completion (the same check as a live reply), are
    reported and left out: their requests will be sent live, or exported again.
    """
    report = ImportReport(Path(path))
    lines = list(read_batch_output(path))
    present = set(cache.get_many(line.custom_id for line in lines if _KEY.match(line.custom_id)))
    rows = []
    for line in lines:
        if not _KEY.match(line.custom_id):
            report.foreign += 1
            continue
        body = line.body
        if line.status_code != 200 or line.error is not None or not isinstance(body, dict):
            why = line.error or f"status {line.status_code}"
            if isinstance(body, dict) and isinstance(body.get("error"), dict):
                why = f"{why}: {body['error'].get('message', '')}".strip()
            report.failed[line.custom_id] = why
            continue
        choices = body.get("choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        url = CHAT_PATH if isinstance(first, dict) and "message" in first else COMPLETIONS_PATH
        try:
            _, _, usage = parse_response(url, body)
        except MalformedResponse as e:
            report.failed[line.custom_id] = f"malformed reply ({e})"
            continue
        if line.custom_id in present or line.custom_id in report.usage:
            report.already += 1
            continue
        rows.append((line.custom_id, url, {}, body, "batch"))
        report.usage[line.custom_id] = usage
    report.imported = cache.put_many(rows)
    return report
