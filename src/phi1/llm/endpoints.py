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
    ):
        if not urls:
            raise ValueError("no base URLs")
        self.endpoints = [Endpoint(normalize_base_url(u)) for u in urls]
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
        open_ = [e for e in self._rotation() if e.not_before <= now and not e.broken]
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
            await asyncio.sleep(max(wait, 0.001))

    def release(self, ep: Endpoint, *, ok: bool, endpoint_fault: bool, retry_after: float | None = None) -> None:
        """``endpoint_fault``: the failure says something about the endpoint
        (not about the request, as a 400 does)."""
        ep.in_flight -= 1
        now = self._clock()
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
