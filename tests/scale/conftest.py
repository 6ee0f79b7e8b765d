"""Real clusters for the scale-out tests: a single-node Slurm cluster
(scripts/slurm-up, Debian's slurm-wlm + munge + slurmdbd) and a Ray head node
(`ray start --head`), each started once per test session and stopped at its
end if the session started it. The commands the tests run are taken from
docs/scale-out.md (see `doc_command`), so the page shows what was run.

A test using a cluster is marked `cluster` (`make test-fast` deselects it); it
is skipped, with the reason, only where a cluster cannot exist: not root, no
apt-get, a foreign Slurm configuration, no `ray` package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scale_helpers import (
    CORPUS_STAGES, REPO, SLURM_STATE, RayHead, free_port, kill_group, doc_command, run_phi1,
)

CLUSTERS = {"slurm_cluster", "ray_cluster"}


def pytest_collection_modifyitems(items):
    for item in items:
        if CLUSTERS & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def embed_cache(tmp_path_factory) -> Path:
    """One embedding cache for every run of the session: vectors are computed once."""
    return tmp_path_factory.mktemp("embeddings")


@pytest.fixture(scope="session")
def local_reference(tmp_path_factory, embed_cache) -> Path:
    """ingest -> filter with the local executor: what Slurm and Ray must reproduce."""
    root = tmp_path_factory.mktemp("local")
    r = run_phi1(root, "local", CORPUS_STAGES, [f"embed.cache_dir={embed_cache}"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return root / "local"


def _slurm_running() -> bool:
    return (SLURM_STATE / "started").exists() and subprocess.run(
        ["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """A real single-node Slurm cluster; yields its partition.

    Brought up with scripts/slurm-up (as the page says) and stopped with
    scripts/slurm-down at the end, unless it was already up before the session.
    """
    if os.geteuid() != 0:
        pytest.skip("a real Slurm cluster needs root: scripts/slurm-up installs slurm-wlm/munge and starts daemons")
    was_up = shutil.which("sinfo") is not None and _slurm_running()
    r = subprocess.run(doc_command("slurm-up"), cwd=REPO, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    if r.returncode != 0:
        if "needs apt-get" in out or "was not written by this script" in out:
            pytest.skip(f"no test Slurm cluster here: {out.strip().splitlines()[-1]}")
        pytest.fail(f"scripts/slurm-up failed:\n{out}")
    yield os.environ.get("PHI1_SLURM_PARTITION", "debug")
    if not was_up:
        down = subprocess.run([str(REPO / "scripts" / "slurm-down")], capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr


@pytest.fixture(scope="session")
def ray_cluster() -> RayHead:
    """A Ray head node started with the page's `ray start --head` (on a free
    port, with a private temp dir). Stopped at the end by signalling the
    process group it was started in (never `ray stop`, which stops every Ray
    on the machine)."""
    ray_bin = Path(sys.executable).with_name("ray")
    if not ray_bin.exists():
        pytest.skip("ray is not installed: pip install -e '.[ray]' (make setup does)")
    argv = doc_command("ray-start")
    assert argv[:3] == ["ray", "start", "--head"], argv
    port = free_port()
    argv = [str(ray_bin), *[a if not a.startswith("--port") else f"--port={port}" for a in argv[1:]]]
    if not any(a.startswith("--port") for a in argv):
        argv.append(f"--port={port}")
    temp = Path("/tmp") / f"phi1-ray-{os.getpid()}"  # Ray's socket paths must stay short
    argv += ["--node-ip-address=127.0.0.1", f"--temp-dir={temp}", "--include-dashboard=false",
             "--disable-usage-stats"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    out, _ = proc.communicate(timeout=180)
    try:
        assert proc.returncode == 0, out
        yield RayHead(f"127.0.0.1:{port}", temp)
    finally:
        kill_group(proc.pid)
        shutil.rmtree(temp, ignore_errors=True)
