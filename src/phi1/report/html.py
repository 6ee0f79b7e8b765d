"""HTML pieces of the report: escaping, tables, the page around the sections.

One self-contained file: the style sheet and the few lines of script (sorting
a table by a clicked column) are inline, images are data URIs, nothing is
fetched from anywhere.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def fmt(x: Any) -> str:
    """A cell's text: numbers compact, the rest as text."""
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        if x == 0:
            return "0"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.4g}"
    if x is None:
        return "—"
    if isinstance(x, (list, dict)):
        text = str(x)
        return text if len(text) <= 120 else text[:117] + "..."
    return str(x)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], sortable: bool = False,
          caption: str = "", cls: str = "") -> str:
    """An HTML table; ``sortable`` adds click-to-sort headers (numbers sort as numbers)."""
    out = [f'<table class="{esc((cls + (" sortable" if sortable else "")).strip())}">']
    if caption:
        out.append(f"<caption>{esc(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr></thead><tbody>")
    for row in rows:
        cells = []
        for v in row:
            key = ""
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                key = f' data-sort="{v!r}"'
            cells.append(f"<td{key}>{esc(fmt(v))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def key_values(pairs: Iterable[tuple[str, Any]]) -> str:
    rows = [(k, v) for k, v in pairs if v is not None and v != ""]
    if not rows:
        return ""
    return table(("", "value"), rows, cls="kv")


def paragraph(text: str, cls: str = "") -> str:
    return f'<p class="{esc(cls)}">{esc(text)}</p>' if cls else f"<p>{esc(text)}</p>"


@dataclass
class Section:
    """One section of the report: what it shows and where the numbers came from."""

    key: str  # unique anchor, e.g. "stage-ingest", "humaneval-loss"
    title: str
    nav: str = ""  # short label in the navigation bar (default: the title)
    stages: tuple[str, ...] = ()
    blocks: list[str] = field(default_factory=list)  # HTML fragments, in order
    sources: list[str] = field(default_factory=list)  # files read (relative to the run folder)
    problems: list[str] = field(default_factory=list)  # missing / corrupt inputs, said plainly
    paper: list[str] = field(default_factory=list)  # the paper's figures for reference

    def add(self, fragment: str) -> None:
        if fragment:
            self.blocks.append(fragment)

    def render(self) -> str:
        out = [f'<section id="{esc(self.key)}" data-section="{esc(self.key)}">', f"<h2>{esc(self.title)}</h2>"]
        for line in self.paper:
            out.append(f'<p class="paper">{esc(line)}</p>')
        out.extend(self.blocks)
        for p in self.problems:
            out.append(f'<p class="problem">{esc(p)}</p>')
        if self.sources:
            out.append('<p class="source">Source: ' + ", ".join(f"<code>{esc(s)}</code>" for s in self.sources)
                       + "</p>")
        out.append("</section>")
        return "\n".join(out)


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d1f23;background:#fafafa}
header{background:#1f3a5f;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px;font-size:22px}
header p{margin:2px 0;opacity:.9}
nav{padding:6px 28px;background:#e9eef5;font-size:13px;position:sticky;top:0;z-index:1;line-height:1.9}
nav a{margin-right:12px;color:#1f3a5f;text-decoration:none;white-space:nowrap}
main{padding:8px 28px 40px;max-width:1180px}
section{background:#fff;border:1px solid #dde2ea;border-radius:6px;padding:4px 18px 12px;margin:16px 0}
h2{font-size:18px;margin:12px 0 8px;color:#1f3a5f}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border-bottom:1px solid #e3e6eb;padding:3px 10px;text-align:left;vertical-align:top}
td[data-sort]{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.overview td:nth-child(-n+3){white-space:nowrap}
th{background:#f1f4f8}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th:after{content:" \\2195";color:#9aa5b4}
table.kv td:first-child{color:#4b5563}
caption{text-align:left;font-weight:600;padding:4px 0;white-space:nowrap}
pre.summary{background:#f6f8fa;border:1px solid #e3e6eb;padding:6px 10px;font-size:12px;overflow-x:auto}
.scroll{max-height:420px;overflow:auto;display:inline-block;border:1px solid #e3e6eb}
img.chart{max-width:100%;height:auto;display:block;margin:6px 0}
p.paper{background:#fff7e0;border-left:3px solid #e0a800;padding:4px 8px;margin:6px 0}
p.problem{background:#fdecea;border-left:3px solid #d93025;padding:4px 8px;margin:6px 0}
p.source{color:#6b7280;font-size:12px;margin-top:10px}
code{font-size:12px}
"""

# Sorts a table.sortable by the clicked column: numbers (data-sort) numerically, text otherwise;
# a second click reverses.
_JS = """
document.querySelectorAll("table.sortable").forEach(function (t) {
  t.querySelectorAll("th").forEach(function (th, i) {
    th.addEventListener("click", function () {
      var body = t.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var dir = th.getAttribute("data-dir") === "asc" ? -1 : 1;
      t.querySelectorAll("th").forEach(function (h) { h.removeAttribute("data-dir"); });
      th.setAttribute("data-dir", dir === 1 ? "asc" : "desc");
      rows.sort(function (a, b) {
        var x = a.cells[i], y = b.cells[i];
        var nx = x.getAttribute("data-sort"), ny = y.getAttribute("data-sort");
        if (nx !== null && ny !== null) return dir * (parseFloat(nx) - parseFloat(ny));
        return dir * x.textContent.localeCompare(y.textContent, undefined, {numeric: true});
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def page(title: str, subtitle: list[str], sections: list[Section]) -> str:
    nav = " ".join(f'<a href="#{esc(s.key)}">{esc(s.nav or s.title)}</a>' for s in sections)
    head = "".join(f"<p>{esc(line)}</p>" for line in subtitle)
    body = "\n".join(s.render() for s in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        # nothing may be fetched: no network, no CDN (the browser test checks it)
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
        f"<title>{esc(title)}</title><style>{_CSS}</style></head>\n<body>"
        f"<header><h1>{esc(title)}</h1>{head}</header><nav>{nav}</nav>\n<main>\n{body}\n</main>"
        f"<script>{_JS}</script></body></html>\n"
    )
