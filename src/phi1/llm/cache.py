"""SQLite response cache: one row per successful reply, keyed by the request.

Each reply is committed as soon as it arrives (WAL mode), so a run killed at
any point keeps every reply it received: the re-run sends only what is
missing, and a finished run re-run costs nothing. Only successful replies are
stored (errors are retried on the next run). The cache holds request and reply
bodies, never headers, so no API key ever reaches it.
"""

from __future__ import annotations

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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # autocommit (isolation_level=None): every put is its own durable transaction
            self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a killed process (only power loss can drop the last commits)
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise Phi1Error(f"LLM response cache {self.path} is not usable ({e}); "
                            "delete it or point llm.cache elsewhere") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "ResponseCache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Stored replies for the keys that have one."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(keys), 500):  # stay below SQLite's bound-parameter limit
            chunk = keys[i:i + 500]
            q = f"SELECT key, response FROM responses WHERE key IN ({','.join('?' * len(chunk))})"
            for key, response in self._db.execute(q, chunk):
                out[key] = json.loads(response)
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
        with _transaction(self._db):
            self._db.executemany(
                "INSERT OR REPLACE INTO responses (key, url, request, response, source, created) "
                "VALUES (?, ?, ?, ?, ?, ?)", data)
        return len(data)

    def keys(self) -> set[str]:
        return {k for (k,) in self._db.execute("SELECT key FROM responses")}


class _transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
