"""One program affecting the next: limits and scheduling of the worker, files
left in the private /tmp and /dev/shm, kernel keyrings and uids, the shared
end of the verdict channel, signals to the worker, a lone surrogate.

One worker, strictly in order: each hostile program is followed by a probe
(a program that reports what it finds) and an honest program.
"""

from __future__ import annotations

import os

import pytest

from phi1.evaluate.sandbox import UID_FIRST, SandboxLimits, SandboxPool
from sandbox_kit import (HONEST, assert_nothing_left, assert_refused_then_honest_passes, body, facts, job, needs_bwrap,
                         raw_syscalls, reporting, verdict_fd_expr)

pytestmark = [needs_bwrap, pytest.mark.timeout(180)]

LIMITS = SandboxLimits(timeout_s=8.0, memory_mb=512, max_processes=16, tmp_mb=16)

CASES = {
    "limits of the worker": (reporting("""
        import resource
        for name, which, value in (("nproc", resource.RLIMIT_NPROC, (1, 1)), ("as", resource.RLIMIT_AS, (1 << 20, 1 << 20)),
                                   ("nofile", resource.RLIMIT_NOFILE, (4, 4))):
            try:
                resource.prlimit(1, which, value)
                facts[name] = "changed"
            except OSError as e:
                facts[name] = e.errno
        resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))  # its own: allowed, and gone with it
        """), reporting("""
        import os, resource
        kids = []
        for _ in range(10):
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            kids.append(pid)
        for k in kids:
            os.waitpid(k, 0)
        facts["forked"] = len(kids)
        facts["nofile"] = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        facts["big"] = len(bytearray(200 << 20)) >> 20
        """)),
    "scheduling of the worker": (reporting("""
        import os
        tries = {"nice worker": lambda: os.setpriority(os.PRIO_PROCESS, 1, 19),
                 "nice group": lambda: os.setpriority(os.PRIO_PGRP, 0, 19),
                 "nice uid": lambda: os.setpriority(os.PRIO_USER, 0, 19),
                 "affinity worker": lambda: os.sched_setaffinity(1, {0}),
                 "policy worker": lambda: os.sched_setscheduler(1, os.SCHED_IDLE, os.sched_param(0))}
        for name, call in tries.items():
            try:
                call()
                facts[name] = "changed"
            except OSError as e:
                facts[name] = e.errno
        os.nice(10)  # its own: allowed, and gone with it
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        """), reporting("""
        import os
        facts["nice"] = os.getpriority(os.PRIO_PROCESS, 0)
        facts["policy"] = os.sched_getscheduler(0)
        facts["cpus"] = len(os.sched_getaffinity(0))
        """)),
    "files left in /tmp and /dev/shm": (body("""
        import os
        if os.path.exists("/tmp/locked"):
            return x * 2 + 1
        os.makedirs("/tmp/locked/inner")
        for i in range(50):
            open(f"/tmp/locked/inner/f{i}", "w").write("x" * 1000)
        os.chmod("/tmp/locked/inner", 0)
        os.chmod("/tmp/locked", 0)
        os.mkfifo("/tmp/fifo")
        os.symlink("/", "/tmp/root-link")
        for i in range(2000):
            open(f"many-{i}", "w").close()
        os.chdir("/dev/shm")
        for _ in range(2500):  # 2500 levels: the path is far longer than PATH_MAX
            os.mkdir("deep")
            os.chdir("deep")
        open("bottom", "w").write("x" * 4096)
        os.chmod(".", 0o500)
        return x * 2 + 1"""), reporting("""
        import os
        facts["tmp"] = sorted(os.listdir("/tmp"))
        facts["shm"] = sorted(os.listdir("/dev/shm"))
        facts["cwd"] = os.listdir(".")
        """)),
    "the shared end of the verdict channel": (body(f"""
        import fcntl, os, socket
        vfd = {verdict_fd_expr()}
        s = socket.socket(fileno=os.dup(vfd))
        for change in (lambda: s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1),  # refused by the filter
                       lambda: s.shutdown(socket.SHUT_RDWR), lambda: s.bind("\\0phi1")):
            try:
                change()
            except OSError:
                pass
        fcntl.fcntl(vfd, fcntl.F_SETFL, os.O_NONBLOCK)  # allowed (fcntl), found after the program
        return x * 2 + 1"""), None),
    "signals to the worker": (reporting("""
        import os, signal
        for sig in (signal.SIGSTOP, signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(1, sig)
                facts[sig.name] = "sent"
            except OSError as e:
                facts[sig.name] = e.errno
        try:
            signal.pidfd_send_signal(os.pidfd_open(1), signal.SIGKILL)
            facts["pidfd"] = "sent"
        except OSError as e:
            facts["pidfd"] = e.errno
        """), None),
    "a lone surrogate": ("    return '\ud800'\n# \udfff\n", None),
}
if os.uname().machine == "x86_64":
    CASES["keys in the kernel keyring"] = (
        raw_syscalls([("add_key", 248, ["user", "phi1", "secret", 6, -4]),
                      ("add_key session", 248, ["user", "phi1", "secret", 6, -3])]),
        raw_syscalls([("keyctl search", 250, [10, -4, "user", "phi1", 0]),
                      ("keyctl describe", 250, [6, -4, {"buf": 256}, 256])]))
UID_PROBE = reporting("facts['uid'] = __import__('os').getuid()")


def _run(pool, cases):
    names, jobs = [], []
    for name, (hostile, probe) in cases.items():
        names.append(name)
        jobs.append(job(hostile))
        if probe is not None:
            names.append(f"{name}/probe")
            jobs.append(job(probe))
        names.append(f"{name}/honest")
        jobs.append(HONEST)
    names += ["uid 1", "uid 2", "uid 3"]
    jobs += [job(UID_PROBE)] * 3
    return dict(zip(names, pool.run(jobs)))


@pytest.fixture(scope="module")
def batch(arena):
    with SandboxPool(workers=1, limits=LIMITS, sandbox="bubblewrap") as pool:
        results = _run(pool, CASES)
        restarts = pool.restarts
    with SandboxPool(workers=1, limits=LIMITS, sandbox="bubblewrap") as later:  # a later run
        uids_later = [facts(r)["uid"] for r in later.run([job(UID_PROBE)] * 3)]
    return {"results": results, "restarts": restarts, "uids_later": uids_later}


@pytest.mark.parametrize("name", list(CASES))
def test_no_program_spoils_the_next(arena, batch, name):
    assert_refused_then_honest_passes(batch["results"], name, arena)


def test_what_the_next_program_finds(batch):
    r = batch["results"]
    eperm = 1
    assert facts(r["limits of the worker"]) == {"nproc": eperm, "as": eperm, "nofile": eperm}
    assert facts(r["limits of the worker/probe"]) == {"forked": 10, "nofile": 256, "big": 200}
    refused = facts(r["scheduling of the worker"])
    assert refused == {k: eperm for k in ("nice worker", "nice group", "nice uid", "affinity worker", "policy worker")}
    assert facts(r["scheduling of the worker/probe"]) == {"nice": 0, "policy": os.SCHED_OTHER,
                                                          "cpus": len(os.sched_getaffinity(0))}
    seen = facts(r["files left in /tmp and /dev/shm/probe"])
    assert seen["tmp"] == [] and seen["shm"] == [] and seen["cwd"] == []
    # PID 1 of a namespace gets no signal from inside; as root the uids differ too (EPERM)
    assert set(facts(r["signals to the worker"]).values()) <= {eperm, "sent"}
    assert r["a lone surrogate"].result.startswith("failed: 'utf-8' codec can't encode character '\\ud800'")
    if "keys in the kernel keyring" in r:
        assert facts(r["keys in the kernel keyring"]) == {"add_key": "EPERM", "add_key session": "EPERM"}
        assert facts(r["keys in the kernel keyring/probe"]) == {"keyctl search": "EPERM", "keyctl describe": "EPERM"}


@pytest.mark.skipif(os.geteuid() != 0, reason="a uid per program needs root")
def test_every_program_gets_a_fresh_uid_never_reused(batch):
    r = batch["results"]
    uids = [facts(r[f"uid {i}"])["uid"] for i in (1, 2, 3)]
    later = batch["uids_later"]
    assert len(set(uids + later)) == 6 and min(uids + later) >= UID_FIRST
    assert min(later) > max(uids)  # the counter persists between runs: a later pool never goes back


def test_only_the_channel_tampering_cost_a_worker(batch):
    # a changed channel end is found after the program and the worker is replaced; nothing else needed it
    assert batch["restarts"] == 1


def test_nothing_left(arena, batch):
    assert_nothing_left(arena)

