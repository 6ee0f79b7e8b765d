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
    error); ``error`` is ``None`` on success, else one redacted line: a
    non-retryable HTTP error ("HTTP 400: ...") or the last failure after all
    retries. ``finish_reason`` is the first choice's ("stop", "length", ...);
    ``truncated`` is true when the reply was cut at the token limit, which is
    a reply but not an answer (see ``reask_cut`` in `LLMClient.chat_many`).
    ``cached`` is true when the reply came from the cache (cost nothing now).
    ``usage`` holds ``prompt_tokens`` and ``completion_tokens``, as the server
    reported them or, when it reported none, estimated (``usage_estimated``).
    ``cost_usd`` is what this call paid for the reply at the configured
    prices: 0 for a cached one, None when no price is configured.
    """

    texts: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    cached: bool = False
    key: str = ""
    attempts: int = 0
    usage_estimated: bool = False
    cost_usd: float | None = None
    cut_reasks: int = 0  # re-asks with a larger max_tokens after a cut reply
    # the endpoint refused this very request (HTTP 400/413/422): not worth asking
    # again in a re-run, so callers record it as invalid rather than failed
    rejected: bool = False

    @property
    def text(self) -> str | None:
        return self.texts[0] if self.texts else None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def failed(self) -> bool:
        """An error a later run may not get (transport, limits, setup): re-run to retry."""
        return self.error is not None and not self.rejected

    @property
    def truncated(self) -> bool:
        return self.error is None and self.finish_reason == "length"


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


def estimate_usage(body: dict[str, Any], texts: list[str]) -> dict[str, int]:
    """Tokens of a reply whose server reported none: ~4 characters a token,
    the prompt from the request body and the completion from the texts."""
    return {"prompt_tokens": math.ceil(prompt_chars(body) / 4),
            "completion_tokens": sum(math.ceil(len(t) / 4) for t in texts)}


def _content_text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


class MalformedResponse(ValueError):
    """A 200 reply that is not an OpenAI completion object."""


# No model reads or writes a hundred million tokens in one reply: a larger count is a
# broken server, not a bill (one such reply would dwarf the cost of the whole run).
_MAX_TOKENS_COUNT = 10**8


def parse_response(path: str, data: Any, n: int = 1) -> tuple[list[str], str | None, dict[str, int] | None]:
    """(texts, finish_reason of the first choice, usage or None) from a reply body.

    Strict about types: anything that is not the OpenAI shape — a choice that
    is not an object, a text that is not a string, a finish_reason that is not
    a string, fewer choices than the ``n`` asked for, a usage count that is
    not a non-negative integer — raises `MalformedResponse` (which the client
    retries), never another exception. Usage absent, null, or without its two
    counts gives None (the caller estimates it).
    """
    try:
        return _parse(path, data, n)
    except MalformedResponse:
        raise
    except Exception as e:  # noqa: BLE001 - a shape nobody foresaw is still just a malformed reply
        raise MalformedResponse(f"unreadable reply ({type(e).__name__})") from None


def _parse(path: str, data: Any, n: int) -> tuple[list[str], str | None, dict[str, int] | None]:
    if not isinstance(data, dict):
        raise MalformedResponse(f"reply is a JSON {type(data).__name__}, not an object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedResponse("reply has no choices")
    indexed: dict[int, dict[str, Any]] = {}
    for pos, c in enumerate(choices):
        if not isinstance(c, dict):
            raise MalformedResponse(f"choice {pos} is a JSON {type(c).__name__}, not an object")
        index = c.get("index", pos)
        if not _is_int(index) or index < 0 or index in indexed:
            raise MalformedResponse(f"choice {pos} has a bad or repeated index (a JSON {type(index).__name__})")
        indexed[index] = c
    if len(indexed) < n:
        raise MalformedResponse(f"reply has {len(indexed)} choices, {n} were asked for")
    ordered = [indexed[i] for i in sorted(indexed)]
    texts = [_choice_text(path, c, pos) for pos, c in enumerate(ordered)]
    finish = ordered[0].get("finish_reason")
    if finish is not None and not isinstance(finish, str):
        raise MalformedResponse(f"finish_reason is a JSON {type(finish).__name__}, not a string")
    return texts, finish, _usage(data.get("usage"))


def _choice_text(path: str, c: dict[str, Any], pos: int) -> str:
    if path == CHAT_PATH:
        message = c.get("message")
        if not isinstance(message, dict):
            raise MalformedResponse(f"choice {pos} has no message object")
        content = message.get("content")
        if isinstance(content, list):  # content parts: the text ones, in order
            parts = [p for p in content if isinstance(p, dict) and p.get("type", "text") == "text"]
            if not all(isinstance(p.get("text"), str) for p in parts):
                raise MalformedResponse(f"choice {pos} has a content part whose text is not a string")
            return "".join(p["text"] for p in parts)
    else:
        content = c.get("text")
    if content is None:
        return ""
    if not isinstance(content, str):
        raise MalformedResponse(f"choice {pos} text is a JSON {type(content).__name__}, not a string")
    return content


def _usage(raw: Any) -> dict[str, int] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise MalformedResponse(f"usage is a JSON {type(raw).__name__}, not an object")
    out: dict[str, int] = {}
    for name in ("prompt_tokens", "completion_tokens"):
        value = raw.get(name)
        if value is None:
            return None  # incomplete usage: treated as none (estimated)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not _is_int(value) or not 0 <= value < _MAX_TOKENS_COUNT:
            raise MalformedResponse(f"usage.{name} is a JSON {type(value).__name__}, not a token count")
        out[name] = value
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
