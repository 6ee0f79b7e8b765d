"""SQLite response cache: one row per successful reply, keyed by the request.

Each reply is committed as soon as it arrives (WAL mode), so a run killed at
any point keeps every reply it received: the re-run sends only what is
missing, and a finished run re-run costs nothing. Only successful replies are
stored (errors are retried on the next run). The cache holds request and reply
bodies, never headers, so no API key ever reaches it.

Every SQLite failure is a `Phi1Error` naming the file, never a traceback: a
file that is not a database or is damaged stops the run before anything is
sent (its replies were paid for: it is never replaced or emptied; SQLite's
``.recover`` can usually save them); a write that fails (a full disk, a
read-only file) stops the run with the replies already committed kept. A
single row whose reply cannot be read back (damaged text, not a JSON object)
is left out of `get_many` and counted in ``unreadable``: the caller says so
and asks that request again.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable

from phi1.errors import Phi1Error
from phi1.files import jsonl_line

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key      TEXT PRIMARY KEY,
    url      TEXT NOT NULL,
    request  TEXT NOT NULL,
    response TEXT NOT NULL,
    source   TEXT NOT NULL,   -- 'live' | 'batch'
    created  REAL NOT NULL
)
"""


class ResponseCache:
    """``get_many(keys)``, ``put(...)``, ``put_many(rows)``; safe to share
    between processes (SQLite locking) and between stages of a run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.unreadable: set[str] = set()  # keys whose stored reply could not be read back
        db = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # autocommit (isolation_level=None): every put is its own durable transaction
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a killed process (only power loss can drop the last commits)
            db.execute("PRAGMA synchronous=NORMAL")
            if db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='responses'").fetchone() is None:
                db.execute(_SCHEMA)
        except (sqlite3.Error, OSError) as e:
            if db is not None:
                db.close()
            raise self._error("cannot be opened", e) from None
        self._db = db

    def _error(self, what: str, e: BaseException) -> Phi1Error:
        why = str(e) or type(e).__name__
        if isinstance(e, sqlite3.DatabaseError) and ("malformed" in why or "not a database" in why):
            advice = ("it is damaged; nothing was sent. Move it aside and point llm.cache at a recovered copy "
                      f"(sqlite3 {self.path} .recover | sqlite3 recovered.sqlite) to keep the replies it holds, "
                      "or at a new file to ask everything again")
        elif "locked" in why:
            advice = ("another process held it locked for over a minute (another run on the same cache, or a "
                      "program that has it open); the replies already in it are kept; re-run the same command")
        elif what == "cannot be written":  # a full disk, a read-only file or folder, an I/O error
            advice = ("the replies already in it are kept; make room (or make it writable) and re-run the same "
                      "command: nothing already cached is sent again")
        else:
            advice = "the replies already in it are kept; fix the cause and re-run the same command"
        return Phi1Error(f"LLM response cache {self.path} {what} ({why}): {advice}")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "ResponseCache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __len__(self) -> int:
        try:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        except sqlite3.Error as e:
            raise self._error("cannot be read", e) from None

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Stored replies for the keys that have one (a row that cannot be read back is
        left out and its key added to ``unreadable``)."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, dict[str, Any]] = {}
        try:
            for i in range(0, len(keys), 500):  # stay below SQLite's bound-parameter limit
                chunk = keys[i:i + 500]
                q = (f"SELECT key, CAST(response AS BLOB) FROM responses "
                     f"WHERE key IN ({','.join('?' * len(chunk))})")
                for key, response in self._db.execute(q, chunk):
                    try:
                        data = json.loads(bytes(response).decode("utf-8"))
                    except (ValueError, TypeError, RecursionError):
                        data = None
                    if isinstance(data, dict):
                        out[key] = data
                    else:
                        self.unreadable.add(key)
        except sqlite3.Error as e:
            raise self._error("cannot be read", e) from None
        return out

    def get(self, key: str) -> dict[str, Any] | None:
        return self.get_many([key]).get(key)

    def put(self, key: str, url: str, request: dict[str, Any], response: dict[str, Any],
            source: str = "live") -> None:
        self.put_many([(key, url, request, response, source)])

    def put_many(self, rows: Iterable[tuple[str, str, dict[str, Any], dict[str, Any], str]]) -> int:
        # jsonl_line: a reply holding a lone surrogate (valid JSON, not UTF-8) is stored escaped, not a crash
        data = [(k, u, jsonl_line(req), jsonl_line(resp), s, time.time())
                for k, u, req, resp, s in rows]
        if not data:
            return 0
        try:
            with _transaction(self._db):
                self._db.executemany(
                    "INSERT OR REPLACE INTO responses (key, url, request, response, source, created) "
                    "VALUES (?, ?, ?, ?, ?, ?)", data)
        except sqlite3.Error as e:
            raise self._error("cannot be written", e) from None
        self.unreadable.difference_update(row[0] for row in data)
        return len(data)

    def keys(self) -> set[str]:
        try:
            return {k for (k,) in self._db.execute("SELECT key FROM responses")}
        except sqlite3.Error as e:
            raise self._error("cannot be read", e) from None


class _transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return
            except sqlite3.Error:
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        # A failed ROLLBACK means SQLite rolled the transaction back itself (a full disk does that).
        with contextlib.suppress(sqlite3.Error):
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
