"""A real OpenAI-compatible HTTP server for tests, with fault injection.

It listens on 127.0.0.1 (a free port), serves ``POST /v1/chat/completions``,
``POST /v1/completions`` and ``GET /v1/models`` from a thread, answers
deterministically from a pluggable *responder*, and records every request it
receives together with what it did to it (``outcome``), so a test can assert
that each distinct request was answered successfully exactly once::

    from helpers.openai_server import OpenAIServer, Fault

    with OpenAIServer(responder=lambda req: "Educational score: 3",
                      per_request_faults=[Fault.too_many(0.01), Fault.drop()]) as srv:
        cfg = LLMConfig(base_urls=[srv.base_url], model="m", api_key_env="")
        ...
        assert set(srv.ok_counts().values()) == {1}

Fault injection (a request gets at most one fault; checked in this order):

* ``rules=[(predicate, Fault)]`` — every request matching ``predicate(req)``
  gets the fault, every time (e.g. a permanent 400 for one prompt);
* ``srv.inject(*faults)`` — a FIFO queue: the next arriving requests get these
  faults, one each (e.g. a burst of ten 429s);
* ``per_request_faults=[f1, f2]`` — the 1st arrival of each distinct body gets
  ``f1``, the 2nd ``f2``, the 3rd is answered: every request fails k times
  and then succeeds, whatever the arrival order;
* ``fault_rate=p`` with ``fault_kinds`` — seeded random faults;
* ``max_in_flight=n`` — a request arriving while n are being served gets 429
  (a server-side concurrency limit, like a real provider's).

Fault kinds (``Fault.kind``): ``"429"`` (with ``Retry-After``: any value,
``"inf"`` and ``"3600"`` included), ``"500"``, ``"503"``, ``"400"``, ``"401"``,
``"error"`` (any status with any message and headers, e.g. one quoting the
key at a given offset; ``Fault.redirect(url)``: a 307 with a ``Location``),
``"slow"`` (wait ``delay`` seconds, then hang up without a reply: a
reply never arrives), ``"slow_ok"`` (wait ``delay``, then answer normally),
``"trickle"`` (a complete, valid reply sent one byte every ``delay`` seconds:
each socket read succeeds, the whole reply takes minutes), ``"malformed"``
(HTTP 200 whose body is not valid JSON), ``"undecodable"`` (a valid JSON body
sent with ``Content-Encoding: gzip``: it cannot be decoded), ``"shape"`` (the
valid reply passed through ``transform``: wrong-typed usage, missing fields,
any JSON at all), ``"no_usage"`` (a valid reply without ``usage``), ``"cut"``
(the reply cut in half with ``finish_reason: "length"``), ``"drop"`` (headers
and half the body, then the connection is closed), ``"hangup"`` (the
connection is closed before any byte of a reply). A rule's fault may also be
a function of the request (``rules=[(pred, lambda req: Fault.error(...))]``).

Replies longer than the request's ``max_tokens`` are cut to it and end with
``finish_reason: "length"``, as a real server does.

Run it by hand (e.g. to point ``phi1 run`` at it)::

    python tests/helpers/openai_server.py --port 8000 --fault-rate 0.3 --score-replies
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import signal
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urlsplit

ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}
FAULT_KINDS = ("429", "500", "503", "400", "401", "error", "slow", "slow_ok", "trickle", "malformed",
               "undecodable", "shape", "no_usage", "cut", "drop", "hangup")
# Faults a well-behaved client must retry (what `fault_rate` draws from by default).
RETRYABLE_KINDS = ("429", "500", "503", "slow", "malformed", "drop", "hangup")


@dataclass(frozen=True)
class Fault:
    """One injected failure. ``retry_after`` is sent with 429/503 as given
    (seconds, or any string: ``"inf"``, an HTTP date); ``headers`` are extra
    response headers; ``delay`` is how long ``slow``/``slow_ok`` wait (and the
    pause between bytes of ``trickle``); ``status``/``message`` make an
    ``error``; ``transform(payload) -> JSON value`` makes a ``shape``."""

    kind: str
    retry_after: float | str | None = None
    delay: float = 2.0
    status: int = 0
    message: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    transform: Callable[[dict[str, Any]], Any] | None = None
    code: str | None = None  # the error body's "code" (an ``error``), e.g. "insufficient_quota"

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; kinds: {', '.join(FAULT_KINDS)}")

    @classmethod
    def too_many(cls, retry_after: float | str | None = 0.05, **headers: str) -> "Fault":
        """429; ``retry_after_ms="..."`` etc. add headers (underscores become dashes)."""
        return cls("429", retry_after=retry_after,
                   headers=tuple((k.replace("_", "-"), v) for k, v in headers.items()))

    @classmethod
    def server_error(cls, status: int = 500) -> "Fault":
        return cls(str(status))

    @classmethod
    def bad_request(cls) -> "Fault":
        return cls("400")

    @classmethod
    def error(cls, status: int, message: str, code: str | None = None) -> "Fault":
        """An OpenAI-style error body with this message (e.g. one quoting the key) and code."""
        return cls("error", status=status, message=message, code=code)

    @classmethod
    def redirect(cls, location: str, status: int = 307) -> "Fault":
        """A redirect (an ``error`` with a ``Location`` header): a client must not follow it with the key."""
        return cls("error", status=status, message=f"moved to {location}", headers=(("Location", location),))

    @classmethod
    def slow(cls, delay: float = 2.0) -> "Fault":
        return cls("slow", delay=delay)

    @classmethod
    def trickle(cls, delay: float = 0.05) -> "Fault":
        return cls("trickle", delay=delay)

    @classmethod
    def malformed(cls) -> "Fault":
        return cls("malformed")

    @classmethod
    def undecodable(cls) -> "Fault":
        return cls("undecodable")

    @classmethod
    def shape(cls, transform: Callable[[dict[str, Any]], Any]) -> "Fault":
        return cls("shape", transform=transform)

    @classmethod
    def wrong_usage(cls, usage: Any = None) -> "Fault":
        """A valid reply whose ``usage`` is ``usage`` (default ``{"prompt_tokens": [12], ...}``)."""
        bad = usage if usage is not None else {"prompt_tokens": [12], "completion_tokens": 3, "total_tokens": 15}
        return cls.shape(lambda payload: {**payload, "usage": bad})

    @classmethod
    def no_usage(cls) -> "Fault":
        return cls("no_usage")

    @classmethod
    def cut(cls) -> "Fault":
        return cls("cut")

    @classmethod
    def drop(cls) -> "Fault":
        return cls("drop")

    @classmethod
    def hangup(cls) -> "Fault":
        return cls("hangup")


@dataclass
class ServerRequest:
    """One request as the server received it, and what the server did."""

    seq: int  # arrival order, from 0
    endpoint: str  # "chat" | "completions"
    body: dict[str, Any]
    headers: dict[str, str]
    key: str  # sha256 of the canonical body: identical requests share it
    attempt: int  # 1 for the first arrival of this body, 2 for the second, ...
    received_at: float  # time.monotonic()
    outcome: str = "pending"  # "ok", or the fault kind that was applied
    status: int = 0  # HTTP status sent (0: none)
    prompt_tokens: int = 0  # billed when answered
    completion_tokens: int = 0
    body_bytes: int = 0  # length of the reply body the server meant to send
    sent_bytes: int = 0  # how much of it went out before the client hung up (trickle)

    @property
    def prompt_text(self) -> str:
        """The prompt as one string: chat messages' contents joined, or the completion prompt."""
        if self.endpoint == "chat":
            return "\n".join(_content_text(m.get("content")) for m in self.body.get("messages") or [])
        p = self.body.get("prompt", "")
        return "\n".join(p) if isinstance(p, list) else str(p)

    @property
    def last_user_message(self) -> str:
        for m in reversed(self.body.get("messages") or []):
            if m.get("role") == "user":
                return _content_text(m.get("content"))
        return self.prompt_text


Responder = Callable[[ServerRequest], "str | list[str] | dict[str, Any]"]
FaultRule = "Fault | Callable[[ServerRequest], Fault | None]"


def _content_text(content: Any) -> str:
    if isinstance(content, list):  # multi-part content: keep the text parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def count_tokens(text: str) -> int:
    """The server's deterministic token count (about 4 characters a token)."""
    return max(1, math.ceil(len(text) / 4))


def echo_responder(req: ServerRequest) -> str:
    """Default reply: deterministic, different for every distinct request."""
    return f"reply-{req.key[:16]}"


def score_responder(score_of: Callable[[str], Any] | None = None) -> Responder:
    """Replies like an annotating teacher: a short justification and
    ``Educational score: N``. ``score_of(prompt_text)`` picks N (default: a
    stable hash of the prompt modulo 6)."""

    def respond(req: ServerRequest) -> str:
        text = req.last_user_message
        score = score_of(text) if score_of else int(hashlib.sha256(text.encode()).hexdigest(), 16) % 6
        return f"The code is readable and shows basic concepts.\nEducational score: {score}"

    return respond


def canonical_key(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# --------------------------------------------------------------------------- server


class OpenAIServer:
    """See the module docstring. Start with ``with OpenAIServer(...) as srv`` or
    ``srv.start()`` / ``srv.stop()``; ``srv.base_url`` ends in ``/v1``."""

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        rules: Iterable[tuple[Callable[[ServerRequest], bool], Any]] = (),
        per_request_faults: Iterable[Fault] = (),
        fault_rate: float = 0.0,
        fault_kinds: Iterable[str] = RETRYABLE_KINDS,
        slow_delay: float = 2.0,
        retry_after: float | None = 0.05,
        max_in_flight: int = 0,
        api_key: str | None = None,
        latency: float = 0.0,
        seed: int = 0,
        port: int = 0,
        model: str = "test-model",
    ):
        self.responder = responder or echo_responder
        self.rules = list(rules)
        self.per_request_faults = list(per_request_faults)
        self.fault_rate = fault_rate
        self.fault_kinds = tuple(fault_kinds)
        for k in self.fault_kinds:
            Fault(k)  # validate
        self.slow_delay = slow_delay
        self.retry_after = retry_after
        self.max_in_flight = max_in_flight
        self.api_key = api_key
        self.latency = latency
        self.model = model
        self._rng = random.Random(seed)
        self._port = port
        self._lock = threading.Lock()
        self._queue: list[Fault] = []
        self._requests: list[ServerRequest] = []
        self._attempts: Counter[str] = Counter()
        self._in_flight = 0
        self.peak_in_flight = 0
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> "OpenAIServer":
        httpd = _HTTPServer(("127.0.0.1", self._port), _Handler)
        httpd.owner = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"openai-server-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes handlers sleeping in a slow fault
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "OpenAIServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # ------------------------------------------------------------ control & inspection

    def inject(self, *faults: Fault) -> None:
        """Queue faults for the next arriving requests (one each, in order)."""
        with self._lock:
            self._queue.extend(faults)

    def clear_faults(self) -> None:
        with self._lock:
            self._queue.clear()
        self.rules.clear()
        self.per_request_faults.clear()
        self.fault_rate = 0.0

    @property
    def requests(self) -> list[ServerRequest]:
        """Every request received so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    def reset_log(self) -> None:
        """Forget recorded requests (attempt counters too)."""
        with self._lock:
            self._requests.clear()
            self._attempts.clear()

    def ok_counts(self) -> Counter[str]:
        """Successful answers per distinct request body (key -> count)."""
        return Counter(r.key for r in self.requests if r.outcome == "ok")

    def ok_requests(self) -> list[ServerRequest]:
        return [r for r in self.requests if r.outcome == "ok"]

    def outcomes(self) -> Counter[str]:
        return Counter(r.outcome for r in self.requests)

    def usage_total(self) -> dict[str, int]:
        """Tokens the server billed for successful answers."""
        prompt = completion = 0
        for r in self.ok_requests():
            prompt += r.prompt_tokens
            completion += r.completion_tokens
        return {"prompt_tokens": prompt, "completion_tokens": completion}

    # ------------------------------------------------------------ request handling

    def _register(self, endpoint: str, body: dict[str, Any], headers: dict[str, str]) -> ServerRequest:
        key = canonical_key(body)
        with self._lock:
            self._attempts[key] += 1
            req = ServerRequest(len(self._requests), endpoint, body, headers, key,
                                self._attempts[key], time.monotonic())
            self._requests.append(req)
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
            over = self.max_in_flight and self._in_flight > self.max_in_flight
        if over:
            req.outcome = "over_capacity"
        return req

    def _done(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _choose_fault(self, req: ServerRequest) -> Fault | None:
        for predicate, fault in self.rules:
            if predicate(req):
                made = fault if isinstance(fault, Fault) else fault(req)
                if made is not None:
                    return made
        with self._lock:
            if self._queue:
                return self._queue.pop(0)
            if req.attempt <= len(self.per_request_faults):
                return self.per_request_faults[req.attempt - 1]
            if self.fault_rate and self._rng.random() < self.fault_rate:
                kind = self._rng.choice(self.fault_kinds)
                return Fault(kind, retry_after=self.retry_after, delay=self.slow_delay)
        return None

    def _answer(self, req: ServerRequest, cut: bool = False) -> dict[str, Any]:
        reply = self.responder(req)
        if isinstance(reply, dict):
            return reply
        n = int(req.body.get("n") or 1)
        texts = list(reply) if isinstance(reply, list) else [reply] * n
        limit = req.body.get("max_tokens") or req.body.get("max_completion_tokens")
        finishes = []
        for i, t in enumerate(texts):
            if cut:  # a reply cut mid-way, whatever the limit
                texts[i], reason = t[: max(1, len(t) // 2)], "length"
            elif limit and count_tokens(t) > int(limit):  # the server stops at max_tokens
                texts[i], reason = t[: 4 * int(limit)], "length"
            else:
                reason = "length" if limit and count_tokens(t) == int(limit) else "stop"
            finishes.append(reason)
        prompt_tokens = count_tokens(req.prompt_text)
        completion_tokens = sum(count_tokens(t) for t in texts)
        req.prompt_tokens, req.completion_tokens = prompt_tokens, completion_tokens
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        created = int(time.time())
        if req.endpoint == "chat":
            choices = [{"index": i, "message": {"role": "assistant", "content": t},
                        "finish_reason": f} for i, (t, f) in enumerate(zip(texts, finishes))]
            return {"id": f"chatcmpl-{req.seq}", "object": "chat.completion", "created": created,
                    "model": req.body.get("model", self.model), "choices": choices, "usage": usage}
        choices = [{"index": i, "text": t, "logprobs": None, "finish_reason": f}
                   for i, (t, f) in enumerate(zip(texts, finishes))]
        return {"id": f"cmpl-{req.seq}", "object": "text_completion", "created": created,
                "model": req.body.get("model", self.model), "choices": choices, "usage": usage}


def _bad_key_message(auth: str) -> str:
    # Real providers quote the key they received; a client must not pass that on.
    return f"Incorrect API key provided: {auth.removeprefix('Bearer ')}"


def _error_body(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a slow handler never blocks shutdown
    request_queue_size = 256  # the default 5 drops connection bursts from a concurrent client


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
    server_version = "phi1-test-openai/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    @property
    def owner(self) -> OpenAIServer:
        return self.server.owner  # type: ignore[attr-defined]

    # ---------------------------------------------------------------- plumbing

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self._send_raw(status, data, headers)

    def _send_raw(self, status: int, data: bytes, headers: dict[str, str] | None = None,
                  truncate: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if truncate:  # announce the full length, send half, hang up
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self._hang_up()
            return
        self.wfile.write(data)
        self.wfile.flush()

    def _send_trickle(self, req: ServerRequest, data: bytes, delay: float) -> None:
        """Headers at once, then the body one byte every ``delay`` seconds."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.flush()
        req.body_bytes = len(data)
        stop = self.owner._stop
        for i in range(len(data)):
            if stop.wait(delay):
                self._hang_up()
                return
            req.sent_bytes = i + 1  # counted before the client can see it (a test reads it once the reply is in)
            try:
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
            except OSError:
                req.sent_bytes = i
                raise

    def _hang_up(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # ---------------------------------------------------------------- routes

    def do_GET(self) -> None:  # noqa: N802
        if urlsplit(self.path).path == "/v1/models":
            self._send_json(200, {"object": "list", "data": [{"id": self.owner.model, "object": "model"}]})
        else:
            self._send_json(404, _error_body(f"no route GET {self.path}", "not_found"))

    def do_POST(self) -> None:  # noqa: N802
        owner = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        endpoint = ENDPOINTS.get(urlsplit(self.path).path)
        if endpoint is None:
            self._send_json(404, _error_body(f"no route POST {self.path}", "not_found"))
            return
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("body is not a JSON object")
        except ValueError as e:
            self._send_json(400, _error_body(f"invalid JSON body: {e}", "invalid_request_error"))
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        req = owner._register(endpoint, body, headers)
        try:
            self._serve(owner, req)
        except (BrokenPipeError, ConnectionResetError):
            # The client went away (e.g. it timed out); what we meant to send is in req.outcome.
            if req.outcome == "ok":
                req.outcome = "ok_unsent"
            self.close_connection = True
        finally:
            owner._done()

    def _serve(self, owner: OpenAIServer, req: ServerRequest) -> None:
        if req.outcome == "over_capacity":
            req.status = 429
            self._send_json(429, _error_body("too many concurrent requests", "requests", "rate_limit_exceeded"),
                            {"Retry-After": str(owner.retry_after or 0.05)})
            return
        if owner.api_key is not None:
            auth = req.headers.get("authorization", "")
            if auth != f"Bearer {owner.api_key}":
                req.outcome, req.status = "401", 401
                self._send_json(401, _error_body(_bad_key_message(auth), "invalid_request_error",
                                                 "invalid_api_key"))
                return
        if "model" not in req.body:
            req.outcome, req.status = "400", 400
            self._send_json(400, _error_body("you must provide a model parameter", "invalid_request_error"))
            return
        fault = owner._choose_fault(req)
        if owner.latency and (fault is None or fault.kind not in ("slow", "slow_ok")):
            owner._stop.wait(owner.latency)
        if fault is None or fault.kind == "slow_ok":
            if fault is not None:
                owner._stop.wait(fault.delay)
            payload = owner._answer(req)
            req.outcome, req.status = "ok", 200
            self._send_json(200, payload)
            return
        req.outcome = fault.kind
        kind = fault.kind
        if kind in ("429", "503"):
            req.status = int(kind)
            headers = dict(fault.headers)
            ra = fault.retry_after if fault.retry_after is not None else owner.retry_after
            if ra is not None:
                headers["Retry-After"] = ra if isinstance(ra, str) else f"{ra:g}"
            msg = "Rate limit reached for requests" if kind == "429" else "The server is overloaded"
            self._send_json(req.status, _error_body(msg, "requests" if kind == "429" else "server_error",
                                                    "rate_limit_exceeded" if kind == "429" else None), headers)
        elif kind in ("500", "400", "401"):
            req.status = int(kind)
            msg = {"500": "The server had an error while processing your request",
                   "400": "This request is invalid (injected 400)",
                   "401": _bad_key_message(req.headers.get("authorization", ""))}[kind]
            self._send_json(req.status, _error_body(msg, "server_error" if kind == "500" else "invalid_request_error"))
        elif kind == "error":
            req.status = fault.status
            self._send_json(fault.status, _error_body(fault.message, "invalid_request_error", fault.code),
                            dict(fault.headers))
        elif kind == "slow":
            owner._stop.wait(fault.delay)
            self._hang_up()
        elif kind == "trickle":
            req.status = 200
            self._send_trickle(req, json.dumps(owner._answer(req)).encode(), fault.delay)
        elif kind == "undecodable":
            req.status = 200
            self._send_raw(200, json.dumps(owner._answer(req)).encode(), {"Content-Encoding": "gzip"})
        elif kind == "shape":
            req.status = 200
            assert fault.transform is not None
            shaped = fault.transform(owner._answer(req))
            self._send_raw(200, shaped if isinstance(shaped, bytes) else json.dumps(shaped).encode())
        elif kind == "no_usage":
            req.status = 200
            payload = owner._answer(req)
            payload.pop("usage", None)
            req.prompt_tokens = req.completion_tokens = 0
            self._send_json(200, payload)
        elif kind == "cut":
            req.status = 200
            self._send_json(200, owner._answer(req, cut=True))
        elif kind == "malformed":
            req.status = 200
            self._send_raw(200, b'{"id": "chatcmpl-broken", "choices": [{"index": 0, "message": ')
        elif kind == "drop":
            req.status = 200
            payload = owner._answer(req)
            self._send_raw(200, json.dumps(payload).encode(), truncate=True)
        elif kind == "hangup":
            self._hang_up()


# --------------------------------------------------------------------------- pytest


def _make_fixture():  # pragma: no cover - trivial wiring
    import pytest

    @pytest.fixture
    def openai_server_factory() -> Iterator[Callable[..., OpenAIServer]]:
        """``make(**OpenAIServer kwargs) -> started server``; all stopped at teardown."""
        servers: list[OpenAIServer] = []

        def make(*args: Any, **kwargs: Any) -> OpenAIServer:
            srv = OpenAIServer(*args, **kwargs).start()
            servers.append(srv)
            return srv

        yield make
        for s in servers:
            s.stop()

    return openai_server_factory


try:  # importing this module into a test file registers the fixture there
    openai_server_factory = _make_fixture()
except ImportError:  # pragma: no cover - used outside pytest
    pass


# --------------------------------------------------------------------------- by hand


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="OpenAI-compatible test server with fault injection")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--fault-rate", type=float, default=0.0)
    ap.add_argument("--fault-kinds", default=",".join(RETRYABLE_KINDS))
    ap.add_argument("--slow-delay", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--api-key", default=None, help="require this bearer key")
    ap.add_argument("--score-replies", action="store_true", help="answer like an annotating teacher")
    args = ap.parse_args(argv)
    srv = OpenAIServer(score_responder() if args.score_replies else None, fault_rate=args.fault_rate,
                       fault_kinds=[k for k in args.fault_kinds.split(",") if k], slow_delay=args.slow_delay,
                       seed=args.seed, port=args.port, api_key=args.api_key)
    srv.start()
    print(f"listening on {srv.base_url}  (Ctrl-C or SIGTERM to stop)", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
        oc = srv.outcomes()
        dup = sum(1 for c in srv.ok_counts().values() if c > 1)
        print(f"{len(srv.requests)} requests: {dict(oc)}; distinct answered: {len(srv.ok_counts())}; "
              f"answered more than once: {dup}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
