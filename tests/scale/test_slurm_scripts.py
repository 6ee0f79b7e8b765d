"""scripts/slurm-up is idempotent, and scripts/slurm-down stops exactly the
daemons slurm-up started (by pid), leaving anything else running."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from scale_helpers import REPO, SLURM_STATE

UP, DOWN = str(REPO / "scripts" / "slurm-up"), str(REPO / "scripts" / "slurm-down")


def _started() -> dict[str, int]:
    """Daemon name -> pid, for what slurm-up recorded as started by itself."""
    out = {}
    for line in (SLURM_STATE / "started").read_text().splitlines():
        name, pidfile = line.split()
        out[name] = int(Path(pidfile).read_text())
    return out


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def test_slurm_up_is_idempotent_and_down_stops_what_up_started(slurm_cluster):
    t0 = time.time()
    r = subprocess.run([UP], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "already up" in r.stdout, r.stdout + r.stderr
    assert time.time() - t0 < 10
    daemons = _started()
    assert {"slurmctld", "slurmd", "slurmdbd", "mariadbd"} <= set(daemons)
    assert all(_alive(p) for p in daemons.values())

    bystander = subprocess.Popen(["sleep", "300"])  # not ours to stop
    try:
        r = subprocess.run([DOWN], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        deadline = time.time() + 20
        while any(_alive(p) for p in daemons.values()) and time.time() < deadline:
            time.sleep(0.2)
        assert not [n for n, p in daemons.items() if _alive(p)], r.stdout
        assert bystander.poll() is None
        assert not Path("/etc/slurm/slurm.conf").exists() and not (SLURM_STATE / "started").exists()
        assert subprocess.run(["sinfo"], capture_output=True, timeout=30).returncode != 0
        again = subprocess.run([DOWN], capture_output=True, text=True, timeout=60)  # nothing left: a no-op
        assert again.returncode == 0 and "nothing to stop" in again.stdout
    finally:
        bystander.kill()
        bystander.wait()
        # up again for the tests after this one (the session fixture stops it at the end)
        r = subprocess.run([UP], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
    assert "up: partition" in r.stdout
    state = subprocess.run(["sinfo", "-h", "-o", "%P %t"], capture_output=True, text=True, timeout=30).stdout
    assert state.split() == ["debug*", "idle"], state
