"""Requests and results of the LLM client, and how they map to OpenAI JSON.

A request becomes an HTTP body (`request_body`) whose canonical JSON, with the
endpoint path, is hashed into the cache key (`request_key`): the same model,
messages and parameters give the same key on any base URL, so replies are
shared across endpoints, runs and the Batch API.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Union

from phi1.llm.config import LLMConfig

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion. ``None`` fields take the config's defaults;
    ``extra`` is merged into the JSON body as is (e.g. ``{"top_p": 0.95}``)."""

    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    temperature: float | None = None
    n: int = 1
    stop: list[str] | str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CompletionRequest:
    """One legacy text completion (``/v1/completions``), e.g. for a base model."""

    prompt: str
    max_tokens: int | None = None
    temperature: float | None = None
    n: int = 1
    stop: list[str] | str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


AnyRequest = Union[ChatRequest, CompletionRequest]


@dataclass
class LLMResult:
    """What came back for one request.

    ``texts`` holds the ``n`` choices (``text`` is the first, or ``None`` on
    error); ``error`` is ``None`` on success, else one line: a non-retryable
    HTTP error ("HTTP 400: ...") or the last failure after all retries.
    ``cached`` is true when the reply came from the cache (cost nothing now).
    """

    texts: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    cached: bool = False
    key: str = ""
    attempts: int = 0

    @property
    def text(self) -> str | None:
        return self.texts[0] if self.texts else None

    @property
    def ok(self) -> bool:
        return self.error is None


def request_path(req: AnyRequest) -> str:
    return CHAT_PATH if isinstance(req, ChatRequest) else COMPLETIONS_PATH


def request_body(cfg: LLMConfig, req: AnyRequest) -> dict[str, Any]:
    """The JSON body sent to the endpoint (and exported to Batch API files)."""
    body: dict[str, Any] = {"model": cfg.model}
    if isinstance(req, ChatRequest):
        body["messages"] = [dict(m) for m in req.messages]
    else:
        body["prompt"] = req.prompt
    body[cfg.max_tokens_field] = req.max_tokens if req.max_tokens is not None else cfg.max_tokens
    body["temperature"] = req.temperature if req.temperature is not None else cfg.temperature
    if req.n != 1:  # some servers reject an explicit n
        body["n"] = req.n
    if req.stop:
        body["stop"] = req.stop
    body.update(req.extra)
    return body


def request_key(path: str, body: dict[str, Any]) -> str:
    """Cache key: sha256 of the endpoint path and canonical JSON body."""
    blob = json.dumps({"url": path, "body": body}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def prompt_chars(body: dict[str, Any]) -> int:
    if "messages" in body:
        return sum(len(_content_text(m.get("content"))) for m in body["messages"])
    p = body.get("prompt", "")
    return sum(len(x) for x in p) if isinstance(p, list) else len(str(p))


def estimate_tokens(body: dict[str, Any]) -> int:
    """Tokens a request may use, before sending: prompt (~4 characters a
    token) plus the reply limit for every choice, as providers count TPM."""
    limit = body.get("max_tokens") or body.get("max_completion_tokens") or 0
    return math.ceil(prompt_chars(body) / 4) + int(limit) * int(body.get("n") or 1)


def _content_text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


class MalformedResponse(ValueError):
    """A 200 reply that is not an OpenAI completion object."""


def parse_response(path: str, data: Any) -> tuple[list[str], str | None, dict[str, int]]:
    """(texts, finish_reason of the first choice, usage) from a reply body."""
    if not isinstance(data, dict):
        raise MalformedResponse(f"reply is a JSON {type(data).__name__}, not an object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedResponse("reply has no choices")
    try:
        choices = sorted(choices, key=lambda c: c.get("index", 0))
        if path == CHAT_PATH:
            texts = [_content_text((c.get("message") or {}).get("content")) for c in choices]
        else:
            texts = [str(c.get("text") or "") for c in choices]
        finish = choices[0].get("finish_reason")
    except (AttributeError, TypeError) as e:
        raise MalformedResponse(f"reply choices are malformed ({e})") from None
    raw_usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    usage = {
        "prompt_tokens": int(raw_usage.get("prompt_tokens") or 0),
        "completion_tokens": int(raw_usage.get("completion_tokens") or 0),
    }
    return texts, finish, usage
