"""One way to write a file so that a crash never leaves a half-written one.

Every writer in phi1 goes through `atomic_path`: write to a hidden temporary
file in the same folder, flush and fsync it, then `os.replace` it over the
target (atomic on POSIX), then fsync the folder so the rename itself survives
a power cut. A reader sees the old file or the new one, never a mix; a crash
leaves at most a ``.<name>.<random>.tmp`` file that nothing reads.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import uuid
from pathlib import Path
from typing import IO, Any, Iterator

TMP_GLOB = ".*.tmp"


def _tmp_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def fsync_dir(folder: str | Path) -> None:
    """Make a rename inside ``folder`` durable (no-op where directories can't be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``.

    On an exception the temporary file is removed and ``path`` is untouched.
    The caller writes and closes the file; this fsyncs it before the rename
    (``durable=False`` skips the fsyncs: for progress files rewritten every
    second, where a lost update after a power cut costs nothing).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_for(path)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:
            # a full disk shows up when the file is closed, with no file name: name it
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    if durable:
        fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8",
                durable: bool = True) -> Iterator[IO[Any]]:
    """``open()`` that commits atomically on close; ``.gz`` paths are gzipped.

    ``mode`` is ``"w"`` (text) or ``"wb"`` (bytes).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path, durable) as tmp:
        gz = str(path).endswith(".gz")
        if mode == "w":
            fh = gzip.open(tmp, "wt", encoding=encoding) if gz else open(tmp, "w", encoding=encoding)
        else:
            fh = gzip.open(tmp, "wb") if gz else open(tmp, "wb")
        with fh:
            yield fh


def write_atomic(path: str | Path, data: str | bytes, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (text as UTF-8)."""
    with atomic_open(path, "wb", durable=durable) as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON, atomically.

    Strings that are not valid UTF-8 (a lone surrogate from a JSON input) are
    written as ``\\ud800`` escapes, so anything JSON can read round-trips.
    """
    text = json.dumps(data, indent=2, sort_keys=True, default=str, ensure_ascii=True) + "\n"
    write_atomic(path, text)


def jsonl_line(record: Any) -> str:
    """One JSON line that any JSON reader reads back to the same value.

    Non-ASCII text stays readable; a lone surrogate (valid in JSON input, not
    encodable as UTF-8) is written as its ``\\uXXXX`` escape instead of
    crashing the writer.
    """
    line = json.dumps(record, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(record, ensure_ascii=True)
    # Characters that str.splitlines() (and some JSONL readers) take for line
    # breaks stay escaped, so one record is always one line.
    return line.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").replace("\x85", "\\u0085")


def write_jsonl_atomic(path: str | Path, records: Any) -> int:
    """Write records as JSON lines (gzipped for ``.gz``) atomically; returns the count."""
    n = 0
    with atomic_open(path, "w") as fh:
        for rec in records:
            fh.write(jsonl_line(rec) + "\n")
            n += 1
    return n
