"""Keeping secrets out of every text the LLM client lets go of.

Error texts come from servers (which quote the key they received), from
httpx (which may quote a header or a URL) and from our own messages. Each goes
through `Redactor.clean` — redact *first*, then fold to one line, then cut —
before it reaches a result, a file, the screen, a log or an exception: a key
can never straddle a cut, because the cut only ever sees ``***``.

The HTTP libraries log too: at DEBUG, httpcore logs every response's
headers (a server may echo the key there) and httpx logs URLs (which may
carry a key in their query). `redacting_logs` redacts their records while
the client sends.

Besides the whole secret, any run of ``FRAGMENT`` or more of its characters
is redacted (for secrets at least ``2 * FRAGMENT`` long): a text that someone
else already cut (an httpx message, a proxy's error page) keeps no usable
piece of the key either.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterable, Iterator

MASK = "***"
ERROR_CHARS = 300  # one error line, as stored in results, labels and manifests
FRAGMENT = 8  # shortest piece of a secret that is redacted on its own
MIN_SECRET = 4  # shorter "secrets" (e.g. a placeholder key "x") are not worth masking


class Redactor:
    """``clean(text)`` -> one redacted line of at most ``ERROR_CHARS`` characters."""

    def __init__(self, secrets: Iterable[str | None] = ()):
        found = {s for s in secrets if s and len(s) >= MIN_SECRET}
        self.secrets = sorted(found, key=len, reverse=True)  # longest first: no partial overlap left
        self._pieces = {s[i:i + FRAGMENT] for s in self.secrets if len(s) >= 2 * FRAGMENT
                        for i in range(len(s) - FRAGMENT + 1)}

    def redact(self, text: str) -> str:
        """``text`` with every secret and every long-enough piece of one replaced by ``***``."""
        if not self.secrets or not text:
            return text
        for s in self.secrets:
            text = text.replace(s, MASK)
        if not self._pieces or len(text) < FRAGMENT:
            return text
        covered = bytearray(len(text))
        for i in range(len(text) - FRAGMENT + 1):
            if text[i:i + FRAGMENT] in self._pieces:
                covered[i:i + FRAGMENT] = b"\x01" * FRAGMENT
        if not any(covered):
            return text
        out, i = [], 0
        while i < len(text):
            if covered[i]:
                while i < len(text) and covered[i]:
                    i += 1
                out.append(MASK)
            else:
                out.append(text[i])
                i += 1
        return "".join(out)

    def clean(self, text: str, limit: int = ERROR_CHARS) -> str:
        """Redact, fold whitespace to single spaces, then cut to ``limit`` characters."""
        return one_line(self.redact(text), limit)


def one_line(text: str, limit: int = ERROR_CHARS) -> str:
    """``text`` on one line (whitespace folded), cut to ``limit`` characters with an ellipsis.

    Only call this on text that is already redacted (`Redactor.clean` does both).
    """
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# The loggers httpx and httpcore write to (a filter on a parent logger does not
# see its children's records, so each is named).
HTTP_LOGGERS = ("httpx", "httpcore", "httpcore.http11", "httpcore.http2", "httpcore.connection",
                "httpcore.connection_pool", "httpcore.proxy", "httpcore.socks")


class _RedactingFilter(logging.Filter):
    def __init__(self, redactor: Redactor):
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redactor.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


@contextlib.contextmanager
def redacting_logs(redactor: Redactor, names: Iterable[str] = HTTP_LOGGERS) -> Iterator[None]:
    """Redact the records of the HTTP libraries' loggers while inside."""
    if not redactor.secrets:
        yield
        return
    filt = _RedactingFilter(redactor)
    loggers = [logging.getLogger(n) for n in names]
    for lg in loggers:
        lg.addFilter(filt)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(filt)
