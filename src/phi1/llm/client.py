"""The async OpenAI-compatible client: cache, limits, retries, load balancing.

    from phi1.llm import ChatRequest, LLMClient, run_chat

    results, usage = run_chat(cfg, cache_path, [ChatRequest([{"role": "user", "content": "hi"}])])

    async with LLMClient(cfg, cache_path) as client:       # or client.close()
        results = await client.chat_many(requests)          # one LLMResult per request, same order
        more = await client.complete_many(completion_requests)
        manifest["llm"] = client.usage

How one request goes: the cache is asked first (a hit costs nothing); if
``cfg.batch_export`` is set, missing requests go to a Batch API file instead
(`BatchExported` stops the stage); otherwise a worker (``cfg.concurrency`` of
them) waits for the RPM and TPM buckets, picks an endpoint, and sends. 429,
408, 409, 5xx, timeouts, dropped connections and malformed JSON are retried
up to ``cfg.max_retries`` times with full-jitter exponential backoff (Retry-After
wins); any other 4xx becomes the result's ``error`` at once. A reply is
committed to the cache the moment it arrives, so a killed run loses nothing
and its re-run sends only what never came back. Identical requests in one
call are sent once.
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import httpx

from phi1.errors import Phi1Error
from phi1.llm.batch import BatchExported, export_batch, import_batch_output
from phi1.llm.cache import ResponseCache
from phi1.llm.config import LLMConfig
from phi1.llm.endpoints import Endpoint, EndpointPool
from phi1.llm.limits import RateLimiter
from phi1.llm.retry import backoff_delay, is_retryable_status, parse_retry_after
from phi1.llm.schema import (
    AnyRequest,
    ChatRequest,
    CompletionRequest,
    LLMResult,
    MalformedResponse,
    estimate_tokens,
    parse_response,
    request_body,
    request_key,
    request_path,
)
from phi1.llm.usage import UsageMeter

CACHE_OFF = "off"


def resolve_cache_path(cfg: LLMConfig, run_dir: str | Path) -> Path | None:
    """Where a stage's client keeps its cache: ``cfg.cache``, or
    ``<run dir>/cache/llm.sqlite`` (outside every stage folder, so it
    survives re-runs of the stage and is shared by all stages of the run)."""
    if cfg.cache == CACHE_OFF:
        return None
    return Path(cfg.cache) if cfg.cache else Path(run_dir) / "cache" / "llm.sqlite"


@dataclass
class _Outcome:
    ok: bool
    texts: list[str] | None = None
    finish: str | None = None
    usage: dict[str, int] | None = None
    data: Any = None
    reason: str = ""  # short failure class for counts: "429", "500", "timeout", ...
    message: str = ""  # one line for the result's error
    retryable: bool = False
    retry_after: float | None = None


class LLMClient:
    """One model behind one or more OpenAI-compatible base URLs.

    ``cache_path=None`` disables the cache. Not thread-safe: use it from one
    event loop at a time (successive ``asyncio.run`` calls are fine).
    """

    def __init__(self, cfg: LLMConfig, cache_path: str | Path | None = None, *, seed: int = 0,
                 desc: str = "llm"):
        if not cfg.model:
            raise Phi1Error("llm.model is empty: name the model to ask (e.g. model = \"gpt-4o\")")
        self.cfg = cfg
        self.desc = desc
        self.cache = ResponseCache(cache_path) if cache_path is not None else None
        self.meter = UsageMeter(cfg.price_per_1m_input, cfg.price_per_1m_output, cfg.batch_price_factor)
        self.pool = EndpointPool(cfg.base_urls, cfg.load_balance, cfg.endpoint_max_failures,
                                 cfg.endpoint_cooldown_s) if cfg.base_urls else None
        self._rpm = RateLimiter(cfg.requests_per_minute)
        self._tpm = RateLimiter(cfg.tokens_per_minute)
        self._rng = random.Random(seed)  # backoff jitter only
        self._imported = False
        self.batch_failures: dict[str, str] = {}  # cache key -> why its batch reply was unusable

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()

    def __enter__(self) -> "LLMClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> "LLMClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()

    @property
    def usage(self) -> dict[str, Any]:
        """Counts, tokens and cost so far, for a manifest (no URLs' credentials, no key)."""
        out = {"model": self.cfg.model, **self.meter.as_dict()}
        if self.pool is not None:
            out["endpoints"] = self.pool.stats()
        return out

    # ------------------------------------------------------------------ public

    async def chat_many(self, requests: Sequence[ChatRequest], progress: bool = True) -> list[LLMResult]:
        """One result per chat request, in the same order."""
        return await self._run_many(list(requests), progress)

    async def complete_many(self, requests: Sequence[CompletionRequest], progress: bool = True) -> list[LLMResult]:
        """One result per text-completion request, in the same order."""
        return await self._run_many(list(requests), progress)

    def keys(self, requests: Sequence[AnyRequest]) -> list[str]:
        """Cache keys (= Batch API custom_ids) of requests."""
        return [request_key(request_path(r), request_body(self.cfg, r)) for r in requests]

    # ------------------------------------------------------------------ core

    async def _run_many(self, requests: list[AnyRequest], progress: bool) -> list[LLMResult]:
        self._import_batches()
        unique: dict[str, tuple[str, dict[str, Any]]] = {}
        order: list[str] = []
        for r in requests:
            path, body = request_path(r), request_body(self.cfg, r)
            key = request_key(path, body)
            unique.setdefault(key, (path, body))
            order.append(key)
        self.meter.requests += len(unique)

        done: dict[str, LLMResult] = {}
        if self.cache is not None:
            for key, data in self.cache.get_many(unique).items():
                try:
                    texts, finish, usage = parse_response(unique[key][0], data)
                except MalformedResponse:
                    continue  # unusable entry (e.g. a chat reply under a completion key): ask again
                done[key] = LLMResult(texts, finish, usage, None, True, key, 0)
        self.meter.cache_hits += len(done)
        todo = [k for k in unique if k not in done]

        if todo and self.cfg.batch_export:
            paths = export_batch(self.cfg.batch_export, [(k, *unique[k]) for k in todo])
            self.meter.batch_exported += len(todo)
            raise BatchExported(paths, len(todo))
        if todo and self.pool is None:
            why = "no endpoint configured (llm.base_urls is empty) and the reply is not in the cache"
            for k in todo:
                done[k] = LLMResult(error=self.batch_failures.get(k, why), key=k)
            self.meter.errors += len(todo)
            todo = []
        if todo:
            done.update(await self._send_all(todo, unique, progress, len(unique)))
        return [done[k] for k in order]

    def _import_batches(self) -> None:
        if self._imported or not self.cfg.batch_import:
            return
        if self.cache is None:
            raise Phi1Error("llm.batch_import needs the response cache (llm.cache must not be 'off')")
        for path in self.cfg.batch_import:
            report = import_batch_output(self.cache, path)
            for u in report.usage:
                self.meter.add_batch(u)
            self.batch_failures.update({k: f"batch reply unusable: {v}" for k, v in report.failed.items()})
        self._imported = True

    def _auth_headers(self) -> dict[str, str]:
        env = self.cfg.api_key_env
        if not env:
            return {}
        key = os.environ.get(env)
        if not key:
            raise Phi1Error(
                f"environment variable {env} (llm.api_key_env) is not set: export it with your API key, "
                f"or set api_key_env = \"\" for an endpoint without one (local vLLM, Ollama)")
        return {"Authorization": f"Bearer {key}"}

    def _redact(self, text: str) -> str:
        key = os.environ.get(self.cfg.api_key_env) if self.cfg.api_key_env else None
        if key:
            text = text.replace(key, "***")
        return text

    async def _send_all(self, todo: list[str], unique: dict[str, tuple[str, dict[str, Any]]],
                        progress: bool, total: int) -> dict[str, LLMResult]:
        from tqdm.auto import tqdm

        cfg = self.cfg
        headers = self._auth_headers()  # before any send: a missing key fails fast
        queue: asyncio.Queue[str] = asyncio.Queue()
        for k in todo:
            queue.put_nowait(k)
        out: dict[str, LLMResult] = {}
        bar = tqdm(total=total, initial=total - len(todo), desc=self.desc, unit="req",
                   disable=not progress, mininterval=1.0, dynamic_ncols=True)
        limits = httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency)
        # Waiting for a pooled connection is not the server's fault: the workers
        # bound concurrency, so give the pool the whole request timeout or a minute.
        timeout = httpx.Timeout(cfg.timeout_s, connect=min(cfg.timeout_s, 30.0), pool=max(cfg.timeout_s, 60.0))

        async def worker(http: httpx.AsyncClient) -> None:
            while True:
                try:
                    key = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                path, body = unique[key]
                out[key] = await self._one(http, key, path, body)
                bar.update(1)
                if self.meter.errors or self.meter.retries:
                    bar.set_postfix(retries=self.meter.retries, errors=self.meter.errors, refresh=False)

        try:
            async with httpx.AsyncClient(headers=headers, timeout=timeout, limits=limits) as http:
                tasks = [asyncio.create_task(worker(http)) for _ in range(min(cfg.concurrency, len(todo)))]
                try:
                    await asyncio.gather(*tasks)
                except BaseException:
                    # Cancelled or a bug: stop the other workers; replies already
                    # received are in the cache, so a re-run resumes from there.
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    raise
        finally:
            bar.close()
        return out

    async def _one(self, http: httpx.AsyncClient, key: str, path: str, body: dict[str, Any]) -> LLMResult:
        cfg = self.cfg
        assert self.pool is not None
        estimate = estimate_tokens(body)
        last = ""
        attempts = cfg.max_retries + 1
        for attempt in range(attempts):
            await self._rpm.acquire(1)
            await self._tpm.acquire(estimate)
            ep = await self.pool.acquire()
            self.meter.sent += 1
            try:
                o = await self._send(http, ep, path, body)
            except BaseException:
                self.pool.release(ep, ok=False, endpoint_fault=False)
                raise
            self.pool.release(ep, ok=o.ok, endpoint_fault=not o.ok and o.retryable, retry_after=o.retry_after)
            if o.ok:
                assert o.usage is not None and o.texts is not None
                used = o.usage["prompt_tokens"] + o.usage["completion_tokens"]
                if not used:
                    self.meter.usage_missing += 1
                self._tpm.adjust(estimate - (used or estimate))
                if self.cache is not None:
                    self.cache.put(key, path, body, o.data)
                self.meter.add_live(o.usage)
                return LLMResult(o.texts, o.finish, o.usage, None, False, key, attempt + 1)
            self._tpm.adjust(estimate)  # a failed attempt consumed no tokens
            self.meter.failures[o.reason] += 1
            last = o.message
            if not o.retryable:
                self.meter.errors += 1
                return LLMResult(error=o.message, key=key, attempts=attempt + 1)
            if attempt + 1 < attempts:
                self.meter.retries += 1
                await asyncio.sleep(backoff_delay(attempt, cfg.backoff_base_s, cfg.backoff_max_s,
                                                  self._rng, o.retry_after))
        self.meter.errors += 1
        return LLMResult(error=f"gave up after {attempts} attempts: {last}", key=key, attempts=attempts)

    async def _send(self, http: httpx.AsyncClient, ep: Endpoint, path: str, body: dict[str, Any]) -> _Outcome:
        url = ep.url + path[len("/v1"):]  # base URLs end in /v1 (or their own prefix), as in the OpenAI SDK
        where = ep.label
        try:
            resp = await http.post(url, json=body)
        except httpx.TimeoutException:
            return _Outcome(False, reason="timeout", retryable=True,
                            message=f"no reply within {self.cfg.timeout_s:g}s from {where}")
        except httpx.TransportError as e:
            return _Outcome(False, reason="connection", retryable=True,
                            message=self._redact(f"connection to {where} failed ({type(e).__name__}: {e})"))
        status = resp.status_code
        if 200 <= status < 300:
            try:
                data = resp.json()
                texts, finish, usage = parse_response(path, data)
            except (ValueError, MalformedResponse) as e:
                return _Outcome(False, reason="malformed", retryable=True,
                                message=f"malformed reply from {where} ({type(e).__name__}: {str(e)[:120]})")
            return _Outcome(True, texts, finish, usage, data)
        detail = _error_message(resp)
        message = self._redact(f"HTTP {status} from {where}: {detail}")
        return _Outcome(False, reason=str(status), message=message, retryable=is_retryable_status(status),
                        retry_after=parse_retry_after(resp.headers) if status in (429, 503) else None)


def _error_message(resp: httpx.Response) -> str:
    text = resp.text
    try:
        data = resp.json()
    except ValueError:
        data = None
    if isinstance(data, dict):  # OpenAI: {"error": {"message"}}; others: {"error": "..."} / {"detail"}
        err = data.get("error")
        msg = err.get("message") if isinstance(err, dict) else (err or data.get("message") or data.get("detail"))
        if msg:
            text = str(msg)
    return " ".join(text.split())[:300] or resp.reason_phrase


# ---------------------------------------------------------------------- sync wrappers


def run_chat(cfg: LLMConfig, cache_path: str | Path | None, requests: Sequence[ChatRequest],
             progress: bool = True) -> tuple[list[LLMResult], dict[str, Any]]:
    """Blocking `LLMClient.chat_many`: ``(results, usage)``. Not for use inside a running event loop."""
    with LLMClient(cfg, cache_path) as client:
        results = asyncio.run(client.chat_many(requests, progress=progress))
        return results, client.usage


def run_completions(cfg: LLMConfig, cache_path: str | Path | None, requests: Sequence[CompletionRequest],
                    progress: bool = True) -> tuple[list[LLMResult], dict[str, Any]]:
    """Blocking `LLMClient.complete_many`: ``(results, usage)``."""
    with LLMClient(cfg, cache_path) as client:
        results = asyncio.run(client.complete_many(requests, progress=progress))
        return results, client.usage
