"""The `phi1` command: help, stages listing, wiring."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from phi1.cli import build_parser, main
from phi1.registry import STAGES

REPO = Path(__file__).resolve().parents[1]
PHI1 = str(Path(sys.executable).with_name("phi1"))


def test_installed_entry_point_help():
    r = subprocess.run([PHI1, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for s in STAGES:
        assert s.name in r.stdout
    for cmd in ("run", "stages", "export", "execute"):
        assert cmd in r.stdout


@pytest.mark.parametrize("cmd", ["run", "stages", "export", "execute"] + [s.name for s in STAGES])
def test_every_subcommand_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: phi1" in out
    if cmd in {s.name for s in STAGES}:
        assert "--config" in out and "--set" in out


def test_stages_lists_status(tmp_path, capsys):
    rc = main(["stages", str(REPO / "configs/demo.toml"), "--set", f"run.root={tmp_path}"])
    assert rc == 0
    out = capsys.readouterr().out
    for s in STAGES:
        assert s.name in out
    assert "pending" in out


def test_stage_subcommand_requires_config(capsys):
    with pytest.raises(SystemExit):
        main(["ingest"])
    assert "--config" in capsys.readouterr().err


def test_unknown_stage_in_only_is_one_line_error(tmp_path, capsys):
    rc = main(["run", str(REPO / "configs/demo.toml"), "--set", f"run.root={tmp_path}", "--only", "ingset"])
    assert rc != 0
    err = capsys.readouterr().err
    assert "did you mean 'ingest'" in err and len(err.strip().splitlines()) == 1


def test_missing_config_is_one_line_error(tmp_path, capsys):
    rc = main(["run", str(tmp_path / "nope.toml")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert "not found" in err and len(err.splitlines()) == 1


def test_stages_marks_config_skipped_stage(tmp_path, capsys):
    main(["stages", str(REPO / "configs/demo.toml"), "--set", f"run.root={tmp_path}"])
    out = capsys.readouterr().out
    grade = [x for x in out.splitlines() if x.startswith("grade")][0]
    assert "skipped" in grade and "no grader endpoint" in grade


def test_a_full_disk_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    # what a full disk or a read-only run folder raises from deep inside a stage: no traceback
    import errno

    import phi1.files

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(phi1.files.os, "fsync", full)
    rc = main(["run", str(REPO / "configs/demo.toml"), "--only", "ingest", "--set", f"run.root={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert err.startswith("error: No space left on device: ") and ".attempt.json" in err, err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("args, words", [
    (["--k", "abc"], "--k takes positive integers"),
    (["--timeout", "inf"], "--timeout must be a number of seconds up to 86400"),
    (["--timeout", "1e8"], "--timeout must be a number of seconds up to 86400"),  # the sandbox worker died: all failed
])
def test_execute_arguments_are_one_line_errors(tmp_path, capsys, args, words):
    samples = tmp_path / "s.jsonl"
    samples.write_text('{"task_id": "HumanEval/0", "completion": "    return False\\n"}\n')
    rc = main(["execute", str(samples), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and words in err and len(err.splitlines()) == 1, err


def test_out_of_memory_is_one_line(tmp_path, capsys, monkeypatch):
    import phi1.pipeline

    def huge(self, *a, **k):
        raise MemoryError()

    monkeypatch.setattr(phi1.pipeline.Pipeline, "run", huge)
    rc = main(["run", str(REPO / "configs/demo.toml"), "--set", f"run.root={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.startswith("error: out of memory") and len(err.splitlines()) == 1


def test_an_unexpected_exception_is_one_line_with_the_traceback_kept(tmp_path, capsys, monkeypatch):
    # a bug, or a damaged file no check foresaw, deep in a stage: one line naming the error and where the
    # traceback went; PHI1_TRACEBACK=1 raises it as before
    import phi1.pipeline

    def broken(self, *a, **k):
        raise ValueError("a field no reader expected\nsecond line")

    monkeypatch.setattr(phi1.pipeline.Pipeline, "run", broken)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv("PHI1_TRACEBACK", raising=False)
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    rc = main(["run", str(REPO / "configs/demo.toml"), "--set", f"run.root={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1, err
    assert err.startswith("error: unexpected ValueError: a field no reader expected second line -- ") and "Traceback" not in err
    saved = list(tmp_path.glob("phi1-traceback-*.txt"))
    assert len(saved) == 1 and str(saved[0]) in err
    assert "Traceback (most recent call last)" in saved[0].read_text() and "broken" in saved[0].read_text()
    monkeypatch.setenv("PHI1_TRACEBACK", "1")
    with pytest.raises(ValueError):
        main(["run", str(REPO / "configs/demo.toml"), "--set", f"run.root={tmp_path}"])
