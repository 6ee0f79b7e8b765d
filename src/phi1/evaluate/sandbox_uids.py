"""Sandbox uids: a fresh one for every program, never reused across programs or runs.

When phi1 runs as root, each program runs under a uid of its own, so it cannot
signal, `prlimit`, ptrace or read the /proc entries of its worker or of any
other program, and nothing a uid owns in the kernel (keyrings, RLIMIT_NPROC
counts, files in /tmp) carries over to the next program. The uids come from
[`UID_FIRST`, `UID_LAST`), far above any real account, in blocks taken under
an exclusive lock on a small counter file that persists between runs (so a
later `phi1 execute`, even with the same pid, never gets an earlier uid). The
range wraps around after two billion programs.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from phi1.errors import Phi1Error

UID_FIRST = 2_000_000_000
UID_LAST = 4_000_000_000  # below 2**32 - 2 (the "no uid" values)
BLOCK = 4096
STATE_ENV = "PHI1_SANDBOX_UID_STATE"
STATE_PATHS = ("/var/lib/phi1/sandbox-uids", "/run/phi1/sandbox-uids")


class UidRangeError(Phi1Error):
    """No place to keep the uid counter (needed to never hand out a uid twice)."""


def state_path() -> Path:
    """Where the counter lives: $PHI1_SANDBOX_UID_STATE, else the first usable default."""
    env = os.environ.get(STATE_ENV)
    candidates = (env,) if env else STATE_PATHS
    problems = []
    for cand in candidates:
        path = Path(cand)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            return path
        except OSError as e:
            problems.append(f"{path}: {e.strerror}")
    raise UidRangeError("cannot keep the sandbox uid counter (" + "; ".join(problems) + ")"
                        + ("" if env else f"; set {STATE_ENV} to a writable file"))


def take_block(path: Path, size: int = BLOCK) -> range:
    """Reserve the next ``size`` uids, under an exclusive lock on the counter file."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        try:
            first = int(raw)
        except ValueError:  # new (or damaged) counter: start at the bottom of the range
            first = UID_FIRST
        if not UID_FIRST <= first <= UID_LAST - size:
            first = UID_FIRST
        data = f"{first + size}\n".encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
        return range(first, first + size)
    finally:
        os.close(fd)  # releases the lock


class UidAllocator:
    """Hands out uids one at a time, taking a new locked block when one runs out.

    ``path=None`` with ``persistent=False``: no counter file (none can be kept
    here); blocks are then drawn at random from the range, so a reuse across
    runs is unlikely but no longer impossible (the pool says so)."""

    def __init__(self, path: Path | None = None, block: int = BLOCK, persistent: bool = True):
        self.path = (path or state_path()) if persistent else None
        self.block = block
        self._left: range = range(0)
        self.issued = 0

    def next(self) -> int:
        if not self._left:
            if self.path is None:
                first = UID_FIRST + int.from_bytes(os.urandom(4), "big") % ((UID_LAST - UID_FIRST) // self.block) * self.block
                self._left = range(first, first + self.block)
            else:
                self._left = take_block(self.path, self.block)
        uid = self._left[0]
        self._left = self._left[1:]
        self.issued += 1
        return uid
