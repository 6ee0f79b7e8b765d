"""The kernel surface: sockets, io_uring, namespaces, other processes' memory,
keyrings, SysV IPC, memfd.

Each attack is tried twice where it can be: from the program's own process
(Python's standard library only) and as raw system calls from a fresh
interpreter the program starts (``sandbox_kit.raw_syscalls``), which has no
audit hook and full ctypes: there only the kernel layers (the system-call
filter, uids, namespaces, non-dumpable processes) stand in the way.
"""

from __future__ import annotations

import pytest

from phi1.evaluate.sandbox import SandboxLimits, SandboxPool
from sandbox_kit import (assert_nothing_left, facts, fill, job, needs_bwrap, raw_syscalls, reporting, with_followers,
                         x86_64)

pytestmark = [needs_bwrap, x86_64, pytest.mark.timeout(180)]

LIMITS = SandboxLimits(timeout_s=8.0, memory_mb=512, tmp_mb=16)
BUF = {"buf": 256}
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_VSOCK = 1, 2, 10, 16, 40
SOCK_STREAM, SOCK_DGRAM = 1, 2
CLONE_NEWUSER, CLONE_NEWNET, SIGCHLD = 0x10000000, 0x40000000, 17

# (name, x86_64 number, args) -> the errno expected; everything here is refused.
RAW = {
    "sockets": [
        ("socket unix", 41, [AF_UNIX, SOCK_STREAM, 0]),
        ("socket inet", 41, [AF_INET, SOCK_STREAM, 0]),
        ("socket inet6", 41, [AF_INET6, SOCK_DGRAM, 0]),
        ("socket netlink", 41, [AF_NETLINK, SOCK_DGRAM, 0]),
        ("socket vsock", 41, [AF_VSOCK, SOCK_STREAM, 0]),
        ("socketpair unix dgram", 53, [AF_UNIX, SOCK_DGRAM, 0, BUF]),
    ],
    "io_uring": [
        ("io_uring_setup", 425, [8, BUF]),
        ("io_uring_enter", 426, [0, 1, 0, 0, 0, 0]),
        ("io_uring_register", 427, [0, 0, 0, 0]),
    ],
    "namespaces": [
        ("unshare user", 272, [CLONE_NEWUSER]),
        ("unshare net", 272, [CLONE_NEWNET]),
        ("clone user", 56, [CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0]),
        ("setns", 308, [0, 0]),
        ("clone3", 435, [BUF, 88]),
    ],
    "other processes": [
        ("ptrace attach worker", 101, [16, 1, 0, 0]),
        ("process_vm_readv worker", 310, [1, BUF, 1, BUF, 1, 0]),
        ("kcmp", 312, [1, 1, 0, 0, 0]),
        ("pidfd_getfd", 438, [0, 0, 0]),
        ("prctl set dumpable", 157, [4, 1, 0, 0, 0]),
        ("prlimit64 worker", 302, [1, 6, BUF, 0]),
    ],
    "kernel": [
        ("bpf", 321, [0, BUF, 48]),
        ("perf_event_open", 298, [BUF, 0, -1, -1, 0]),
        ("userfaultfd", 323, [0]),
        ("mount", 165, ["none", "/tmp", "tmpfs", 0, 0]),
        ("seccomp", 317, [0, 0, 0]),
        ("modify_ldt", 154, [0, BUF, 16]),  # read the LDT: refused all the same
        ("name_to_handle_at", 303, [-100, "/usr", BUF, BUF, 0]),
    ],
    "keyrings": [
        ("add_key", 248, ["user", "phi1", "secret", 6, -4]),
        ("keyctl get user keyring", 250, [0, -4, 0]),
        ("request_key", 249, ["user", "phi1", 0, 0]),
    ],
    "sysv ipc": [
        ("shmget 1 GiB", 29, [0, 1 << 30, 0o1600]),
        ("msgget", 68, [0, 0o1600]),
        ("semget", 64, [0, 1, 0o1600]),
        ("mq_open", 240, ["/phi1", 0o102, 0o600, 0]),
    ],
    "memfd": [
        ("memfd_create", 319, ["phi1", 0]),
        ("memfd_secret", 447, [0]),
    ],
}
EXPECTED = {name: ("ENOSYS" if name == "clone3" else "EPERM") for calls in RAW.values() for name, _, _ in calls}

IN_PROCESS = reporting("""
    import os, socket
    def attempt(name, call):
        try:
            call()
            facts[name] = "ok"
        except OSError as e:
            facts[name] = e.errno
        except Exception as e:
            facts[name] = type(e).__name__
    # a socket pair, then sendto() a unix socket on the host through the read-only file system
    def pair_and_send():
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        a.sendto(b"escaped", {unix_dgram!r})
    attempt("socketpair + sendto host", pair_and_send)
    attempt("connect host unix socket", lambda: socket.socket(socket.AF_UNIX).connect({unix_stream!r}))
    attempt("tcp to host listener", lambda: socket.create_connection(("127.0.0.1", {port}), timeout=0.5))
    attempt("memfd_create", lambda: os.memfd_create("x"))
    attempt("own memory through /proc", lambda: open("/proc/self/mem", "rb"))
    attempt("worker memory through /proc", lambda: open("/proc/1/mem", "rb"))
    attempt("worker fds through /proc", lambda: os.listdir("/proc/1/fd"))
    attempt("worker environ", lambda: open("/proc/1/environ", "rb").read())
    attempt("unshare -U", lambda: __import__("subprocess").run(["unshare", "-U", "true"], check=True,
                                                               capture_output=True))
    """)


@pytest.fixture(scope="module")
def batch(arena):
    cases = {f"raw {family}": job(raw_syscalls(calls)) for family, calls in RAW.items()}
    cases["in-process"] = job(fill(IN_PROCESS, arena.ctx))
    names, jobs = with_followers(cases)
    with SandboxPool(workers=1, limits=LIMITS, sandbox="bubblewrap") as pool:
        results = dict(zip(names, pool.run(jobs)))
        restarts = pool.restarts
    return {"results": results, "restarts": restarts, "cases": list(cases)}


@pytest.mark.parametrize("family", list(RAW))
def test_raw_system_calls_refused(arena, batch, family):
    got = facts(batch["results"][f"raw {family}"])
    assert got == {name: EXPECTED[name] for name, _, _ in RAW[family]}, got
    assert batch["results"][f"raw {family}/honest"].passed
    arena.assert_untouched()


def test_in_process_attempts_refused(arena, batch):
    got = facts(batch["results"]["in-process"])
    # EPERM from the filter; EACCES where only non-dumpable processes and other uids stand in the way
    assert got.pop("socketpair + sendto host") == 1
    assert got.pop("connect host unix socket") == 1
    assert got.pop("tcp to host listener") == 1
    assert got.pop("memfd_create") == 1
    assert got.pop("own memory through /proc") == 13
    assert got.pop("worker memory through /proc") == 13
    assert got.pop("worker fds through /proc") == 13
    assert got.pop("worker environ") == 13
    assert got.pop("unshare -U") != "ok"
    assert got == {}
    assert batch["results"]["in-process/honest"].passed
    arena.assert_untouched()  # in particular: the host's unix datagram socket received nothing


def test_no_worker_lost_and_nothing_left(arena, batch):
    assert batch["restarts"] == 0
    assert_nothing_left(arena)
