"""The report in a real browser: headless Chromium (Debian's `chromium`) over the DevTools protocol.

Skipped only where no Chromium is installed (`make setup` installs it as root).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from phi1.report.browser import HeadlessChromium, check_report, find_chromium
from report_helpers import PLOTS, SECTIONS

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="no Chromium: `apt-get install chromium` (or `make setup` as root) to check the report in a browser")


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_the_report_renders_cleanly_with_every_section_and_every_image(fixture_report, tmp_path):
    seen = check_report(fixture_report, width=1200, height=1500)
    assert seen.console_errors == []
    assert seen.requests == []  # nothing fetched: no network, no CDN
    assert seen.title == f"phi1 run report: {fixture_report.parent.name}"
    assert seen.sections == SECTIONS
    assert len(seen.images) == sum(PLOTS.values())
    for im in seen.images:
        assert im["error"] == "" and im["width"] > 100 and im["height"] > 100, im
    assert png_size(seen.screenshot) == (1200, 1500)
    (tmp_path / "report.png").write_bytes(seen.screenshot)


def test_the_per_task_table_sorts_by_a_clicked_column(fixture_report):
    first = "document.querySelector('table.per-task tbody tr td').textContent"
    with HeadlessChromium(width=1000, height=800) as b:
        b.open(fixture_report)
        assert b.evaluate(first) == "HumanEval/0"
        header = "document.querySelectorAll('table.per-task th')[0].click()"
        b.evaluate(header)  # ascending, numbers inside the text compared as numbers
        order = b.evaluate("Array.from(document.querySelectorAll('table.per-task tbody tr'))"
                           ".map(r => r.cells[0].textContent)")
        assert order == [f"HumanEval/{i}" for i in range(20)]
        b.evaluate(header)  # descending
        assert b.evaluate(first) == "HumanEval/19"
        assert b.console_errors == []
    # closed: the browser's whole process group is gone and so is its profile
    with pytest.raises(ProcessLookupError):
        os.killpg(b.proc.pid, 0)
    assert not Path(b._profile.name).exists()


def test_the_check_sees_what_is_wrong_with_a_page(tmp_path):
    """The browser check can fail: a console error, an uncaught exception, a fetch, an image that
    does not decode and a missing section are all reported."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><head><title>bad</title></head><body>'
        '<section data-section="only-one"></section>'
        '<img alt="broken" src="data:image/svg+xml;base64,bm90IGFuIGltYWdl">'
        '<img alt="remote" src="http://127.0.0.1:9/x.png">'
        '<script>console.error("drawn wrong"); undefinedFunction();</script></body></html>')
    seen = check_report(page, width=800, height=600)
    assert any("drawn wrong" in e for e in seen.console_errors)
    assert any("undefinedFunction" in e for e in seen.console_errors)
    assert "http://127.0.0.1:9/x.png" in seen.requests
    assert seen.sections == ["only-one"]
    broken = {im["alt"]: im for im in seen.images}
    assert broken["broken"]["error"] and broken["broken"]["width"] == 0
