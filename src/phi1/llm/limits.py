"""Requests-per-minute and tokens-per-minute limits as async token buckets."""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable


class RateLimiter:
    """A token bucket refilled at ``per_minute / 60`` units a second.

    ``capacity`` (default: one second's worth, at least one unit) is the
    largest burst. ``acquire(n)`` waits until the bucket holds ``n`` (or is
    full, for a request bigger than the bucket), then takes ``n``; the level
    may go negative, so an oversized request delays those after it instead of
    starving. ``adjust(delta)`` gives back (or takes more) once the real cost
    is known: token estimates are corrected with the reply's usage. Waiters
    are served in arrival order. ``per_minute = 0`` means unlimited.
    """

    def __init__(
        self,
        per_minute: float,
        capacity: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self.rate = per_minute / 60.0
        self.capacity = capacity if capacity is not None else max(1.0, self.rate)
        self.level = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._lock: asyncio.Lock | None = None  # made in the loop that uses it (asyncio.run makes a new one)
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0

    def _refill(self) -> None:
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self, amount: float = 1.0) -> None:
        if self.unlimited:
            return
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop = asyncio.Lock(), loop
        async with self._lock:  # FIFO: one waiter at a time drains the bucket
            need = min(amount, self.capacity)
            while True:
                self._refill()
                if self.level >= need:
                    self.level -= amount
                    return
                await self._sleep((need - self.level) / self.rate)

    def adjust(self, delta: float) -> None:
        """Positive: give back over-estimated units; negative: charge more."""
        if self.unlimited:
            return
        self._refill()
        self.level = min(self.capacity, self.level + delta)
