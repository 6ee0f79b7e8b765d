"""Which failures are retried, and how long to wait before the next try."""

from __future__ import annotations

import math
import random
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Mapping

# What the OpenAI SDK retries too: request timeout, conflict, rate limit, server errors.
RETRYABLE_STATUS = frozenset({408, 409, 429})


# The endpoint refuses the request itself (too long a prompt, a bad parameter):
# asking again, now or in a later run, gets the same answer. Other refusals
# (401/403 keys, 404 model names) are about the setup, which a user fixes and
# then re-runs: those stay "failed", so a re-run asks again.
REJECTED_STATUS = frozenset({400, 413, 422})


# The endpoint refuses the setup, whatever the request: a key (401/403), a model
# name or path (404), a proxy's credentials (407). Every other request would get
# the same answer, so that endpoint gets nothing more in this run.
SETUP_STATUS = frozenset({401, 403, 404, 407})


def is_setup_error(status: int) -> bool:
    return status in SETUP_STATUS


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUS or status >= 500


def is_rejection(status: int) -> bool:
    return status in REJECTED_STATUS


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random,
                  retry_after: float | None = None) -> float:
    """Seconds to sleep before retry number ``attempt`` (0-based).

    Exponential backoff with full jitter (AWS architecture blog): uniform in
    [0, min(cap, base * 2^attempt)], which spreads a burst of clients that
    all failed at once. A server's Retry-After is a floor: it knows best.
    """
    delay = rng.uniform(0, min(cap, base * (2 ** attempt)))
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def _seconds(value: str, scale: float = 1.0) -> float | None:
    """A finite, non-negative number of seconds, or None (``inf``, ``nan``,
    ``-3``, ``1e400`` and words are not waits a server can mean)."""
    try:
        seconds = float(value.strip()) * scale
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` (OpenAI) or ``Retry-After`` (seconds or
    an HTTP date); None when absent or not a finite, non-negative wait. The
    caller caps it (`LLMConfig.retry_after_max_s`)."""
    ms = headers.get("retry-after-ms")
    if ms:
        seconds = _seconds(ms, 1 / 1000)
        if seconds is not None:
            return seconds
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _seconds(value)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def retry_after_text(headers: Mapping[str, str]) -> str | None:
    """The raw header, for the on-screen notice (uncut: the notice is redacted, then cut)."""
    if headers.get("retry-after-ms"):
        return f"retry-after-ms: {headers['retry-after-ms']}"
    if headers.get("retry-after"):
        return f"Retry-After: {headers['retry-after']}"
    return None
