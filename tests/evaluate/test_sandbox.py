from __future__ import annotations

import json
import os
import textwrap
import uuid

import pytest

from helpers.processes import processes_with
from phi1.evaluate import sandbox as sb
from phi1.evaluate import sandbox_bwrap
from phi1.evaluate.problems import load_problems
from phi1.evaluate.sandbox import UID_FIRST, Job, SandboxError, SandboxLimits, SandboxPool, bubblewrap_problem

needs_bwrap = pytest.mark.skipif(bubblewrap_problem() is not None, reason=f"bubblewrap unusable: {bubblewrap_problem()}")
PROMPT = "def double(x):\n"
TEST = "def check(candidate):\n    assert candidate(2) == 4\n"
LIMITS = SandboxLimits(timeout_s=2.0, memory_mb=512, tmp_mb=16)


def job(completion: str, test: str = TEST) -> Job:
    return Job(PROMPT, completion, test, "double")


def report(code: str) -> str:
    """A completion that raises with a JSON report of what it saw inside the sandbox."""
    return textwrap.indent(textwrap.dedent(code).strip("\n"), "    ") + "\n    raise Exception(json.dumps(facts))\n"


@pytest.fixture(scope="module")
def pool():
    if bubblewrap_problem() is not None:
        pytest.skip(f"bubblewrap unusable: {bubblewrap_problem()}")
    with SandboxPool(workers=2, limits=LIMITS, sandbox="bubblewrap") as p:
        yield p


@needs_bwrap
def test_canonical_solutions_pass(pool):
    probs = list(load_problems().values())[::8]
    res = pool.run([Job(p.prompt, p.canonical_solution, p.test, p.entry_point) for p in probs])
    assert [r.result for r in res] == ["passed"] * len(probs)
    assert pool.kind == "bubblewrap" and pool.describe()["warning"] is None


@needs_bwrap
def test_verdicts_in_human_eval_words(pool):
    broken = "    return (\n"
    program = PROMPT + broken + "\n" + TEST + "\n" + "check(double)"
    with pytest.raises(SyntaxError) as e:
        exec(compile(program, "<string>", "exec", dont_inherit=True), {})
    res = pool.run([
        job("    return x * 2\n"),
        job("    return x + 3\n"),
        job("    raise ValueError('boom')\n"),
        job(broken),
        job("    while True:\n        pass\n"),
        job("    return x * 2\ndel double\n"),
    ])
    assert [r.result for r in res] == ["passed", "failed: ", "failed: boom", f"failed: {e.value}", "timed out",
                                       "failed: name 'double' is not defined"]
    assert [r.passed for r in res] == [True] + [False] * 5


@needs_bwrap
def test_output_is_captured_and_does_not_decide(pool):
    r = pool.run([job("    print('passed'); print('hello', flush=True)\n    return x * 2\n")])[0]
    assert r.passed and "hello" in r.output
    r = pool.run([job("    print('passed', flush=True)\n    return x\n")])[0]
    assert not r.passed and r.output.startswith("passed")


@needs_bwrap
def test_checks_that_are_not_plain_functions_still_run(pool):
    decorated = "import functools\n@functools.lru_cache(None)\ndef _c(c):\n    assert c(2) == 4\ndef check(c):\n    assert c(2) == 4\ncheck = check\n"
    res = pool.run([job("    return x * 2\n", decorated), job("    return x\n", decorated)])
    assert [r.passed for r in res] == [True, False]


@needs_bwrap
def test_what_a_program_sees_inside(pool):
    code = report("""
        import json, os, socket, sys
        status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
        facts = {"host": socket.gethostname(), "uid": os.getuid(), "pid": os.getpid(), "ppid": os.getppid(),
                 "tmp": sorted(os.listdir("/tmp")), "cwd": os.getcwd(), "ifaces": open("/proc/self/net/dev").read().count(":"),
                 "cap": status["CapEff"].strip(), "seccomp": status["Seccomp"].strip(),
                 "no_new_privs": status["NoNewPrivs"].strip(),
                 "procs": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
                 "run": os.listdir("/run") if os.path.isdir("/run") else [],
                 "home": os.listdir(os.path.expanduser("~")) if os.path.isdir(os.path.expanduser("~")) else [],
                 "ctypes": "_ctypes" in sys.modules, "site": "site" in sys.modules, "path": sys.path,
                 "env": sorted(os.environ)}
        for path in ("/usr/phi1-probe", "/var/tmp/phi1-probe", os.getcwd() + "/ok"):
            try:
                open(path, "w").write("x")
                facts[path] = "written"
            except OSError as e:
                facts[path] = type(e).__name__
        for path in ("/proc/self/mem", "/proc/1/mem"):
            try:
                open(path, "rb")
                facts[path] = "opened"
            except OSError as e:
                facts[path] = e.errno
        """)
    r = pool.run([job(code)])[0]
    facts = json.loads(r.result.removeprefix("failed: "))
    assert facts["host"] == "phi1-sandbox"
    assert facts["ifaces"] == 1  # loopback only
    assert facts["cap"] == "0000000000000000"
    assert facts["seccomp"] == "2" and facts["no_new_privs"] == "1"  # the filter is on
    if os.geteuid() == 0:
        assert facts["uid"] >= UID_FIRST
    assert facts["ppid"] == 1 and facts["procs"] == [1, facts["pid"]]  # the worker is PID 1, then this program
    assert facts["/usr/phi1-probe"] != "written" and facts["/var/tmp/phi1-probe"] != "written"
    assert facts[next(k for k in facts if k.endswith("/ok"))] == "written"
    assert facts["/proc/self/mem"] == 13 and facts["/proc/1/mem"] == 13  # nobody is dumpable
    assert facts["tmp"] == [] and facts["cwd"] == "/tmp"  # it starts in the empty scratch folder
    assert facts["run"] == []  # the host's unix sockets (D-Bus, Docker) are hidden
    assert facts["ctypes"] is False and facts["site"] is False  # the standard library only, ctypes never loaded
    assert not any("site-packages" in p for p in facts["path"])
    assert set(facts["env"]) <= {"HOME", "LANG", "PATH", "TMPDIR", "PWD"}  # nothing of the caller's


@needs_bwrap
def test_scratch_space_is_wiped_between_programs():
    with SandboxPool(workers=1, limits=LIMITS, sandbox="bubblewrap") as pool:
        leave = job("    open('/tmp/leak', 'w').write('x'); open('/dev/shm/leak', 'w').write('x')\n"
                    "    open('here', 'w').write('x')\n    return x * 2\n")
        look = job(report("""
            import json, os
            facts = {"tmp": os.listdir("/tmp"), "shm": os.listdir("/dev/shm"), "cwd": os.listdir(".")}
            """))
        first, second = pool.run([leave, look])
    assert first.passed
    facts = json.loads(second.result.removeprefix("failed: "))
    assert facts["shm"] == [] and facts["cwd"] == [] and facts["tmp"] == []


def test_bubblewrap_required_but_missing_is_an_error(monkeypatch):
    monkeypatch.setattr(sandbox_bwrap, "bubblewrap_path", lambda: None)
    with pytest.raises(SandboxError, match="bubblewrap.*not installed"):
        SandboxPool(workers=1, limits=LIMITS, sandbox="bubblewrap")


@needs_bwrap
def test_bubblewrap_that_fails_to_start_is_reported(monkeypatch):
    real = sb.bubblewrap_argv
    monkeypatch.setattr(sb, "bubblewrap_argv", lambda *a, **k: real(*a, **k)[:-1] + ["--no-such-flag", "--"])
    with pytest.raises(SandboxError, match="no-such-flag|Unknown option"):
        SandboxPool(workers=1, limits=LIMITS, sandbox="bubblewrap")
    warnings: list[str] = []
    with SandboxPool(workers=1, limits=LIMITS, sandbox="auto", warn=warnings.append) as pool:
        assert pool.kind == "fallback"
        assert "no-such-flag" in pool.describe()["warning"] or "Unknown option" in pool.describe()["warning"]
    assert warnings and "WITHOUT bubblewrap" in warnings[0]




def test_fallback_is_loud_and_still_judges_correctly(monkeypatch):
    # Only non-destructive programs here: the fallback does not isolate the file system.
    monkeypatch.setattr(sandbox_bwrap, "bubblewrap_path", lambda: None)
    warnings: list[str] = []
    marker = f"phi1fb{uuid.uuid4().hex[:10]}"
    with SandboxPool(workers=2, limits=SandboxLimits(timeout_s=1.0, memory_mb=512), sandbox="auto",
                     warn=warnings.append) as pool:
        desc = pool.describe()
        res = pool.run([
            job("    return x * 2\n"),
            job("    return 0\nimport sys\nsys.exit(0)\n"),
            job("    return 0\nimport os\nprint('passed', flush=True)\nos._exit(0)\n"),
            job("    while True:\n        pass\n"),
            job(f"    import subprocess\n    subprocess.Popen(['sh', '-c', 'sleep 1000; : {marker}'], "
                f"start_new_session=True)\n    return x\n"),
            job(f"    import os\n    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n"
                f"            os.execv('/bin/sh', ['sh', '-c', 'sleep 1000; : {marker}'])\n"
                f"        os._exit(0)\n    return x\n"),
            job("    x = bytearray(2**34)\n    return 4\n"),
        ])
        left_during = processes_with(marker)
    assert desc["kind"] == "fallback" and "WITHOUT bubblewrap" in desc["warning"]
    assert warnings and "not installed" in warnings[0]
    assert [r.passed for r in res] == [True] + [False] * 6
    assert res[3].result == "timed out"
    assert left_during == [] and processes_with(marker) == []


def test_fallback_requested_explicitly_still_warns():
    warnings: list[str] = []
    with SandboxPool(workers=1, limits=LIMITS, sandbox="fallback", warn=warnings.append) as pool:
        assert pool.run([job("    return x * 2\n")])[0].passed
    assert warnings and "requested" in warnings[0]


def test_bad_sandbox_kind():
    with pytest.raises(Exception, match="sandbox must be one of"):
        SandboxPool(workers=1, sandbox="docker")


def test_only_system_folders_and_python_are_visible():
    seen = sandbox_bwrap.visible_paths()
    for p in sandbox_bwrap.python_paths():  # the interpreter and its standard library are reachable
        assert any(p == q or p.startswith(q.rstrip("/") + "/") or os.path.realpath(q) == p for q in seen), p
    assert not any(q in ("/", "/home", "/root", "/run", "/var", "/work", "/sys", "/opt", "/mnt") for q in seen), seen
    assert not any(q == "/etc" for q in seen)  # a few files of it only
    args = sandbox_bwrap.system_view()
    assert "--ro-bind" in args and ("/", "/") not in zip(args[1:], args[2:])
    cwd = os.getcwd()  # the checkout (and wherever the samples are) is not among them
    assert not any(cwd == q or cwd.startswith(q + "/") for q in seen if not q.startswith(("/usr", "/lib")))


@needs_bwrap
@pytest.mark.skipif(os.geteuid() != 0, reason="uids per program need root")
def test_missing_layers_are_said_not_fatal(monkeypatch):
    # no place for the uid counter, no way to make a cgroup: bubblewrap still runs, loudly
    from phi1.evaluate import sandbox_cgroups

    monkeypatch.setenv("PHI1_SANDBOX_UID_STATE", "/proc/phi1-nowhere/uids")

    def refuse(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(sandbox_cgroups.WorkerCgroup, "create", refuse)
    warnings: list[str] = []
    with SandboxPool(workers=1, limits=LIMITS, sandbox="bubblewrap", warn=warnings.append) as pool:
        res = pool.run([job("    return x * 2\n"), job(report("import json, os\nfacts = {'uid': os.getuid()}"))])
        desc = pool.describe()
    assert res[0].passed and json.loads(res[1].result.removeprefix("failed: "))["uid"] >= UID_FIRST
    assert desc["kind"] == "bubblewrap" and desc["cgroups"] is None
    text = " ".join(warnings)
    assert "uid counter" in text and "random" in text and "no memory/pids cgroup" in text
