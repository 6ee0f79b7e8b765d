"""The batteries again, as an unprivileged user: what a laptop user runs.

As a user, bubblewrap maps one uid into a user namespace, so the worker and
its programs share it and there is no cgroup: the PID namespace (the worker
is its PID 1), non-dumpable processes and the system-call filter's argument
rules must hold on their own. Run only where this test runs as root and a
system interpreter of the same Python version can read the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534
FILES = ["test_hostile.py", "test_verdict.py", "test_kernel.py", "test_interference.py", "test_sharing.py"]


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root to switch to an unprivileged user"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    py = _python()
    if py is None:
        return f"no system python{sys.version_info.major}.{sys.version_info.minor} an unprivileged user can run"
    for p in (REPO / "src", REPO / "tests", Path(sysconfig.get_paths()["purelib"])):
        cur = p
        while cur != cur.parent:
            if not os.stat(cur).st_mode & 0o005:
                return f"{cur} is not readable by other users"
            cur = cur.parent
    return None


def _python() -> str | None:
    for cand in (f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}",
                 f"/usr/local/bin/python{sys.version_info.major}.{sys.version_info.minor}"):
        if os.path.isfile(cand) and os.stat(cand).st_mode & 0o001:
            return cand
    return None


@pytest.mark.timeout(300)
@pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))
def test_the_batteries_pass_as_an_unprivileged_user():
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), sysconfig.get_paths()["purelib"]])}
    r = subprocess.run(["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups", _python(),
                        "-m", "pytest", "-q", "-p", "no:cacheprovider", *[f"tests/security/{f}" for f in FILES]],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=280)
    tail = (r.stdout + r.stderr)[-4000:]
    assert r.returncode == 0, tail
    assert " passed" in tail and "failed" not in tail
