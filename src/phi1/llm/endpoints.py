"""Load balancing over several base URLs of the same model.

``least_busy`` sends each request to the endpoint with the fewest requests in
flight (ties in rotation); ``round_robin`` rotates. An endpoint that fails
``max_failures`` times in a row (5xx, 429, timeouts, dropped connections,
malformed replies) is set aside for ``cooldown_s`` while another one works; when
all are set aside the one that has rested longest gets a probe, so a single
flaky endpoint is never abandoned (the retry backoff paces it). A 429/503 with
``Retry-After`` holds new requests to that endpoint until the time is up.

An endpoint that refuses the setup itself (401/403 a key, 404 a model or a
path, 407 a proxy) ``SETUP_ERRORS`` times in a row is *broken*: nothing more is
sent to it in this run. When every endpoint is broken, `acquire` raises
`EndpointsBroken` at once, so a wrong key or model name ends the run after a
few requests, not after all of them. (One such answer alone is not enough: a
firewall in front of an endpoint may refuse one prompt with a 403.)

Each endpoint has a congestion window (with ``max_in_flight``): how many
requests it may have in flight, at most ``max_in_flight``. It starts at
``SLOW_START`` and grows by one with each reply (doubling each round trip)
until the first sign of overload (a timeout, 429, 503, 408), which halves it (down
to ``MIN_WINDOW`` at least), once per round trip (only an attempt sent after the
last cut can cut again); from then on it grows by about one per window of
replies (slow start, then AIMD, as TCP does). A
client configured for 500 requests in flight against a server that serves 10
at a time settles near 10, instead of queueing hundreds of requests on the
server until they time out there and are sent, and paid for, twice.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit, urlunsplit


@dataclass
class Endpoint:
    url: str  # base URL without a trailing slash, e.g. http://host:8000/v1
    in_flight: int = 0
    failures: int = 0  # consecutive
    cooldown_until: float = 0.0
    not_before: float = 0.0  # honour Retry-After for every request to it
    sent: int = 0
    ok: int = 0
    broken: str = ""  # why nothing more is sent to it (a 401/403/404 answer, redacted)
    window: float = 0.0  # congestion window: requests it may have in flight (0: no window)
    threshold: float = float("inf")  # slow start below it (the window doubles each round trip), then +1
    last_cut: float = float("-inf")  # when the window was last halved
    setup_errors: int = 0  # 401/403/404/407 answers in a row

    @property
    def label(self) -> str:
        """The URL without credentials, for logs and manifests."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))


def normalize_base_url(url: str) -> str:
    """``http://h:8000/v1/`` and ``http://h:8000/v1`` are the same endpoint."""
    return url.strip().rstrip("/")


SLOW_START = 8  # the first window of an endpoint: it doubles with each round trip of replies
MIN_WINDOW = 4  # the window never shrinks below this (or below max_in_flight when smaller)
SETUP_ERRORS = 3  # setup refusals in a row (no reply between) that break an endpoint


class EndpointsBroken(Exception):
    """Every endpoint refused the setup (a key, a model name): nothing can be sent."""


class EndpointPool:
    def __init__(
        self,
        urls: list[str],
        strategy: str = "least_busy",
        max_failures: int = 3,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        max_in_flight: int = 0,
    ):
        if not urls:
            raise ValueError("no base URLs")
        first = float(min(max_in_flight, SLOW_START))
        self.endpoints = [Endpoint(normalize_base_url(u), window=first) for u in urls]
        self.max_in_flight = max_in_flight
        self._freed: asyncio.Event | None = None  # set when a request ends (a window slot may be free)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.strategy = strategy
        self.max_failures = max_failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._turn = 0

    def _rotation(self) -> list[Endpoint]:
        n = len(self.endpoints)
        order = [self.endpoints[(self._turn + i) % n] for i in range(n)]
        self._turn = (self._turn + 1) % n
        return order

    def pick(self) -> Endpoint | None:
        """An endpoint to send to now, or None while every one is held by Retry-After."""
        now = self._clock()
        open_ = [e for e in self._rotation() if e.not_before <= now and not e.broken
                 and (not e.window or e.in_flight < max(1, int(e.window)))]
        if not open_:
            return None
        healthy = [e for e in open_ if e.cooldown_until <= now]
        if not healthy:  # all set aside: probe the one that has rested longest
            return min(open_, key=lambda e: e.cooldown_until)
        if self.strategy == "round_robin":
            return healthy[0]
        return min(healthy, key=lambda e: e.in_flight)  # min keeps the first of ties: rotation

    @property
    def all_broken(self) -> str:
        """The first endpoint's reason when every endpoint is broken, else ''."""
        return self.endpoints[0].broken if all(e.broken for e in self.endpoints) else ""

    def setup_error(self, ep: Endpoint, why: str) -> bool:
        """``ep`` refused the setup (401/403/404/407); True when that breaks it (to say it once)."""
        ep.setup_errors += 1
        if ep.broken or ep.setup_errors < SETUP_ERRORS:
            return False
        ep.broken = why
        return True

    def others(self, ep: Endpoint) -> bool:
        """Whether an endpoint other than ``ep`` can still be sent to."""
        return any(e is not ep and not e.broken for e in self.endpoints)

    async def acquire(self) -> Endpoint:
        while True:
            if self.all_broken:
                raise EndpointsBroken(self.all_broken)
            ep = self.pick()
            if ep is not None:
                ep.in_flight += 1
                ep.sent += 1
                return ep
            wait = min(e.not_before for e in self.endpoints if not e.broken) - self._clock()
            loop = asyncio.get_running_loop()
            if self._freed is None or self._loop is not loop:
                self._freed, self._loop = asyncio.Event(), loop
            self._freed.clear()
            # a window slot frees when a request ends; a Retry-After hold ends at its time
            try:
                await asyncio.wait_for(self._freed.wait(), timeout=max(wait, 0.001) if wait > 0 else 1.0)
            except TimeoutError:
                pass

    def release(self, ep: Endpoint, *, ok: bool, endpoint_fault: bool, retry_after: float | None = None,
                congested: bool = False, started: float | None = None) -> None:
        """``endpoint_fault``: the failure says something about the endpoint
        (not about the request, as a 400 does); ``congested``: it says the
        endpoint is overloaded (``started``: when that attempt was sent)."""
        ep.in_flight -= 1
        now = self._clock()
        if ep.window:
            if ok:
                grow = 1.0 if ep.window < ep.threshold else 1.0 / ep.window
                ep.window = min(float(self.max_in_flight), ep.window + grow)
            elif congested and (started is None or started >= ep.last_cut):
                ep.window = ep.threshold = max(float(min(self.max_in_flight, MIN_WINDOW)), ep.window / 2)
                ep.last_cut = now
        if self._freed is not None:
            self._freed.set()
        if retry_after:
            ep.not_before = max(ep.not_before, now + retry_after)
        if ok:
            ep.ok += 1
            ep.setup_errors = 0
            ep.failures = 0
            ep.cooldown_until = 0.0
        elif endpoint_fault:
            ep.failures += 1
            if ep.failures >= self.max_failures and len(self.endpoints) > 1:
                ep.cooldown_until = now + self.cooldown_s

    def stats(self) -> list[dict[str, object]]:
        return [{"endpoint": e.label, "sent": e.sent, "ok": e.ok, **({"broken": e.broken} if e.broken else {})}
                for e in self.endpoints]
