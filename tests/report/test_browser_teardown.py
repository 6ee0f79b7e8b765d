"""Closing the browser ends every process it forked and removes its profile, even when a helper
ignores SIGTERM and keeps writing into the profile (Chromium's crashpad and renderers flush
`Default/` after the main process exits: that race once failed `make test`)."""

from __future__ import annotations

import os
import signal
import stat
import sys
import textwrap
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

from phi1.report.browser import HeadlessChromium

FAKE_BROWSER = """\
    import os, signal, sys, time
    profile = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--user-data-dir="))
    os.makedirs(os.path.join(profile, "Default"), exist_ok=True)
    pid = os.fork()
    if pid == 0:  # a helper that outlives SIGTERM and keeps refilling the profile
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with open(os.environ["FAKE_HELPER_PID"], "w") as f:
            f.write(str(os.getpid()))
        i = 0
        while True:
            i += 1
            try:
                os.makedirs(os.path.join(profile, "Default", "Cache"), exist_ok=True)
                open(os.path.join(profile, "Default", "Cache", f"f{i % 50}"), "w").close()
            except OSError:
                pass
            time.sleep(0.001)
    while not os.path.exists(os.environ["FAKE_HELPER_PID"]):
        time.sleep(0.01)
    # DevTools "listens" on port 1, where nothing answers: opening the page list fails.
    with open(os.path.join(profile, "DevToolsActivePort"), "w") as f:
        f.write("1\\n/devtools/browser/fake\\n")
    time.sleep(3600)
"""


@pytest.fixture
def fake_browser(tmp_path, monkeypatch) -> Iterator[Path]:
    monkeypatch.setenv("FAKE_HELPER_PID", str(tmp_path / "helper.pid"))
    path = tmp_path / "fake-chromium"
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(FAKE_BROWSER))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    yield path
    # if close() failed to, do not leave a helper spinning after the test
    pid_file = tmp_path / "helper.pid"
    if pid_file.exists() and _alive(pid := int(pid_file.read_text())):
        os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose (its parent, the fake browser, was killed and init reaps it)
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_failed_start_ends_the_helpers_and_removes_the_profile(fake_browser, tmp_path):
    b = HeadlessChromium(binary=str(fake_browser), timeout=20)
    root = Path(b._profile.name)
    with pytest.raises(urllib.error.URLError):
        b.__enter__()
    assert not root.exists(), f"the profile {root} was left behind"
    assert b.proc is not None and b.proc.poll() is not None, "the browser is still running"
    helper = int((tmp_path / "helper.pid").read_text())
    deadline = time.monotonic() + 5
    while _alive(helper) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(helper), f"helper {helper} survived close()"


def test_close_twice_is_harmless(fake_browser):
    b = HeadlessChromium(binary=str(fake_browser), timeout=20)
    with pytest.raises(urllib.error.URLError):
        b.__enter__()
    b.close()
