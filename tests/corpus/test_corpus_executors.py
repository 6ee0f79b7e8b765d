"""phi1.executors: datatrove's local executor with 2 workers; Slurm and Ray construction and the
decisions that need no cluster (the real Slurm and Ray runs are in tests/scale)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from datatrove.data import Document
from datatrove.executor import SlurmPipelineExecutor
from datatrove.pipeline.base import PipelineStep

from phi1.errors import Phi1Error
from phi1.executors import (
    PhiLocalExecutor, PhiRayExecutor, PhiSlurmExecutor, SlurmQueue, build_executor, completed_ranks,
    run_executors, stat_totals,
)
from phi1.sections import ExecutorConfig, RayConfig, SlurmConfig


class MakeDocs(PipelineStep):
    """Each task records its process id and yields a few documents."""

    name = "make docs"

    def __init__(self, folder: str, fail_rank: int = -1):
        super().__init__()
        self.folder = folder
        self.fail_rank = fail_rank

    def run(self, data, rank: int = 0, world_size: int = 1):
        if rank == self.fail_rank:
            raise RuntimeError(f"task {rank} broke")
        Path(self.folder, f"{rank}.pid").write_text(str(os.getpid()))
        for i in range(rank + 1):
            self.stat_update("made_docs")
            yield Document(text=f"doc {rank}.{i}", id=f"{rank}.{i}")


class CountDocs(PipelineStep):
    name = "count"

    def run(self, data, rank: int = 0, world_size: int = 1):
        for doc in data:
            self.stat_update("seen_docs")
            yield doc


def test_local_executor_two_workers(tmp_path, quiet_loguru):
    cfg = ExecutorConfig(kind="local", tasks=4, workers=2)
    ex = build_executor(cfg, [MakeDocs(str(tmp_path)), CountDocs()], tmp_path / "logs", "t")
    assert isinstance(ex, PhiLocalExecutor) and ex.workers == 2 and ex.world_size == 4
    run_executors([("make", ex)], progress=False)
    assert completed_ranks(tmp_path / "logs") == {0, 1, 2, 3}
    pids = {(tmp_path / f"{r}.pid").read_text() for r in range(4)}
    assert len(pids) >= 2 and str(os.getpid()) not in pids  # tasks ran in worker processes
    totals = stat_totals(tmp_path / "logs")
    assert totals["made_docs"] == totals["seen_docs"] == 1 + 2 + 3 + 4
    # a second run skips the finished tasks (datatrove completion markers)
    before = {r: (tmp_path / f"{r}.pid").stat().st_mtime_ns for r in range(4)}
    again = build_executor(cfg, [MakeDocs(str(tmp_path)), CountDocs()], tmp_path / "logs", "t")
    run_executors([("make", again)], progress=False)
    assert {r: (tmp_path / f"{r}.pid").stat().st_mtime_ns for r in range(4)} == before


def test_failing_task_is_one_line_error_naming_logs(tmp_path, quiet_loguru, capfd):
    cfg = ExecutorConfig(kind="local", tasks=2, workers=1)
    ex = build_executor(cfg, [MakeDocs(str(tmp_path), fail_rank=1)], tmp_path / "logs", "t")
    with pytest.raises(Phi1Error) as e:
        run_executors([("make", ex)], progress=False)
    assert "task 1 broke" in str(e.value) and str(tmp_path / "logs") in str(e.value)
    assert completed_ranks(tmp_path / "logs") == {0}
    assert "Traceback" not in capfd.readouterr().err  # the traceback is in the task's log file
    assert "task 1 broke" in (tmp_path / "logs" / "logs" / "task_00001.log").read_text()


def test_workers_never_exceed_tasks_and_overrides(tmp_path):
    cfg = ExecutorConfig(kind="local", tasks=8, workers=4)
    assert build_executor(cfg, [], tmp_path / "a", "t", tasks=1).workers == 1
    assert build_executor(ExecutorConfig(tasks=3, workers=-1), [], tmp_path / "b", "t").workers == 3


def test_slurm_executor_defaults_and_job_records(tmp_path):
    """An empty env_command puts this interpreter's bin folder first on PATH in every
    task (so `launch_pickled_pipeline` is ours); job ids from sbatch are recorded;
    no stats-merging job is submitted (phi1 writes stats.json itself)."""
    import sys

    cfg = ExecutorConfig(kind="slurm", tasks=2, slurm=SlurmConfig(partition="debug", poll_s=2))
    ex = build_executor(cfg, [], tmp_path / "logs", "t")
    assert isinstance(ex, PhiSlurmExecutor) and ex.poll_s == 2
    script = ex.get_launch_file_contents(ex.get_sbatch_args(2), "launch_pickled_pipeline x.pik")
    assert f"export PATH={Path(sys.executable).parent}:$PATH" in script
    assert ex.job_id_retriever("Submitted batch job 4242\n") == "4242" and ex.submitted.ids == ["4242"]
    ex.job_id = "4242"
    ex.launch_merge_stats()  # would call sbatch; must not
    assert ex.submitted.ids == ["4242"]


def test_slurm_without_sbatch_is_one_line(tmp_path, monkeypatch, quiet_loguru):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    cfg = ExecutorConfig(kind="slurm", tasks=2, slurm=SlurmConfig(partition="debug"))
    ex = build_executor(cfg, [MakeDocs(str(tmp_path))], tmp_path / "logs", "t")
    with pytest.raises(Phi1Error, match="needs sbatch on PATH .*scripts/slurm-up"):
        run_executors([("make", ex)], progress=False)


def test_stuck_slurm_jobs_only_when_nothing_can_run():
    """Jobs pending on a dependency that can never be satisfied are stuck (and with
    them every job waiting behind them) only once nothing of ours runs or can start."""
    never = ("PENDING", "DependencyNeverSatisfied")
    waits = ("PENDING", "Dependency")
    assert SlurmQueue({"1": [never], "2": [waits]}).stuck == ["1", "2"]
    assert SlurmQueue({"1": [never], "2": [waits]}).live == []
    assert SlurmQueue({"1": [("RUNNING", "None"), never], "2": [waits]}).stuck == []
    assert SlurmQueue({"1": [("PENDING", "Resources")], "2": [never]}).stuck == []
    assert SlurmQueue({"1": [waits]}).stuck == []  # a dependency just met: not yet re-evaluated
    assert SlurmQueue({}).live == [] and SlurmQueue(known=False).stuck == []


def test_ray_address_where_nothing_listens_is_one_line(tmp_path):
    pytest.importorskip("ray")
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = ExecutorConfig(kind="ray", tasks=1, ray=RayConfig(address=f"127.0.0.1:{port}"))
    ex = build_executor(cfg, [], tmp_path / "logs", "t")
    with pytest.raises(Phi1Error, match=f"no Ray cluster at 127.0.0.1:{port}.*ray start --head"):
        ex.run()


def test_slurm_executor_from_config(tmp_path):
    cfg = ExecutorConfig(kind="slurm", tasks=1000, workers=200,
                         slurm=SlurmConfig(partition="cpu", time="12:00:00", cpus_per_task=2, mem_per_cpu_gb=4,
                                           env_command="source /shared/phi1/.venv/bin/activate",
                                           sbatch_args={"account": "proj42"}))
    first = build_executor(cfg, [], tmp_path / "logs1", "phi1-ingest-1")
    ex = build_executor(cfg, [], tmp_path / "logs2", "phi1-ingest-2", depends=first, tasks=14)
    assert isinstance(ex, SlurmPipelineExecutor) and ex.depends is first and ex.world_size == 14
    script = ex.get_launch_file_contents(ex.get_sbatch_args(14), "launch_pickled_pipeline x.pik")
    for line in ("#SBATCH --partition=cpu", "#SBATCH --time=12:00:00", "#SBATCH --cpus-per-task=2",
                 "#SBATCH --mem-per-cpu=4G", "#SBATCH --account=proj42", "#SBATCH --array=0-13%14",
                 "#SBATCH --job-name=phi1-ingest-2", "source /shared/phi1/.venv/bin/activate"):
        assert line in script, line
    assert str(tmp_path / "logs2") in ex.slurm_logs_folder  # Slurm's own logs sit with datatrove's


def test_ray_executor_from_config(tmp_path):
    cfg = ExecutorConfig(kind="ray", tasks=64, workers=16, ray=RayConfig(address="auto", cpus_per_task=2))
    ex = build_executor(cfg, [], tmp_path / "logs", "t")
    assert isinstance(ex, PhiRayExecutor)
    assert (ex.world_size, ex.workers, ex.cpus_per_task, ex.phi1_address) == (64, 16, 2, "auto")
    try:
        import ray  # noqa: F401
    except ImportError:
        with pytest.raises(Phi1Error, match="pip install"):
            ex.run()


def test_threads_per_task_never_oversubscribes():
    import os

    from phi1.executors import threads_per_task
    from phi1.sections import ExecutorConfig, SlurmConfig

    cores = os.cpu_count() or 1
    assert threads_per_task(ExecutorConfig(tasks=4, workers=2)) == max(1, cores // 2)
    assert threads_per_task(ExecutorConfig(tasks=1, workers=-1)) == cores
    assert threads_per_task(ExecutorConfig(tasks=64, workers=-1)) == 1
    slurm = ExecutorConfig(kind="slurm", slurm=SlurmConfig(partition="p", cpus_per_task=6))
    assert threads_per_task(slurm) == 6
