"""A self-contained HTML report built from sections; every issue's report part plugs in here.

A report is a title plus an ordered list of `Section`s (title + HTML body). Figures are saved as PNG
beside the report (so they can be reused in slides) *and* embedded as base64 data URIs, so the HTML
opens from disk, needs no server and survives being mailed around. Tables are plain HTML, sortable
by clicking a header; galleries sort and filter with a select, or from the URL
(`report.html?sort=score&strategy=kfold`) — a few lines of inline JavaScript, no CDN.
"""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from kibble.io import atomic_write_text

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#222;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px} h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
.meta{color:#666;font-size:.9em} nav a{margin-right:12px}
table{border-collapse:collapse;font-size:.88em;margin:8px 0} .table-wrap{overflow-x:auto;max-width:100%}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right} th{background:#f4f4f4;cursor:pointer}
td:first-child,th:first-child{text-align:left}
.pass{background:#e6f4ea} .fail{background:#fde7e9} .verdict-pass{color:#137333;font-weight:bold}
.verdict-fail{color:#c5221f;font-weight:bold}
figure{display:inline-block;margin:8px} figure img{max-width:560px} figcaption{font-size:.85em;color:#555}
.gallery{display:flex;flex-wrap:wrap;gap:10px} .card{width:170px;border:1px solid #ddd;padding:6px;font-size:.8em;overflow-wrap:anywhere}
.card img{width:160px;height:160px;object-fit:cover;display:block}
.pairs .card{width:130px} .pairs .card img{width:120px;height:120px}
.card .missing{width:160px;height:160px;background:#eee;color:#888;display:flex;align-items:center;justify-content:center}
.card .reason{color:#666} .card details{margin-top:4px;color:#444} .controls select{margin-right:12px}
.gate{font-size:1.2em;padding:8px 12px;border-radius:4px;display:inline-block}
.gate.verdict-pass{background:#e6f4ea} .gate.verdict-fail{background:#fde7e9}
"""

SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function(th){
  th.addEventListener('click', function(){
    var table = th.closest('table'), body = table.tBodies[0], idx = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = th.dataset.asc !== 'true'; th.dataset.asc = asc;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function(a, b){
      var x = a.cells[idx].innerText, y = b.cells[idx].innerText, nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function(r){ body.appendChild(r); });
  });
});
document.querySelectorAll('.gallery-sort').forEach(function(sel){
  sel.addEventListener('change', function(){
    var gallery = document.getElementById(sel.dataset.target), key = sel.value;
    var opt = sel.options[sel.selectedIndex], desc = opt && opt.dataset.order === 'desc';
    var cards = Array.prototype.slice.call(gallery.children);
    cards.sort(function(a, b){
      var x = a.dataset[key] || '', y = b.dataset[key] || '', nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      if (c === 0) { c = parseFloat(a.dataset.rank || 0) - parseFloat(b.dataset.rank || 0); return c; }
      return desc ? -c : c;
    });
    cards.forEach(function(c){ gallery.appendChild(c); });
  });
});
document.querySelectorAll('.gallery-filter').forEach(function(sel){
  sel.addEventListener('change', function(){
    var gallery = document.getElementById(sel.dataset.target), key = sel.dataset.key, value = sel.value;
    Array.prototype.forEach.call(gallery.children, function(card){
      card.style.display = (!value || card.dataset[key] === value) ? '' : 'none';
    });
  });
});
// a shared link can preset the galleries: report.html?sort=score&strategy=kfold
(function(){
  var params = new URLSearchParams(window.location.search);
  function preset(selector, value){
    if (!value) return;
    document.querySelectorAll(selector).forEach(function(sel){ sel.value = value; sel.dispatchEvent(new Event('change')); });
  }
  preset('.gallery-sort', params.get('sort'));
  preset('.gallery-filter', params.get('strategy'));
})();
document.body.dataset.scripted = 'yes';
window.addEventListener('load', function(){
  var images = document.querySelectorAll('img'), broken = 0;
  images.forEach(function(img){ if (!img.complete || img.naturalWidth === 0) broken += 1; });
  document.body.dataset.images = (images.length - broken) + '/' + images.length;
  if (broken) console.error('kibble report: ' + broken + ' of ' + images.length + ' images failed to load');
});
"""


@dataclass
class Section:
    """One titled part of a report; `body` is trusted HTML built with the helpers below."""

    title: str
    body: str
    anchor: str = field(default="")

    def __post_init__(self) -> None:
        if not self.anchor:
            self.anchor = re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-") or "section"


def escape(text: object) -> str:
    return html.escape(str(text))


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_html(fig, png_path: str | Path | None = None, caption: str = "", dpi: int = 100) -> str:
    """Embed a matplotlib figure (and save it as PNG at png_path); closes the figure."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    data = buffer.getvalue()
    if png_path is not None:
        png_path = Path(png_path)
        png_path.parent.mkdir(parents=True, exist_ok=True)
        png_path.write_bytes(data)
    alt = escape(caption or (Path(png_path).stem if png_path else "figure"))
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{alt}" src="{png_data_uri(data)}">{cap}</figure>'


def thumbnail_uri(path: str | Path, size: int = 160) -> str | None:
    """A small JPEG data URI of an image file, or None when it cannot be read (the card says so)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))  # a JPEG decodes at 1/2..1/8 scale: a huge scan stays cheap
            image = ImageOps.exif_transpose(image).convert("RGB")  # as the model saw it: upright
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=80)
    except (OSError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def table_html(frame: pd.DataFrame, float_format: str = "{:.3f}", row_classes: Iterable[str] | None = None) -> str:
    """A sortable HTML table of a frame; row_classes (e.g. 'pass'/'fail') colour the rows."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return "" if value != value else float_format.format(value)
        return escape(value)

    classes = list(row_classes) if row_classes is not None else [""] * len(frame)
    head = "".join(f"<th>{escape(c)}</th>" for c in frame.columns)
    rows = []
    for css, values in zip(classes, frame.itertuples(index=False)):
        attr = f' class="{escape(css)}"' if css else ""
        rows.append(f"<tr{attr}>" + "".join(f"<td>{cell(v)}</td>" for v in values) + "</tr>")
    return f'<div class="table-wrap"><table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def render(title: str, sections: list[Section], subtitle: str = "") -> str:
    nav = " ".join(f'<a href="#{escape(s.anchor)}">{escape(s.title)}</a>' for s in sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">{escape(subtitle)}</p>' if subtitle else "",
        f"<nav>{nav}</nav>",
    ]
    for section in sections:
        parts.append(f'<section id="{escape(section.anchor)}"><h2>{escape(section.title)}</h2>{section.body}</section>')
    parts.append(f"<script>{SORT_JS}</script></body></html>")
    return "\n".join(p for p in parts if p)


def write_report(path: str | Path, title: str, sections: list[Section], subtitle: str = "") -> Path:
    """Write the report atomically; returns its path."""
    return atomic_write_text(path, render(title, sections, subtitle))
