"""`phi1 report RUN_DIR`: arguments and dispatch (the work is in `phi1.report.build`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

HELP = "write RUN_DIR/report.html: plots and tables of every stage that ran, beside the paper's figures"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("report", help=HELP, description=HELP + ". One self-contained HTML file (plots embedded, "
                       "nothing fetched); each section names the files its numbers came from.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder: <run.root>/<run.name>, e.g. runs/demo "
                   "(or an ablation folder: writes its ablation.html)")
    p.add_argument("--out", help="where to write the HTML (default RUN_DIR/report.html)")
    p.add_argument("--screenshot", metavar="PNG",
                   help="also open the report in headless Chromium and save a screenshot of its top "
                        "(e.g. docs/images/report.png); fails if the page shows console errors")
    p.add_argument("--size", default="1280x1600", metavar="WxH", help="screenshot size in pixels (default 1280x1600)")
    return p


def run_command(args: argparse.Namespace) -> int:
    from phi1.errors import InputError
    from phi1.files import write_atomic
    from phi1.report.build import REPORT_FILE, render_report

    t0 = time.time()
    if (Path(args.run_dir) / "ablation.json").is_file() and not args.screenshot:
        # an ablation folder (`phi1 ablation`): its runs each have their own report.html
        from phi1.ablation.report import write_ablation_report

        out = write_ablation_report(args.run_dir)
        if args.out:
            write_atomic(args.out, Path(out).read_bytes())
            out = Path(args.out)
        print(f"report: ablation summary in {time.time() - t0:.1f}s -> {out} (each run's own report.html is "
              f"in its folder)")
        return 0
    report = render_report(args.run_dir)
    path = Path(args.out) if args.out else report.run_dir / REPORT_FILE
    write_atomic(path, report.html)
    stages = sum(1 for s in report.sections if s.key.startswith("stage-"))
    print(f"report: {len(report.sections)} sections ({stages} stages), {report.images} plots, "
          f"{len(report.html) / 1e6:.1f} MB in {time.time() - t0:.1f}s -> {path}")
    for s in report.with_problems:
        print(f"  {s.nav or s.key}: {s.problems[0]}" + (f" (+{len(s.problems) - 1} more)" if len(s.problems) > 1 else ""))
    if args.screenshot:
        from phi1.report.browser import check_report

        try:
            width, height = (int(x) for x in args.size.lower().split("x"))
        except ValueError:
            raise InputError(f"--size {args.size!r}: expected WIDTHxHEIGHT, e.g. 1280x1600") from None
        seen = check_report(path, width=width, height=height)
        broken = [f"image {i['alt']!r} did not decode ({i['error'] or 'size 0'})" for i in seen.images
                  if i["error"] or not (i["width"] and i["height"])]
        trouble = seen.console_errors + [f"request for {u}" for u in seen.requests] + broken
        if trouble:
            raise InputError(f"{path} does not render cleanly in Chromium: {trouble[0]}")
        write_atomic(args.screenshot, seen.screenshot)
        print(f"screenshot ({width}x{height}, {len(seen.images)} images decoded) -> {args.screenshot}")
    return 0
