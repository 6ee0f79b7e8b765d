"""Fixtures of the report tests (the fixture run is described in report_helpers).

Drawing a report costs seconds of CPU (matplotlib), so the intact run's report
is drawn once per session and shared; tests that damage a run draw their own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from report_helpers import copy_run


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return copy_run(tmp_path)


@pytest.fixture(scope="session")
def fixture_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RUN/report.html of an untouched copy of the fixture run (do not modify it)."""
    from phi1.report import write_report

    return write_report(copy_run(tmp_path_factory.mktemp("report")))
