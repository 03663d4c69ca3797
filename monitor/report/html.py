"""Assemble one self-contained HTML page: inline CSS, images as data URIs, no scripts.

The Content-Security-Policy forbids every network load (``default-src 'none'``), so a
report opened from a case file can neither phone home nor show something other than
what it contains.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from typing import Any

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       margin: 0 auto; max-width: 1000px; padding: 16px 24px 48px; color: #212121; }
h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 18px; margin-top: 32px;
     border-bottom: 2px solid #eceff1; padding-bottom: 4px; }
h3 { font-size: 15px; margin-top: 22px; }
.meta { color: #616161; font-size: 13px; }
.verdict { padding: 10px 14px; border-radius: 6px; margin: 12px 0; font-size: 15px; }
.level-alert { background: #ffebee; border-left: 6px solid #c62828; }
.level-suspicious { background: #fff8e1; border-left: 6px solid #f9a825; }
.level-clear { background: #e8f5e9; border-left: 6px solid #2e7d32; }
.level-unknown { background: #eceff1; border-left: 6px solid #9e9e9e; }
figure { margin: 10px 0 18px; } figure img { max-width: 100%; height: auto;
         border: 1px solid #eceff1; }
figcaption { color: #546e7a; font-size: 12.5px; margin-top: 4px; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 13px; width: 100%; }
th, td { border: 1px solid #e0e0e0; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #fafafa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
nav a { margin-right: 12px; font-size: 13px; }
.note { color: #546e7a; font-size: 13px; }
code { background: #f5f5f5; padding: 0 3px; border-radius: 3px; }
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure(name: str, png: bytes, alt: str, caption: str) -> str:
    return (
        f'<figure data-plot="{esc(name)}"><img alt="{esc(alt)}" src="{data_uri(png)}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            css = ' class="num"' if i in numeric else ""
            cells.append(f"<td{css}>{esc(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def section(section_id: str, title: str, body: str) -> str:
    return f'<section id="{esc(section_id)}"><h2>{esc(title)}</h2>{body}</section>'


def page(
    title: str,
    header: str,
    nav: Sequence[tuple[str, str]],
    sections: Sequence[str],
    data: dict[str, Any],
) -> str:
    """The whole document; ``data`` is embedded as JSON (inert: scripts cannot run)."""
    links = "".join(f'<a href="#{esc(i)}">{esc(t)}</a>' for i, t in nav)
    payload = json.dumps(data, allow_nan=False, separators=(",", ":")).replace("</", "<\\/")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
        f"<header>{header}</header><nav>{links}</nav>"
        + "".join(sections)
        + f'<script type="application/json" id="report-data">{payload}</script>'
        + "</body></html>\n"
    )
