"""The async OpenAI-compatible client: cache, limits, retries, load balancing.

    from phi1.llm import ChatRequest, LLMClient, run_chat

    results, usage = run_chat(cfg, cache_path, [ChatRequest([{"role": "user", "content": "hi"}])])

    async with LLMClient(cfg, cache_path, log=ctx.log) as client:   # or client.close()
        results = await client.chat_many(requests, reask_cut=True)   # one LLMResult per request, same order
        more = await client.complete_many(completion_requests)
        manifest["llm"] = client.usage

How one request goes: the cache is asked first (a hit costs nothing); if
``cfg.batch_export`` is set, missing requests go to a Batch API file instead
(`BatchExported` stops the stage); otherwise a worker (``cfg.concurrency`` of
them) waits for the RPM and TPM buckets, picks an endpoint, and sends.

What the client guarantees (docs/llm-client.md says how each is tested):

* every attempt has a total deadline (``timeout_s``: connect, send, and the
  whole reply), so a server that trickles its reply cannot hold a request;
* 429, 408, 409, 5xx, timeouts, dropped connections and *any* malformed 200
  (not JSON, undecodable, not the OpenAI shape, usage of the wrong type) are
  retried up to ``max_retries`` times with full-jitter backoff; a reply shape
  nobody foresaw fails that attempt, never the run or the other requests;
* a ``Retry-After`` waits at most ``retry_after_max_s`` (non-finite values
  are ignored) and a hold of a second or more is said on screen;
* every error text is redacted (the key, and any long piece of it) before it
  is folded and cut, and only then reaches a result, a file, the screen, a
  log or an exception;
* a reply cut at the token limit is re-asked with more tokens when the caller
  asks for it (``reask_cut``), and otherwise reported as ``truncated``;
* a reply without usage gets estimated tokens, and the cost says so;
* a reply body is read up to ``max_reply_mb``, never more (an endless body
  cannot fill memory); redirects are never followed (the key goes only to
  ``base_urls``); loopback endpoints never go through an environment proxy;
* an endpoint that refuses the setup (401/403/404/407, three in a row) gets
  nothing more, and when all do, the requests not yet sent fail at once;
* when nothing has succeeded for ``give_up_after_s``, the client gives up:
  every request has ended within ``give_up_after_s + timeout_s`` of the last
  reply;
* each endpoint's congestion window (slow start, then AIMD on timeouts,
  429, 503) keeps it from being sent more than it can take.

Any other 4xx becomes the result's ``error`` at once. A reply is committed to
the cache the moment it arrives, so a killed run loses nothing and its re-run
sends only what never came back. Identical requests in one call are sent once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import parse_qsl, urlsplit

import httpx

from phi1.errors import Phi1Error
from phi1.llm.batch import BatchExported, export_batch, import_batch_output
from phi1.llm.cache import ResponseCache
from phi1.llm.config import LLMConfig
from phi1.llm.endpoints import Endpoint, EndpointPool, EndpointsBroken
from phi1.llm.limits import RateLimiter
from phi1.llm.redact import Redactor, redacting_logs
from phi1.llm.retry import (backoff_delay, is_rejection, is_retryable_status, is_setup_error, parse_retry_after,
                            retry_after_text)
from phi1.llm.schema import (
    AnyRequest,
    ChatRequest,
    CompletionRequest,
    LLMResult,
    MalformedResponse,
    estimate_tokens,
    estimate_usage,
    parse_response,
    request_body,
    request_key,
    request_path,
)
from phi1.llm.usage import UsageMeter

CACHE_OFF = "off"
HOLD_NOTICE_S = 1.0  # a Retry-After hold this long or longer is said on screen
# Shortest secret masked inside a reply: a real key is longer, and a placeholder such as
# vLLM's "EMPTY" must not be masked out of the data (code says EMPTY).
REPLY_SECRET = 16


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
    message: str = ""  # one redacted line for the result's error
    retryable: bool = False
    retry_after: float | None = None  # the wait to honour (capped)
    retry_after_asked: float | None = None  # what the server asked for (None: absent or unusable)
    retry_after_header: str | None = None  # the header as sent, for the notice
    setup: bool = False  # the endpoint refuses the setup (a key, a model, an exhausted quota), not this request


def _url_secrets(urls: Sequence[str]) -> list[str]:
    """Passwords and query values in base URLs (``https://u:pw@h/v1?api-key=K``): secrets too."""
    out = []
    for u in urls:
        parts = urlsplit(u)
        out.append(parts.password or "")
        out += [v for _, v in parse_qsl(parts.query)]
    return out


def _check_base_urls(urls: Sequence[str]) -> None:
    for u in urls:
        parts = urlsplit(u.strip())
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number
            ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            ok = False
        if not ok:
            shown = u.rsplit("@", 1)[-1]  # never echo credentials
            raise Phi1Error(f"llm.base_urls: {shown!r} is not an http(s) URL with a host "
                            f"(e.g. \"http://localhost:8000/v1\")")


class LLMClient:
    """One model behind one or more OpenAI-compatible base URLs.

    ``cache_path=None`` disables the cache. ``log`` receives the client's
    notices (an endpoint held by Retry-After, an unusable Retry-After); they
    are redacted like everything else. Not thread-safe: use it from one event
    loop at a time (successive ``asyncio.run`` calls are fine).
    """

    def __init__(self, cfg: LLMConfig, cache_path: str | Path | None = None, *, seed: int = 0,
                 desc: str = "llm", log: Callable[[str], None] | None = None):
        if not cfg.model:
            raise Phi1Error("llm.model is empty: name the model to ask (e.g. model = \"gpt-4o\")")
        _check_base_urls(cfg.base_urls)
        self.cfg = cfg
        self.desc = desc
        self._log = log or _tqdm_write
        self.redactor = Redactor([self._env_key(), *_url_secrets(cfg.base_urls)])
        self.cache = ResponseCache(cache_path) if cache_path is not None else None
        self.meter = UsageMeter(cfg.price_per_1m_input, cfg.price_per_1m_output, cfg.batch_price_factor)
        self.pool = EndpointPool(cfg.base_urls, cfg.load_balance, cfg.endpoint_max_failures,
                                 cfg.endpoint_cooldown_s, max_in_flight=cfg.concurrency) if cfg.base_urls else None
        self._rpm = RateLimiter(cfg.requests_per_minute)
        self._tpm = RateLimiter(cfg.tokens_per_minute)
        self._rng = random.Random(seed)  # backoff jitter only
        self._imported = False
        self.batch_failures: dict[str, str] = {}  # cache key -> why its batch reply was unusable
        self._batch_unpriced: set[str] = set()  # imported batch replies without usage, not yet estimated
        self._held_until: dict[str, float] = {}  # endpoint label -> end of the last hold said on screen
        self._bad_retry_after: set[str] = set()  # endpoints whose unusable Retry-After was said on screen
        self._last_ok = 0.0  # monotonic time of the last reply (or of the start of sending)
        self._last_failure = 0.0  # monotonic time of the last failed attempt
        self._last_error = ""
        self._gave_up = ""  # why the client stopped sending (no endpoint answered for give_up_after_s)
        self._stop: asyncio.Event | None = None  # set when the client gives up: ends backoff sleeps and waits
        self._quoted_key: set[str] = set()  # endpoints whose replies quoted the key (said once)

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

    def log(self, message: str) -> None:
        """A notice on screen: redacted, then one line."""
        self._log(self.redactor.clean(message))

    # ------------------------------------------------------------------ public

    async def chat_many(self, requests: Sequence[ChatRequest], progress: bool = True, *,
                        reask_cut: bool = False) -> list[LLMResult]:
        """One result per chat request, in the same order.

        ``reask_cut``: a reply cut at the token limit (``finish_reason`` =
        "length") is asked again, up to ``cfg.cut_retries`` times, with
        ``cfg.cut_max_tokens_factor`` times the previous ``max_tokens``; the
        result is the last reply (``truncated`` if it is still cut,
        ``cut_reasks`` how many re-asks it took). Without it, cut replies are
        returned as they came (``generate`` wants them: a completion that
        reaches ``max_new_tokens`` is a sample like any other).
        """
        return await self._run_many(list(requests), progress, reask_cut)

    async def complete_many(self, requests: Sequence[CompletionRequest], progress: bool = True, *,
                            reask_cut: bool = False) -> list[LLMResult]:
        """One result per text-completion request, in the same order (``reask_cut``: as `chat_many`)."""
        return await self._run_many(list(requests), progress, reask_cut)

    def keys(self, requests: Sequence[AnyRequest]) -> list[str]:
        """Cache keys (= Batch API custom_ids) of requests."""
        return [request_key(request_path(r), request_body(self.cfg, r)) for r in requests]

    # ------------------------------------------------------------------ core

    async def _run_many(self, requests: list[AnyRequest], progress: bool, reask_cut: bool) -> list[LLMResult]:
        results = await self._ask(requests, progress, self.desc)
        if not reask_cut or self.cfg.cut_max_tokens_factor <= 1:
            return results
        for round_ in range(1, self.cfg.cut_retries + 1):
            cut = [i for i, r in enumerate(results) if r.truncated]
            if not cut:
                break
            self.log(f"{len(cut)} replies were cut at the token limit: asking again with "
                     f"{self.cfg.cut_max_tokens_factor:g}x max_tokens (round {round_} of {self.cfg.cut_retries})")
            for i in cut:
                requests[i] = self._with_more_tokens(requests[i])
            again = await self._ask([requests[i] for i in cut], progress, f"{self.desc} (cut re-ask)")
            self.meter.cut_reasks += len(cut)
            for i, res in zip(cut, again):
                res.cut_reasks = results[i].cut_reasks + 1
                res.attempts += results[i].attempts
                results[i] = res
        return results

    def _with_more_tokens(self, req: AnyRequest) -> AnyRequest:
        current = req.max_tokens if req.max_tokens is not None else self.cfg.max_tokens
        return dataclasses.replace(req, max_tokens=math.ceil(current * self.cfg.cut_max_tokens_factor))

    async def _ask(self, requests: list[AnyRequest], progress: bool, desc: str) -> list[LLMResult]:
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
                path, body = unique[key]
                try:
                    texts, finish, usage = parse_response(path, data, _choices(body))
                except MalformedResponse:
                    continue  # unusable entry (e.g. a chat reply under a completion key): ask again
                estimated = usage is None
                if estimated:
                    usage = estimate_usage(body, texts)
                    if key in self._batch_unpriced:  # an imported batch reply: now its request is known
                        self._batch_unpriced.discard(key)
                        self.meter.add_batch_estimate(usage)
                done[key] = LLMResult(texts, finish, usage, None, True, key, 0, estimated, 0.0)
            damaged = self.cache.unreadable & unique.keys()
            if damaged:
                self.log(f"{len(damaged)} replies stored in {self.cache.path} cannot be read back (damaged rows): "
                         "asking those requests again")
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
            done.update(await self._send_all(todo, unique, progress, len(unique), desc))
        return [dataclasses.replace(done[k]) for k in order]  # duplicates get their own copy

    def _import_batches(self) -> None:
        if self._imported or not self.cfg.batch_import:
            return
        if self.cache is None:
            raise Phi1Error("llm.batch_import needs the response cache (llm.cache must not be 'off')")
        for path in self.cfg.batch_import:
            report = import_batch_output(self.cache, path)
            for key, usage in report.usage.items():
                self.meter.add_batch(usage)
                if usage is None:
                    self._batch_unpriced.add(key)
            self.batch_failures.update({k: self.redactor.clean(f"batch reply unusable: {v}")
                                        for k, v in report.failed.items()})
        self._imported = True

    @staticmethod
    def _env_key_raw(env: str) -> str | None:
        return os.environ.get(env) if env else None

    def _env_key(self) -> str | None:
        raw = self._env_key_raw(self.cfg.api_key_env)
        return raw.strip() if raw else raw

    def _auth_headers(self) -> dict[str, str]:
        env = self.cfg.api_key_env
        if not env:
            return {}
        raw = self._env_key_raw(env)
        key = raw.strip() if raw else ""
        if not key:
            raise Phi1Error(
                f"environment variable {env} (llm.api_key_env) is not set: export it with your API key, "
                f"or set api_key_env = \"\" for an endpoint without one (local vLLM, Ollama)")
        if not all(33 <= ord(c) <= 126 for c in key):
            raise Phi1Error(f"environment variable {env} (llm.api_key_env) holds characters an HTTP header "
                            "cannot carry (spaces, line breaks or non-ASCII inside the key); export the key alone")
        self.redactor = Redactor([raw, key, *_url_secrets(self.cfg.base_urls)])
        return {"Authorization": f"Bearer {key}"}

    async def _send_all(self, todo: list[str], unique: dict[str, tuple[str, dict[str, Any]]],
                        progress: bool, total: int, desc: str) -> dict[str, LLMResult]:
        from tqdm.auto import tqdm

        cfg = self.cfg
        headers = self._auth_headers()  # before any send: a missing key fails fast
        queue: asyncio.Queue[str] = asyncio.Queue()
        for k in todo:
            queue.put_nowait(k)
        out: dict[str, LLMResult] = {}
        limits = httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency)
        # Per-phase limits as a second line of defence; the attempt's deadline
        # (asyncio.timeout in _send) is what bounds a request. Waiting for a
        # pooled connection is not the server's fault: the workers bound
        # concurrency, so give the pool the whole deadline or a minute.
        timeout = httpx.Timeout(cfg.timeout_s, connect=min(cfg.timeout_s, 30.0), pool=max(cfg.timeout_s, 60.0))
        http = _http_client(headers, timeout, limits, cfg.base_urls)  # a bad proxy setting: one line, nothing sent
        bar = tqdm(total=total, initial=total - len(todo), desc=desc, unit="req",
                   disable=not progress, mininterval=1.0, dynamic_ncols=True)

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

        self._stop = asyncio.Event()
        self._last_ok = self._last_failure = time.monotonic()
        try:
            with redacting_logs(self.redactor):
                await self._work(worker, http, len(todo))
        finally:
            bar.close()
        return out

    async def _work(self, worker: Callable[[httpx.AsyncClient], Any], http: httpx.AsyncClient, n: int) -> None:
        async with http:
            tasks = [asyncio.create_task(worker(http)) for _ in range(min(self.cfg.concurrency, n))]
            watchdog = asyncio.create_task(self._watch())
            try:
                await asyncio.gather(*tasks)
                watchdog.cancel()
            except BaseException:
                watchdog.cancel()
                # Cancelled, or the cache cannot be written: stop the other
                # workers; replies already received are in the cache, so a
                # re-run resumes from there.
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise

    async def _one(self, http: httpx.AsyncClient, key: str, path: str, body: dict[str, Any]) -> LLMResult:
        cfg = self.cfg
        assert self.pool is not None
        estimate = estimate_tokens(body)
        last = ""
        attempts = cfg.max_retries + 1
        for attempt in range(attempts):
            ep = None
            try:
                if await self._unless_given_up(self._rpm.acquire(1)) and \
                        await self._unless_given_up(self._tpm.acquire(estimate)):
                    ep = await self._unless_given_up(self.pool.acquire())
            except EndpointsBroken as e:
                return self._not_sent(key, attempt, f"not sent: {e}")
            if ep is None or self._given_up():
                if ep is not None:
                    self.pool.release(ep, ok=False, endpoint_fault=False)
                return self._not_sent(key, attempt, f"not sent: {self._given_up()}")
            self.meter.sent += 1
            started = time.monotonic()
            try:
                o = await self._send(http, ep, path, body)
            except BaseException:
                self.pool.release(ep, ok=False, endpoint_fault=False)
                raise
            self.pool.release(ep, ok=o.ok, endpoint_fault=not o.ok and o.retryable, retry_after=o.retry_after,
                              congested=o.reason in _CONGESTED, started=started)
            if o.retry_after_header is not None:
                self._say_hold(ep, o)
            if o.ok:
                self._last_ok = time.monotonic()
                assert o.texts is not None
                estimated = o.usage is None
                usage = estimate_usage(body, o.texts) if estimated else o.usage
                assert usage is not None
                self._tpm.adjust(estimate - (usage["prompt_tokens"] + usage["completion_tokens"]))
                if self.cache is not None:
                    self.cache.put(key, path, body, o.data)
                self.meter.add_live(usage, estimated)
                return LLMResult(o.texts, o.finish, usage, None, False, key, attempt + 1, estimated,
                                 self.meter.price(usage))
            self._tpm.adjust(estimate)  # a failed attempt consumed no tokens
            self.meter.failures[o.reason] += 1
            last = o.message
            setup = o.setup
            if o.retryable or setup:  # the endpoint is failing (a refusal of one request shows it is alive)
                self._last_failure, self._last_error = time.monotonic(), o.message
            else:
                self._last_ok = time.monotonic()
            if setup:
                # The endpoint refuses the setup (key, model, path): a few in a row and nothing more goes to it.
                if self.pool.setup_error(ep, o.message):
                    others = "; the other endpoints carry on" if self.pool.others(ep) else ""
                    self.log(f"{o.message} -- nothing more is sent to {ep.label} in this run{others}")
                if self.pool.others(ep):
                    continue  # another endpoint may take it
            if not o.retryable:
                self.meter.errors += 1
                rejected = o.reason.isdigit() and is_rejection(int(o.reason))
                return LLMResult(error=o.message, key=key, attempts=attempt + 1, rejected=rejected)
            if attempt + 1 < attempts:
                self.meter.retries += 1
                await self._unless_given_up(asyncio.sleep(backoff_delay(attempt, cfg.backoff_base_s,
                                                                        cfg.backoff_max_s, self._rng, o.retry_after)))
        self.meter.errors += 1
        return LLMResult(error=self.redactor.clean(f"gave up after {attempts} attempts: {last}"), key=key,
                         attempts=attempts)

    def _not_sent(self, key: str, attempts: int, why: str) -> LLMResult:
        self.meter.errors += 1
        self.meter.not_sent += 1
        return LLMResult(error=self.redactor.clean(why), key=key, attempts=attempts)

    def _given_up(self) -> str:
        """Why the client stopped sending ('' while it has not): every attempt has failed for
        ``give_up_after_s`` (at least ``timeout_s``) since the last reply."""
        if self._gave_up:
            return self._gave_up
        limit = self.cfg.give_up_after_s
        if limit <= 0 or self._last_failure <= self._last_ok:
            return ""
        limit = max(limit, self.cfg.timeout_s)
        if time.monotonic() - self._last_ok < limit:
            return ""
        self._gave_up = self.redactor.clean(
            f"no endpoint has answered for {limit:g}s (llm.give_up_after_s); last error: {self._last_error}")
        self.log(f"giving up: {self._gave_up}. The requests not answered yet are recorded as failed; "
                 "a plain re-run asks them again")
        if self._stop is not None:
            self._stop.set()
        return self._gave_up

    async def _watch(self) -> None:
        """Notice a dead endpoint even while every worker is waiting (sleeping or in an attempt)."""
        while not self._given_up():
            await asyncio.sleep(0.5 if self.cfg.give_up_after_s < 30 else 2.0)

    async def _unless_given_up(self, aw: Any) -> Any:
        """``await aw``, unless the client gives up first: then None (``aw`` is cancelled)."""
        if self._given_up():
            aw.close()
            return None
        stop = self._stop
        if stop is None:
            return await aw
        task = asyncio.ensure_future(aw)
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            return None
        return task.result() if task.result() is not None else True

    def _say_hold(self, ep: Endpoint, o: _Outcome) -> None:
        """One line on screen when an endpoint is held by a Retry-After (not one per request)."""
        label = ep.label
        if o.retry_after_asked is None:
            if label not in self._bad_retry_after:
                self._bad_retry_after.add(label)
                self.log(f"{label} sent {o.retry_after_header!r}, not a finite number of seconds: ignored, "
                         "backing off instead")
            return
        hold = o.retry_after or 0.0
        capped = o.retry_after_asked > hold
        if hold < HOLD_NOTICE_S and not capped:
            return
        until = time.monotonic() + hold
        if until <= self._held_until.get(label, 0.0) + HOLD_NOTICE_S:
            return  # the same hold, already said
        self._held_until[label] = until
        line = f"{label} answered {o.reason} with {o.retry_after_header}: holding its requests for {hold:.1f}s"
        if capped:
            line += f" (it asked for {o.retry_after_asked:g}s; llm.retry_after_max_s = {self.cfg.retry_after_max_s:g})"
        self.log(line)

    async def _send(self, http: httpx.AsyncClient, ep: Endpoint, path: str, body: dict[str, Any]) -> _Outcome:
        url = ep.url + path[len("/v1"):]  # base URLs end in /v1 (or their own prefix), as in the OpenAI SDK
        where = ep.label
        clean = self.redactor.clean
        cap = int(self.cfg.max_reply_mb * 2**20)
        try:
            async with asyncio.timeout(self.cfg.timeout_s):  # the whole attempt, not each socket read
                async with http.stream("POST", url, json=body) as resp:
                    content = await _read_capped(resp, cap)
        except _TooLarge as e:
            return _Outcome(False, reason="too_large", retryable=True,
                            message=f"reply from {where} is larger than {self.cfg.max_reply_mb:g} MiB "
                            f"(llm.max_reply_mb; {e}): abandoned")
        except (TimeoutError, httpx.TimeoutException):
            return _Outcome(False, reason="timeout", retryable=True,
                            message=f"no complete reply within {self.cfg.timeout_s:g}s from {where}")
        except httpx.DecodingError as e:  # e.g. Content-Encoding: gzip on a plain body
            return _Outcome(False, reason="malformed", retryable=True,
                            message=clean(f"undecodable reply from {where} ({type(e).__name__}: {e})"))
        except httpx.HTTPError as e:  # refused, reset, dropped mid-body, protocol errors
            return _Outcome(False, reason="connection", retryable=True,
                            message=clean(f"connection to {where} failed ({type(e).__name__}: {e})"))
        status = resp.status_code
        if 200 <= status < 300:
            data = None
            try:
                data = json.loads(content)
                texts, finish, usage = parse_response(path, data, _choices(body))
            except Exception as e:  # noqa: BLE001 - any malformed reply is retried, never fatal
                said = _error_text(data)  # HTTP 200 carrying an error object (some proxies do that)
                why = f"an error object: {said}" if said else f"{type(e).__name__}: {e}"
                return _Outcome(False, reason="malformed", retryable=True,
                                message=clean(f"malformed reply from {where} ({why})"))
            secrets = [x for x in self.redactor.secrets if len(x) >= REPLY_SECRET]
            if secrets:  # a reply quoting the key: masked before it is stored or used
                data, quoted = _mask_secrets(data, secrets)
                if quoted:
                    texts, finish, usage = parse_response(path, data, _choices(body))
                    if where not in self._quoted_key:
                        self._quoted_key.add(where)
                        self.log(f"a reply from {where} quoted the API key: masked (***) before it was stored")
            return _Outcome(True, texts, finish, usage, data)
        if 300 <= status < 400:  # never followed: the key must not travel to wherever it points
            where_to = resp.headers.get("location", "")
            return _Outcome(False, reason=str(status), retryable=False, message=clean(
                f"HTTP {status} from {where}: redirect to {where_to or '(no Location)'} not followed (the key goes "
                "only to llm.base_urls: put the final URL there)"))
        message = clean(f"HTTP {status} from {where}: {_error_message(resp, content)}")
        out = _Outcome(False, reason=str(status), message=message, retryable=is_retryable_status(status),
                       setup=is_setup_error(status))
        if status == 429 and _error_code(content) in _QUOTA_CODES:
            # No money left on the account (OpenAI's 429 insufficient_quota): waiting does not help.
            out.reason, out.retryable, out.setup = "quota", False, True
            return out
        if status in (429, 503):
            out.retry_after_header = retry_after_text(resp.headers)
            out.retry_after_asked = parse_retry_after(resp.headers)
            if out.retry_after_asked is not None:
                out.retry_after = min(out.retry_after_asked, self.cfg.retry_after_max_s)
        return out


# Failures that say the endpoint is overloaded: its congestion window halves (`EndpointPool`).
_CONGESTED = frozenset({"timeout", "429", "503", "408"})


def _choices(body: dict[str, Any]) -> int:
    n = body.get("n", 1)
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1


def _mask_secrets(data: Any, secrets: Sequence[str]) -> tuple[Any, bool]:
    """``data`` with every secret in its strings replaced by ``***``; whether any was found."""
    from phi1.llm.redact import MASK

    dumped = json.dumps(data, ensure_ascii=False)
    if not any(s in dumped for s in secrets):
        return data, False
    for s in secrets:
        dumped = dumped.replace(s, MASK)
    return json.loads(dumped), True


class _TooLarge(Exception):
    pass


async def _read_capped(resp: httpx.Response, cap: int) -> bytes:
    """The (decoded) body, refusing to hold more than ``cap`` bytes of it: an endless
    chunked body or a multi-GB Content-Length is abandoned, not buffered."""
    declared = resp.headers.get("content-length", "")
    if declared.strip().isdigit() and int(declared) > cap and not resp.headers.get("content-encoding"):
        raise _TooLarge(f"Content-Length {int(declared):,}")
    chunks, size = [], 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if size > cap:
            raise _TooLarge(f"more than {cap:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


_QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached", "billing_not_active"})


def _error_code(content: bytes) -> str:
    """``error.code`` (or ``error.type``) of an OpenAI-style error body, or ''."""
    try:
        err = json.loads(content).get("error")
    except Exception:  # noqa: BLE001 - not JSON, not an object: no code
        return ""
    if not isinstance(err, dict):
        return ""
    code = err.get("code") or err.get("type") or ""
    return code if isinstance(code, str) else ""


def _error_text(data: Any) -> str:
    """The message of an error object ({"error": {"message"}}, {"error": "..."}, {"detail"}), or ''."""
    if not isinstance(data, dict):
        return ""
    err = data.get("error")
    msg = err.get("message") if isinstance(err, dict) else (err or data.get("message") or data.get("detail"))
    return str(msg) if msg else ""


def _error_message(resp: httpx.Response, content: bytes) -> str:
    """The server's own words (not yet redacted: the caller redacts, then cuts)."""
    try:
        text = content.decode(resp.encoding or "utf-8")
    except Exception:  # noqa: BLE001 - an undecodable error body still makes an error line
        return resp.reason_phrase
    try:
        data = json.loads(content)
    except Exception:  # noqa: BLE001
        data = None
    said = _error_text(data)
    if said:
        text = said
    return text if text.strip() else resp.reason_phrase


# Loopback endpoints (a local vLLM, Ollama, a test server) never go through a proxy named
# in the environment: a proxy cannot reach this host's loopback, and would see the key.
_LOOPBACK = ("all://127.0.0.1", "all://localhost", "all://[::1]")


def _is_loopback(url: str) -> bool:
    host = (urlsplit(url.strip()).hostname or "").lower()
    return host in ("localhost", "127.0.0.1", "::1")


def _http_client(headers: dict[str, str], timeout: httpx.Timeout, limits: httpx.Limits,
                 urls: Sequence[str]) -> httpx.AsyncClient:
    """The HTTP client: no redirects followed, environment proxies honoured except for
    loopback hosts; a proxy setting httpx cannot use is one line naming the variable
    (or ignored, when every endpoint is on this host and would bypass it anyway)."""
    try:
        return httpx.AsyncClient(headers=headers, timeout=timeout, limits=limits, follow_redirects=False,
                                 mounts={p: None for p in _LOOPBACK})
    except (ImportError, ValueError) as e:
        if urls and all(_is_loopback(u) for u in urls):
            return httpx.AsyncClient(headers=headers, timeout=timeout, limits=limits, follow_redirects=False,
                                     trust_env=False)
        names = [n for n in ("ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
                 if os.environ.get(n)]
        shown = ", ".join(f"{n}={_proxy_shown(os.environ[n])}" for n in names) or "the proxy settings"
        why = str(e).split(". ")[0]
        raise Phi1Error(f"the environment's proxy setting cannot be used ({shown}: {why}); unset it, "
                        "add the endpoint's host to NO_PROXY, or install httpx[socks] for a SOCKS proxy") from None


def _proxy_shown(url: str) -> str:
    """A proxy URL without its credentials."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rsplit('@', 1)[-1]}" if sep else url.rsplit("@", 1)[-1]


def _tqdm_write(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(message)


# ---------------------------------------------------------------------- sync wrappers


def run_chat(cfg: LLMConfig, cache_path: str | Path | None, requests: Sequence[ChatRequest],
             progress: bool = True, *, reask_cut: bool = False, desc: str = "llm",
             log: Callable[[str], None] | None = None) -> tuple[list[LLMResult], dict[str, Any]]:
    """Blocking `LLMClient.chat_many`: ``(results, usage)``. Not for use inside a running event loop."""
    with LLMClient(cfg, cache_path, desc=desc, log=log) as client:
        results = asyncio.run(client.chat_many(requests, progress=progress, reask_cut=reask_cut))
        return results, client.usage


def run_completions(cfg: LLMConfig, cache_path: str | Path | None, requests: Sequence[CompletionRequest],
                    progress: bool = True, *, reask_cut: bool = False, desc: str = "llm",
                    log: Callable[[str], None] | None = None) -> tuple[list[LLMResult], dict[str, Any]]:
    """Blocking `LLMClient.complete_many`: ``(results, usage)``."""
    with LLMClient(cfg, cache_path, desc=desc, log=log) as client:
        results = asyncio.run(client.complete_many(requests, progress=progress, reask_cut=reask_cut))
        return results, client.usage
