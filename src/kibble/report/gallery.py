"""Image galleries for the reports: the queue gallery and example thumbnails of confused pairs.

The queue gallery shows every queued image (up to `max_items`, by rank) as a card: thumbnail,
given -> suggested label, score, strategy, reason and the suggested class's guideline, so a
reviewer can scan a queue by eye before sending it to annotators. Cards carry data-* attributes;
the report's inline script sorts them (rank, score, strategy, given label) and filters by strategy.
Thumbnails are embedded (data URIs), so the HTML stays self-contained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from kibble.data.classes import ClassList
from kibble.data.manifest import resolve_image_path
from kibble.report.document import escape, thumbnail_uri
from kibble.values import is_missing


def _label(name: Any, display: dict[str, str]) -> str:
    if is_missing(name):
        return "-"
    shown = display.get(str(name), str(name))
    return shown if shown == str(name) else f"{shown} ({name})"


def card_html(thumb: str | None, lines: Sequence[str], data: dict[str, Any] | None = None, details: str = "", title: str = "") -> str:
    """One gallery card; `lines` are trusted HTML snippets, `data` becomes data-* attributes."""
    attrs = "".join(f' data-{escape(k)}="{escape(v)}"' for k, v in (data or {}).items())
    image = f'<img alt="{escape(title)}" title="{escape(title)}" src="{thumb}">' if thumb else '<div class="missing">image unreadable</div>'
    body = "".join(f"<div>{line}</div>" for line in lines)
    return f'<div class="card"{attrs}>{image}{body}{details}</div>'


def _controls(gallery_id: str, strategies: Sequence[str]) -> str:
    options = "".join(
        f'<option value="{key}" data-order="{order}">{label}</option>'
        for key, order, label in (("rank", "asc", "rank"), ("score", "desc", "score (high first)"), ("strategy", "asc", "strategy"), ("given", "asc", "given label"), ("suggested", "asc", "suggested label"))
    )
    filters = '<option value="">all strategies</option>' + "".join(f'<option value="{escape(s)}">{escape(s)}</option>' for s in strategies)
    return (
        f'<p class="controls">sort by <select class="gallery-sort" data-target="{escape(gallery_id)}">{options}</select> '
        f'show <select class="gallery-filter" data-target="{escape(gallery_id)}" data-key="strategy">{filters}</select></p>'
    )


def queue_gallery_html(queue: pd.DataFrame, classes: ClassList, data_root: str | Path, gallery_id: str = "queue-cards", max_items: int = 500, thumb_size: int = 160) -> str:
    """The queue gallery (controls + cards) for a queue table (DESIGN §3 queue columns)."""
    if queue.empty:
        return "<p>The queue is empty.</p>"
    display = classes.display_names
    guidelines = {c.name: c.guideline for c in classes.classes if c.guideline}
    rows = queue.sort_values("rank", kind="stable") if "rank" in queue.columns else queue
    shown = rows.head(int(max_items))
    cards = []
    for item in shown.itertuples(index=False):
        item = item._asdict()
        path = resolve_image_path(str(item["path"]), data_root) if not is_missing(item.get("path")) else None
        thumb = thumbnail_uri(path, thumb_size) if path is not None else None
        given, suggested = item.get("given_label"), item.get("suggested_label")
        score = float(item["score"]) if not is_missing(item.get("score")) else float("nan")
        lines = [
            f"<b>#{escape(item.get('rank', ''))}</b> {escape(item['sample_id'])}",
            f"given: <b>{escape(_label(given, display))}</b>",
            f"suggested: <b>{escape(_label(suggested, display))}</b>",
            f"score {score:.3f} &middot; {escape(item.get('strategy', ''))}",
        ]
        if not is_missing(item.get("reason")):
            lines.append(f'<span class="reason">{escape(item["reason"])}</span>')
        details = ""
        guideline = guidelines.get(str(suggested)) if not is_missing(suggested) else None
        if guideline:
            details = f"<details><summary>guideline: {escape(display.get(str(suggested), suggested))}</summary>{escape(guideline)}</details>"
        data = {
            "rank": item.get("rank", ""), "score": "" if np.isnan(score) else f"{score:.6f}", "strategy": item.get("strategy", ""),
            "given": "" if is_missing(given) else display.get(str(given), given),  # sorted by the names people read
            "suggested": "" if is_missing(suggested) else display.get(str(suggested), suggested),
        }
        cards.append(card_html(thumb, lines, data, details, title=str(item["sample_id"])))
    strategies = sorted(str(s) for s in shown["strategy"].dropna().unique()) if "strategy" in shown.columns else []
    note = f"<p class='meta'>showing the first {len(shown)} of {len(rows)} queued images by rank</p>" if len(shown) < len(rows) else ""
    return _controls(gallery_id, strategies) + note + f'<div class="gallery" id="{escape(gallery_id)}">{"".join(cards)}</div>'


def pair_examples_html(pairs: Sequence[dict[str, Any]], rows: pd.DataFrame, y_true: np.ndarray, y_pred: np.ndarray, confidence: np.ndarray,
                       classes: ClassList, data_root: str | Path, per_pair: int = 4, thumb_size: int = 120) -> str:
    """For each confused pair: up to `per_pair` example images (most confident mistakes first)."""
    if not pairs:
        return "<p>No confusions: every prediction is correct.</p>"
    display = classes.display_names
    index = classes.index
    blocks = []
    for pair in pairs:
        t, p = index[pair["true"]], index[pair["predicted"]]
        hits = np.flatnonzero((y_true == t) & (y_pred == p))
        hits = hits[np.argsort(-confidence[hits], kind="stable")][: int(per_pair)]
        cards = []
        for i in hits:
            path = resolve_image_path(str(rows["path"].iloc[i]), data_root)
            sid = str(rows["sample_id"].iloc[i])
            cards.append(card_html(thumbnail_uri(path, thumb_size), [escape(sid), f"confidence {confidence[i]:.3f}"], title=sid))
        cost = f", cost {pair['cost']:.2f} each" if "cost" in pair else ""
        head = f"<h3>{escape(_label(pair['true'], display))} &rarr; {escape(_label(pair['predicted'], display))}: {pair['count']} images ({pair['share_of_true']:.1%} of the true class{cost})</h3>"
        blocks.append(head + f'<div class="gallery pairs">{"".join(cards)}</div>')
    return "".join(blocks)
