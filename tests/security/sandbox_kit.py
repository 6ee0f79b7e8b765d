"""What every hostile-completion test shares: the canaries, the completions' shapes,
and the checks that nothing outside the sandbox was touched and nothing is left.

Each hostile case is followed by an honest program on the same worker (pools
here have one worker, so order is execution order): a program must neither
pass itself nor spoil the next one.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import textwrap
import uuid
from pathlib import Path

import pytest

from helpers.processes import processes_with
from phi1.evaluate.sandbox import UID_FIRST, Job, bubblewrap_problem
from phi1.evaluate.sandbox_cgroups import PREFIX, detect

needs_bwrap = pytest.mark.skipif(bubblewrap_problem() is not None, reason=f"bubblewrap unusable: {bubblewrap_problem()}")
x86_64 = pytest.mark.skipif(platform.machine() != "x86_64", reason="system-call numbers below are x86_64's")
root = pytest.mark.skipif(os.geteuid() != 0, reason="per-program uids and cgroups need root")

PROMPT = "def double(x):\n"
TEST = "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(-1) == -2\n"
HONEST = Job(PROMPT, "    return x * 2\n", TEST, "double")


def body(code: str) -> str:
    """Code placed inside the function body (runs when check calls the candidate)."""
    return textwrap.indent(textwrap.dedent(code).strip("\n"), "    ") + "\n"


def module(code: str) -> str:
    """Code placed at module level, after a wrong function: runs before the tests."""
    return "    return 0\n" + textwrap.dedent(code).strip("\n") + "\n"


def job(completion: str) -> Job:
    return Job(PROMPT, completion, TEST, "double")


def reporting(code: str) -> str:
    """A completion that runs ``code`` (which fills a dict ``facts``) once and fails with it as JSON."""
    return body("import json\nfacts = {}\n" + textwrap.dedent(code).strip("\n")
                + "\nraise Exception('FACTS' + json.dumps(facts))")


def facts(ex) -> dict:
    """The JSON a `reporting` completion failed with."""
    assert not ex.passed, ex.result
    assert "FACTS" in ex.result, ex.result
    return json.loads(ex.result.split("FACTS", 1)[1])


# Raw system calls from a fresh interpreter the program starts: what an attacker does
# once the harness's audit hook refuses ctypes in the program's own process. That
# process has the same filter, uid, namespaces and cgroup: only the kernel stands in
# its way. Each call's errno name (or "ok") lands in the report.
_SYSCALLS = r'''
import ctypes, errno, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
out = {}
for name, nr, args in json.loads(sys.argv[1]):
    conv = [ctypes.c_long(a) if isinstance(a, int) else (ctypes.create_string_buffer(a["buf"]) if isinstance(a, dict)
            else ctypes.c_char_p(a.encode())) for a in args]
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *conv)
    out[name] = "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
print("SYSCALLS" + json.dumps(out))
'''


def raw_syscalls(calls: list[tuple[str, int, list]]) -> str:
    """A completion that makes ``calls`` (name, x86_64 number, args: int | str | {"buf": n})
    in a child interpreter and fails reporting each result."""
    return reporting(f"""
        import subprocess, sys
        r = subprocess.run([sys.executable, "-c", {_SYSCALLS!r}, {json.dumps(calls)!r}], capture_output=True,
                           text=True, timeout=20)
        line = [ln for ln in r.stdout.splitlines() if ln.startswith("SYSCALLS")]
        facts.update(json.loads(line[0][8:]) if line else {{"error": r.stderr[-800:]}})
        """)


def fill(template: str, ctx: dict) -> str:
    """``{key}`` and ``{key!r}`` replaced from ``ctx``; other braces (dict literals) left alone."""
    for key, value in ctx.items():
        template = template.replace("{%s!r}" % key, repr(value)).replace("{%s}" % key, str(value))
    return template


def verdict_fd_expr() -> str:
    """Python expression, inside a program, for its end of the verdict channel."""
    return ('[int(f) for f in __import__("os").listdir("/proc/self/fd") if __import__("os.path").path.lexists('
            '"/proc/self/fd/" + f) and __import__("os").readlink("/proc/self/fd/" + f).startswith("socket:")][0]')


class Arena:
    """Canaries outside the sandbox: a world-writable file, TCP and unix listeners on the host."""

    def __init__(self) -> None:
        base = Path("/var/tmp") if os.access("/var/tmp", os.W_OK) else Path.cwd()
        self.dir = base / f"phi1-security-{uuid.uuid4().hex[:8]}"
        self.dir.mkdir(mode=0o777)
        os.chmod(self.dir, 0o777)
        self.canary = self.dir / "precious.txt"
        self.canary.write_text("precious\n")
        os.chmod(self.canary, 0o666)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(16)
        self.tcp.setblocking(False)
        # world-reachable unix sockets on the host: a read-only mount does not stop connect()/sendto()
        self.sock_dir = base / f"phi1-security-sock-{uuid.uuid4().hex[:8]}"
        self.sock_dir.mkdir(mode=0o777)
        os.chmod(self.sock_dir, 0o777)
        self.unix_stream = self._unix(socket.SOCK_STREAM, "stream.sock")
        self.unix_stream.listen(16)
        self.unix_dgram = self._unix(socket.SOCK_DGRAM, "dgram.sock")
        self.marker = f"phi1marker{uuid.uuid4().hex[:12]}"
        self.ipc_before = sysv_objects()
        self.ctx = {"canary": str(self.canary), "canary_dir": str(self.dir), "port": self.tcp.getsockname()[1],
                    "unix_stream": str(self.sock_dir / "stream.sock"), "unix_dgram": str(self.sock_dir / "dgram.sock"),
                    "marker": self.marker}

    def _unix(self, kind: int, name: str) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, kind)
        s.bind(str(self.sock_dir / name))
        os.chmod(self.sock_dir / name, 0o777)
        s.setblocking(False)
        return s

    def assert_untouched(self) -> None:
        assert self.canary.read_text() == "precious\n"
        assert sorted(p.name for p in self.dir.iterdir()) == ["precious.txt"]
        with pytest.raises(BlockingIOError):
            self.tcp.accept()
        with pytest.raises(BlockingIOError):
            self.unix_stream.accept()
        with pytest.raises(BlockingIOError):
            self.unix_dgram.recv(100)
        assert sysv_objects() == self.ipc_before  # no SysV segment, queue or semaphore on the host

    def close(self) -> None:
        for s in (self.tcp, self.unix_stream, self.unix_dgram):
            s.close()
        for p in self.sock_dir.iterdir():
            p.unlink()
        self.sock_dir.rmdir()
        for p in self.dir.iterdir():
            p.unlink()
        self.dir.rmdir()


def sysv_objects() -> dict[str, list[str]]:
    """Host SysV IPC objects (keys and ids) by kind."""
    out = {}
    for kind in ("shm", "msg", "sem"):
        try:
            lines = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()[1:]
        except OSError:
            lines = []
        out[kind] = sorted(" ".join(ln.split()[:2]) for ln in lines)
    return out


def sandbox_uid_processes() -> list[int]:
    """Host processes running under a sandbox uid."""
    left = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid >= UID_FIRST:
                    left.append(int(name))
            except OSError:
                pass
    return left


def own_cgroups() -> list[str]:
    """Sandbox cgroups this test process's pools still have."""
    support = detect()
    out = []
    for parent in set(support.parents.values()):
        out += [n for n in os.listdir(parent) if n.startswith(f"{PREFIX}{os.getpid()}-")]
    return out


def assert_nothing_left(arena: Arena) -> None:
    """After a pool closed: no process of it, of any sandbox uid, no cgroup of it."""
    assert processes_with(arena.marker) == []
    assert sandbox_uid_processes() == []
    assert own_cgroups() == []


def assert_refused_then_honest_passes(results: dict, name: str, arena: Arena) -> None:
    """Case ``name`` (run by `with_followers`) did not pass, the honest program after it on
    the same worker did, and the host is untouched."""
    assert not results[name].passed, results[name].result
    assert results[f"{name}/honest"].passed, results[f"{name}/honest"].result
    arena.assert_untouched()


def with_followers(cases: dict[str, Job], probe: Job | None = None) -> tuple[list[str], list[Job]]:
    """Each case, then (optionally) a probe, then an honest program: names and jobs in order."""
    names, jobs = [], []
    for name, j in cases.items():
        names.append(name)
        jobs.append(j)
        if probe is not None:
            names.append(f"{name}/probe")
            jobs.append(probe)
        names.append(f"{name}/honest")
        jobs.append(HONEST)
    return names, jobs
