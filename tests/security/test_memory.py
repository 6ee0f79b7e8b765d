"""Memory outside the limits: a completion too large to run, one whose parsing
alone exhausts memory, memory spread over many processes (the cgroup), and
memfd / SysV segments (refused outright: test_kernel.py)."""

from __future__ import annotations

import os

import pytest

from phi1.evaluate.sandbox import SandboxLimits, SandboxPool
from sandbox_kit import (HONEST, assert_nothing_left, body, facts, job, needs_bwrap, raw_syscalls, reporting, root,
                         x86_64)

pytestmark = [needs_bwrap, pytest.mark.timeout(180)]


def _worker_peak_kb(pool: SandboxPool) -> int:
    """Peak resident memory of the (only) worker interpreter: bubblewrap's child."""
    bwrap = pool.workers[0].proc.pid
    kids = open(f"/proc/{bwrap}/task/{bwrap}/children").read().split()
    status = open(f"/proc/{kids[0]}/status").read()
    return int(status.split("VmHWM:")[1].split()[0])


def test_huge_completions_cost_the_program_not_the_worker(arena):
    limits = SandboxLimits(timeout_s=5.0, memory_mb=160, max_program_mb=2, tmp_mb=16)
    too_big = job("    return x * 2\n" + "#" * (3 << 20) + "\n")  # 3 MiB: over the 2 MiB limit
    # 1.4 MiB of source whose syntax tree needs far more than 160 MiB: parsed in the limited child
    parse_bomb = job("    return 0\nX = [" + "1," * 700_000 + "]\n")
    with SandboxPool(workers=1, limits=limits, sandbox="bubblewrap") as pool:
        before = _worker_peak_kb(pool)
        big, honest1, bomb, honest2 = pool.run([too_big, HONEST, parse_bomb, HONEST])
        after = _worker_peak_kb(pool)
        restarts = pool.restarts
    assert big.result == "failed: the program is 3.0 MiB, over the sandbox's limit of 2 MiB"
    assert not bomb.passed and bomb.result in ("failed: ", "failed: out of memory (the sandbox's 160 MiB)"), bomb.result
    assert honest1.passed and honest2.passed
    assert restarts == 0
    # the worker never held the parsed program: its peak memory barely moved
    assert after - before < 16 << 10, (before, after)
    arena.assert_untouched()
    assert_nothing_left(arena)


@root
def test_memory_spread_over_processes_is_counted(arena):
    pool_limits = SandboxLimits(timeout_s=8.0, memory_mb=256, max_processes=16, tmp_mb=16)
    spread = job(body("""
        import os, signal, time
        kids = []
        for _ in range(5):  # 5 x 150 MiB: each under RLIMIT_AS, together over the cgroup
            pid = os.fork()
            if pid == 0:
                block = bytearray(150 << 20)
                for i in range(0, len(block), 4096):
                    block[i] = 1
                os.write(1, b"allocated\\n")
                signal.pause()
            kids.append(pid)
        time.sleep(1.5)
        for pid in kids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        return x * 2 + 1"""))
    with SandboxPool(workers=1, limits=pool_limits, sandbox="bubblewrap") as pool:
        if pool.cgroups.kind is None:
            pytest.skip(f"no cgroups here: {pool.cgroups.reason}")
        cg = pool.workers[0].cgroup
        limit = int(open(os.path.join(cg.dirs["memory"], "memory.limit_in_bytes" if cg.support.kind == "v1"
                                      else "memory.max")).read())
        ex, honest = pool.run([spread, HONEST])
        killed = cg.oom_kills()
        restarts = pool.restarts
    assert limit == (256 + 128 + 32) << 20  # the program's memory + the worker's + both tmpfs
    assert not ex.passed
    assert killed >= 1, (ex.result, ex.output)  # the kernel's OOM killer acted inside the worker's group
    assert ex.output.count("allocated") < 5  # not every 150 MiB child got its memory
    assert honest.passed and restarts == 0  # ... and it picked the program's processes, not the worker
    arena.assert_untouched()
    assert_nothing_left(arena)



@x86_64
def test_without_the_filter_a_sysv_segment_costs_its_worker(arena, monkeypatch):
    # where libseccomp is missing the filter cannot refuse shmget(): the segment would
    # outlive the program in the worker's IPC namespace, so the worker is replaced
    from phi1.evaluate import seccomp_policy

    monkeypatch.setattr(seccomp_policy, "native_supported", lambda: "switched off by the test")
    make = job(raw_syscalls([("shmget", 29, [0, 1 << 20, 0o1600])]))
    look = job(reporting("facts['shm'] = open('/proc/sysvipc/shm').read().splitlines()[1:]"))
    with SandboxPool(workers=1, limits=SandboxLimits(timeout_s=8.0, tmp_mb=16), sandbox="auto",
                     warn=lambda m: None) as pool:
        made, seen, honest = pool.run([make, look, HONEST])
        restarts = pool.restarts
    assert facts(made) == {"shmget": "ok"}  # really made, for lack of a filter
    assert facts(seen) == {"shm": []} and honest.passed
    assert restarts == 1
    arena.assert_untouched()  # the host's SysV objects: none added (IPC namespace)
    assert_nothing_left(arena)
