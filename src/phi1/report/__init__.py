"""The run report: RUN_DIR/report.html with a section per stage that ran, and
the paper's figures beside this run's (`paper_reference`, used by the run summary).

Importing this package is cheap; matplotlib loads only when a report is drawn.
"""

from __future__ import annotations

from pathlib import Path

from phi1.report.paper import paper_reference

__all__ = ["paper_reference", "write_report"]


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write RUN_DIR/report.html (or ``out``); returns its path. See `phi1.report.build`."""
    from phi1.report.build import write_report as _write

    return _write(run_dir, out)
