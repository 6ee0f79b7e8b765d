"""The ingest stage on the Slurm executor, against a fake `sbatch`/`srun`/`squeue`.

The fake sbatch runs each array task of the submitted script right away (in
submission order, which respects the `afterok` chain) and records its
arguments, so this exercises the real path: datatrove's launch scripts and
pickled executors, phi1's submit-then-wait loop and the funnel read from
per-task stats files.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

from corpus_helpers import run_cli, snippet, write_config, write_jsonl

from phi1.documents import read_documents

FAKE_SBATCH = r'''
import os, re, subprocess, sys
from pathlib import Path
here = Path(__file__).parent
args, script = sys.argv[1:-1], sys.argv[-1]
text = open(script).read()
ids = here / "last_id"
job = int(ids.read_text()) + 1 if ids.exists() else 100
ids.write_text(str(job))
with open(here / "submissions.log", "a") as log:
    log.write(" ".join(args) + (" merge_stats" if "merge_stats" in text else "") + "\n")
if "merge_stats" not in text:
    env = dict(os.environ, SLURM_NODELIST="localhost", SLURM_JOB_ID=str(job))
    for a in args:
        if a.startswith("--export=ALL,"):
            env.update(kv.split("=", 1) for kv in a[len("--export=ALL,"):].split(","))
    lo, hi = map(int, re.search(r"#SBATCH --array=(\d+)-(\d+)", text).groups())
    out = re.search(r"#SBATCH --output=(\S+)", text).group(1)
    for i in range(lo, hi + 1):
        env["SLURM_ARRAY_TASK_ID"] = str(i)
        with open(out.replace("%A", str(job)).replace("%a", str(i)), "w") as f:
            if subprocess.run(["bash", script], env=env, stdout=f, stderr=subprocess.STDOUT).returncode:
                sys.exit(f"array task {i} failed")
print(f"Submitted batch job {job}")
'''

FAKE_SRUN = r'''
import os, sys
a = sys.argv[1:]
while a and a[0].startswith("-"):
    a = a[2:] if a[0] == "-n" else a[1:]
os.execvp(a[0], a)
'''


FAKE_SCONTROL = r'''
import sys
print("\n".join(sys.argv[3:]))  # scontrol show hostnames <list>
'''


def _install_fakes(bin_dir: Path) -> None:
    bin_dir.mkdir()
    for name, body in (("sbatch", FAKE_SBATCH), ("srun", FAKE_SRUN), ("squeue", ""), ("scontrol", FAKE_SCONTROL)):
        p = bin_dir / name
        p.write_text(f"#!{sys.executable}\n{textwrap.dedent(body)}")
        p.chmod(0o755)


def test_ingest_on_slurm_executor(tmp_path):
    _install_fakes(tmp_path / "bin")
    a, b = snippet(1), snippet(2)
    write_jsonl(tmp_path / "data" / "x.jsonl", [{"text": a}, {"text": b}])
    write_jsonl(tmp_path / "data" / "y.jsonl", [{"text": a}, {"text": snippet(3)}])
    cfg = write_config(tmp_path / "c.toml", tmp_path / "runs", f"""
        [[ingest.sources]]
        kind = "jsonl"
        path = "{tmp_path / 'data'}"
        [ingest.minhash]
        enabled = false
        [ingest.executor]
        kind = "slurm"
        tasks = 1
        [ingest.executor.slurm]
        partition = "debug"
        env_command = "export PHI1_FAKE_NODE=1"
        """)
    env = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    r = run_cli("run", str(cfg), "--only", "ingest", env=env, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "submitted Slurm jobs" in r.stdout

    subs = (tmp_path / "bin" / "submissions.log").read_text().splitlines()
    jobs = [s for s in subs if not s.endswith("merge_stats")]
    assert len(jobs) == 3  # clean -> exact: find -> exact: filter
    assert "--dependency" not in jobs[0]
    assert "--dependency=afterok:100" in jobs[1] and "--dependency=afterok:102" in jobs[2]

    out = tmp_path / "runs" / "t" / "ingest"
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["documents_in"] == 4 and m["counts"]["dropped_exact_duplicate"] == 1
    assert sorted(d.text for d in read_documents(out / "docs")) == sorted([a, b, snippet(3)])
    script = next((out / "logs").glob("1-clean/launch_script.slurm")).read_text()
    assert "#SBATCH --partition=debug" in script and "export PHI1_FAKE_NODE=1" in script
    assert list((out / "logs" / "1-clean" / "slurm_logs").glob("100_*.out"))
