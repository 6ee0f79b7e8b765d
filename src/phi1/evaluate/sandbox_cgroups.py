"""A memory + pids cgroup per sandbox worker: memory counted where it is spent.

RLIMIT_AS limits one process's address space; it does not see a program's
other processes together, nor memory that is not mapped (tmpfs pages, socket
and pipe buffers). A cgroup does: everything the worker and its programs
allocate is charged to it, and the OOM killer picks inside it (programs ask
to go first, oom_score_adj 1000). Its pids limit caps processes and threads
together, whatever their uid.

cgroup v2 where this process's cgroup is delegated (memory and pids can be
enabled below it), else cgroup v1 as root where the memory and pids
hierarchies are mounted writable (this machine's case). Where neither works
the pool runs on rlimits alone and says so loudly (`detect().reason`).
Each worker's group is ``phi1-sandbox-<pool pid>-<slot>-<random>`` inside this
process's own cgroup; stale groups of dead pools are removed at start.

Where the cpu controller is there too (a v1 ``cpu`` hierarchy, or ``cpu`` in the
v2 controllers), each worker also gets a cpu group of the default weight: the
kernel then shares the processors between workers, not between processes, so a
program that starts sixteen busy processes takes one worker's share and the
programs on other workers keep theirs (without it their wall-clock timeouts
run out: one hostile sample turns honest ones into "timed out").
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field

PREFIX = "phi1-sandbox-"
CONTROLLERS = ("memory", "pids")
OPTIONAL = ("cpu",)  # used where present; its absence is said in `describe`, not fatal


@dataclass(frozen=True)
class CgroupSupport:
    kind: str | None  # "v2", "v1", or None (unavailable)
    parents: dict[str, str] = field(default_factory=dict)  # controller -> folder the groups go in
    reason: str = ""  # why unavailable

    def describe(self) -> str:
        if self.kind is None:
            return f"no memory/pids cgroup ({self.reason})"
        where = ", ".join(sorted(set(self.parents.values())))
        cpu = " + cpu (processors shared per worker)" if "cpu" in self.parents else " (no cpu controller: " \
            "processors shared per process, so one program's many processes slow the other workers)"
        return f"cgroup {self.kind} memory + pids{cpu} per worker (in {where})"


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, super options) of cgroup file systems."""
    out = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                parts, rparts = left.split(), right.split()
                if len(parts) < 5 or len(rparts) < 3 or rparts[0] not in ("cgroup", "cgroup2"):
                    continue
                point = parts[4].replace("\\040", " ")
                out.append((point, rparts[0], set(rparts[2].split(","))))
    except OSError:
        pass
    return out


def _own_paths() -> dict[str, str]:
    """This process's cgroup per v1 controller, and "" -> its v2 cgroup."""
    out: dict[str, str] = {}
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            for line in f:
                _, ctrls, path = line.rstrip("\n").split(":", 2)
                for c in (ctrls.split(",") if ctrls else [""]):
                    out[c] = path
    except (OSError, ValueError):
        pass
    return out


def _writable_dir(path: str) -> bool:
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def detect() -> CgroupSupport:
    """Where worker cgroups can be created here, or why not."""
    mounts, own = _mounts(), _own_paths()
    problems = []
    # v2: our own cgroup, if memory and pids can be enabled for groups below it
    for point, fstype, _ in mounts:
        if fstype != "cgroup2" or "" not in own:
            continue
        base = os.path.normpath(point + own[""])
        try:
            available = open(os.path.join(base, "cgroup.controllers"), encoding="utf-8").read().split()
        except OSError:
            continue
        if not all(c in available for c in CONTROLLERS):
            problems.append(f"cgroup v2 at {point}: controllers {' '.join(available) or 'none'} "
                            "(memory and pids are not delegated here)")
            continue
        if not _writable_dir(base):
            problems.append(f"cgroup v2 {base} is not writable (not delegated to this user)")
            continue
        try:
            enabled = open(os.path.join(base, "cgroup.subtree_control"), encoding="utf-8").read().split()
        except OSError:
            enabled = []
        if not all(c in enabled for c in CONTROLLERS):
            try:
                with open(os.path.join(base, "cgroup.subtree_control"), "w", encoding="utf-8") as f:
                    f.write(" ".join(f"+{c}" for c in CONTROLLERS))
            except OSError as e:
                problems.append(f"cgroup v2 {base}: cannot enable memory and pids below it ({e.strerror}; "
                                "a delegated cgroup must hold no processes itself)")
                continue
        parents = {c: base for c in CONTROLLERS}
        for c in OPTIONAL:
            if c in available:
                try:
                    if c not in enabled:
                        with open(os.path.join(base, "cgroup.subtree_control"), "w", encoding="utf-8") as f:
                            f.write(f"+{c}")
                    parents[c] = base
                except OSError:
                    pass
        return CgroupSupport("v2", parents)
    # v1: one hierarchy per controller, as root
    parents = {}
    for ctrl in CONTROLLERS:
        point = next((p for p, fstype, opts in mounts if fstype == "cgroup" and ctrl in opts), None)
        if point is None:
            problems.append(f"no cgroup v1 {ctrl} hierarchy mounted")
            break
        base = os.path.normpath(point + own.get(ctrl, "/"))
        if not _writable_dir(base):
            problems.append(f"cgroup v1 {base} is not writable" + ("" if os.geteuid() == 0 else " (not root)"))
            break
        parents[ctrl] = base
    if len(parents) == len(CONTROLLERS):
        for ctrl in OPTIONAL:
            point = next((p for p, fstype, opts in mounts if fstype == "cgroup" and ctrl in opts), None)
            base = os.path.normpath(point + own.get(ctrl, "/")) if point else None
            if base and _writable_dir(base):
                parents[ctrl] = base
        return CgroupSupport("v1", parents)
    return CgroupSupport(None, reason="; ".join(problems) or "no cgroup file system mounted")


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


class WorkerCgroup:
    """One worker's memory + pids groups: created with limits, joined before exec, removed at the end."""

    def __init__(self, support: CgroupSupport, name: str, memory_bytes: int, pids_max: int):
        self.support = support
        self.name = name
        self.dirs = {c: os.path.join(support.parents[c], name) for c in CONTROLLERS + OPTIONAL
                     if c in support.parents}
        self.memory_bytes = memory_bytes
        self.pids_max = pids_max
        self.oom_seen = 0

    def create(self) -> None:
        made = []
        try:
            for d in dict.fromkeys(self.dirs.values()):
                os.mkdir(d, 0o755)
                made.append(d)
            mem, pids = self.dirs["memory"], self.dirs["pids"]
            if self.support.kind == "v2":
                _write(os.path.join(mem, "memory.max"), str(self.memory_bytes))
                if os.path.exists(os.path.join(mem, "memory.swap.max")):
                    _write(os.path.join(mem, "memory.swap.max"), "0")
            else:
                _write(os.path.join(mem, "memory.limit_in_bytes"), str(self.memory_bytes))
                memsw = os.path.join(mem, "memory.memsw.limit_in_bytes")
                if os.path.exists(memsw):
                    try:  # swap accounting may be compiled in but switched off
                        _write(memsw, str(self.memory_bytes))
                    except OSError:
                        pass
            _write(os.path.join(pids, "pids.max"), str(self.pids_max))
            if "cpu" in self.dirs:  # the default weight, said explicitly: every worker the same
                cpu = self.dirs["cpu"]
                if self.support.kind == "v2":
                    _write(os.path.join(cpu, "cpu.weight"), "100")
                else:
                    _write(os.path.join(cpu, "cpu.shares"), "1024")
        except OSError:
            for d in reversed(made):
                try:
                    os.rmdir(d)
                except OSError:
                    pass
            raise

    def join(self) -> None:
        """Move the calling process in (run in the worker's pre-exec hook: everything it starts follows)."""
        for d in dict.fromkeys(self.dirs.values()):
            _write(os.path.join(d, "cgroup.procs"), "0")

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer ended in this group so far."""
        name = "memory.events" if self.support.kind == "v2" else "memory.oom_control"
        try:
            text = open(os.path.join(self.dirs["memory"], name), encoding="utf-8").read()
        except OSError:
            return 0
        m = re.search(r"^oom_kill (\d+)$", text, re.M)
        return int(m.group(1)) if m else 0

    def new_oom_kill(self) -> bool:
        """True once per OOM kill since the last call."""
        n = self.oom_kills()
        seen, self.oom_seen = self.oom_seen, n
        return n > seen

    def remove(self, wait_s: float = 2.0) -> bool:
        """Remove the groups once their processes are gone (True when removed)."""
        deadline = time.monotonic() + wait_s
        left = list(dict.fromkeys(self.dirs.values()))
        while left:
            for d in list(left):
                try:
                    os.rmdir(d)
                    left.remove(d)
                except FileNotFoundError:
                    left.remove(d)
                except OSError:
                    pass
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        return not left


def sweep_stale(support: CgroupSupport) -> int:
    """Remove empty groups left by pools whose process is gone; returns how many."""
    removed = 0
    for parent in dict.fromkeys(support.parents.values()):
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            m = re.fullmatch(re.escape(PREFIX) + r"(\d+)-\d+-[0-9a-f]+", name)
            if not m or _alive(int(m.group(1))):
                continue
            try:
                os.rmdir(os.path.join(parent, name))
                removed += 1
            except OSError:
                pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_name(pool_pid: int, slot: int) -> str:
    """A fresh name: pools of one process (and restarts of one slot) never share a group."""
    return f"{PREFIX}{pool_pid}-{slot}-{os.urandom(4).hex()}"

