"""Helpers of the real-cluster tests: the commands of docs/scale-out.md
(`doc_command`), the shrunk demo run (`run_phi1`), outputs to compare, and
thin wrappers of squeue/sacct. Fixtures are in conftest.py."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PHI1 = str(Path(sys.executable).with_name("phi1"))
DOC = REPO / "docs" / "scale-out.md"
SLURM_STATE = Path(os.environ.get("PHI1_SLURM_STATE", "/var/lib/phi1-slurm"))

# The demo config shrunk to a slice of the standard library (the executors'
# plumbing is under test here, not the corpus): ~20-30 s per run on 2 cores.
SHRINK = [
    'ingest.sources=[{kind = "python_tree", path = "", limit = 80}]',
    "ingest.executor.tasks=2",
    "ingest.minhash.num_buckets=2",
    "annotate.samples=40",
    "classifier.n_estimators=20",
    "filter.mode=keep_fraction",  # as configs/phi-1.toml: two chained steps (score, then keep the top share)
    "filter.keep_fraction=0.5",
    "filter.executor.tasks=2",
    "embed.scope=labelled",
    "run.report=false",
]
CORPUS_STAGES = ["ingest", "annotate", "embed", "classifier", "filter"]


def doc_blocks() -> dict[str, str]:
    """Fenced blocks of docs/scale-out.md tagged ```<lang> scale-test:<name>."""
    text = DOC.read_text()
    return {m.group(1): m.group(2) for m in re.finditer(r"```\w* scale-test:([\w-]+)\n(.*?)```", text, re.S)}


def doc_command(name: str) -> list[str]:
    """The shell command of block `name`, split like a shell would (continuations joined)."""
    block = doc_blocks()[name]
    lines = [ln for ln in block.replace("\\\n", " ").splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(lines) == 1, f"scale-test:{name} must hold one command, got {lines}"
    return shlex.split(lines[0])


def phi1_run_args(name: str) -> tuple[list[str], list[str]]:
    """(--only stages, --set overrides) of a `phi1 run configs/demo.toml ...` block of the page."""
    argv = doc_command(name)
    assert argv[:3] == ["phi1", "run", "configs/demo.toml"], argv
    only, sets, i = [], [], 3
    while i < len(argv):
        if argv[i] == "--set":
            sets.append(argv[i + 1])
            i += 2
        elif argv[i] == "--only":
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                only.append(argv[i])
                i += 1
        else:
            raise AssertionError(f"scale-test:{name}: unexpected argument {argv[i]!r}")
    return only, sets


def run_phi1(root: Path, name: str, only: list[str], sets: list[str], *, extra: list[str] = (),
             timeout: float = 400, env: dict | None = None) -> subprocess.CompletedProcess:
    """`phi1 run configs/demo.toml` shrunk, in `root`/`name`, from the repository."""
    args = [PHI1, "run", "configs/demo.toml", "--only", *only]
    for s in [*sets, *SHRINK, *extra, f"run.root={root}", f"run.name={name}"]:
        args += ["--set", s]
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def docs_of(folder: Path) -> list[tuple[str, str]]:
    """(id, text) of every document of a stage's docs/ folder, sorted."""
    from phi1.documents import read_documents

    return sorted((d.id, d.text) for d in read_documents(folder))


def manifest(run: Path, stage: str) -> dict:
    return json.loads((run / stage / "manifest.json").read_text())


def outcome_counts(run: Path, stage: str) -> dict:
    """A stage's counts without the work-done ones: `embedded` counts vectors the
    filter computed rather than found in the (shared) embedding cache."""
    return {k: v for k, v in manifest(run, stage)["counts"].items() if k != "embedded"}


def squeue(job_ids: list[str]) -> list[str]:
    """Lines `jobid|state|reason` of these jobs still in the queue (array tasks expanded)."""
    r = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T|%r", "-j", ",".join(job_ids)],
                       capture_output=True, text=True, timeout=30)
    return r.stdout.split()


def sacct(job_ids: list[str]) -> dict[str, str]:
    """Array task (``<job>_<index>``) -> state, from Slurm's accounting database
    (tasks cancelled while pending, ``<job>_[2-3%1]``, are expanded)."""
    r = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(job_ids)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    out = {}
    for line in r.stdout.splitlines():
        job, state = line.split("|", 1)
        base, _, index = job.partition("_")
        m = re.fullmatch(r"\[(\d+)(?:-(\d+))?(?:%\d+)?\]", index)  # [2-3] or [2%1]: pending, then cancelled
        for i in range(int(m[1]), int(m[2] or m[1]) + 1) if m else [None]:
            out[job if i is None else f"{base}_{i}"] = state
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RayHead:
    address: str  # host:port of its GCS, what [*.executor.ray] address takes
    temp_dir: Path  # its sessions, sockets and logs


def group_members(pgid: int) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if os.getpgid(int(p.name)) == pgid:
                    pids.append(int(p.name))
            except OSError:
                pass
    return pids


def kill_group(pgid: int) -> None:
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + wait
        while group_members(pgid) and time.time() < deadline:
            time.sleep(0.2)
        if not group_members(pgid):
            return
