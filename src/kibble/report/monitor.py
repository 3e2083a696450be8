"""The monitoring report (`monitor.html`): verdict, overlaid distributions, per-class shifts, the queue.

Built from `kibble.report.document` helpers; figures are saved as PNG beside the report too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kibble.report.document import Section, escape, figure_html, table_html, thumbnail_uri, write_report


def _hist_figure(ref: np.ndarray, cur: np.ndarray, title: str, xlabel: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    lo = float(min(ref.min(), cur.min())) if len(ref) and len(cur) else 0.0
    hi = float(max(ref.max(), cur.max())) if len(ref) and len(cur) else 1.0
    bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 31)
    ax.hist(ref, bins=bins, density=True, alpha=0.5, label=f"reference (n={len(ref)})", color="#4c72b0")
    ax.hist(cur, bins=bins, density=True, alpha=0.5, label=f"current (n={len(cur)})", color="#dd8452")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return fig


def _share_figure(per_class: list[dict[str, Any]], max_classes: int = 30):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(per_class)
    frame = frame.reindex(frame["share_change"].abs().sort_values(ascending=False).index).head(max_classes)
    x = np.arange(len(frame))
    fig, ax = plt.subplots(figsize=(max(5.2, 0.35 * len(frame) + 1.5), 3.4))
    ax.bar(x - 0.2, frame["reference_share"], width=0.4, label="reference", color="#4c72b0")
    ax.bar(x + 0.2, frame["current_share"], width=0.4, label="current", color="#dd8452")
    ax.set_xticks(x)
    ax.set_xticklabels([str(c)[:18] for c in frame["class"]], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("share of predictions")
    ax.set_title("Predicted-class shares" + (f" (top {max_classes} changes)" if len(per_class) > max_classes else ""))
    ax.legend(fontsize=8)
    return fig


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def verdict_section(result: dict[str, Any]) -> Section:
    css = "verdict-fail" if result["drifted"] else "verdict-pass"
    rows = pd.DataFrame([{
        "test": c["name"], "group": c["group"], "statistic": c["statistic"],
        "p-value": c["p_value"] if c["p_value"] is not None else float("nan"),
        "threshold": ("score >= " if c["p_value"] is None else "p <= ") + f"{c['threshold']:.4g}",
        "drifted": "yes" if c["drifted"] else "no", "decides verdict": "yes" if c["decides"] else "informative",
    } for c in result["checks"]])
    classes = ["fail" if c["drifted"] else "pass" for c in result["checks"]]
    lines = [
        f'<p class="{css}">Verdict: {escape(result["verdict"].upper())}</p>',
        f"<p>{result['n_current']} current vs {result['n_reference']} reference images. False-alarm control: "
        f"{escape(result['correction'])} over the deciding tests at alpha={result['alpha']:.3g} "
        f"(each test at p &le; {result['per_test_threshold']:.4g}).</p>",
    ]
    if result.get("skipped_tests"):
        lines.append(f"<p>Skipped (no embeddings): {escape(', '.join(result['skipped_tests']))}.</p>")
    return Section("Drift verdict", "".join(lines) + table_html(rows, float_format="{:.4g}", row_classes=classes))


def distribution_section(ref: dict[str, np.ndarray], cur: dict[str, np.ndarray], result: dict[str, Any], figure_dir: Path) -> Section:
    figs = [
        figure_html(_hist_figure(ref["confidence"], cur["confidence"], "Max probability", "confidence"),
                    figure_dir / "confidence.png", "Top-class probability, reference vs current"),
        figure_html(_hist_figure(ref["entropy"], cur["entropy"], "Prediction entropy", "entropy (nats)"),
                    figure_dir / "entropy.png", "Entropy of the softmax, reference vs current"),
        figure_html(_share_figure(result["per_class"]), figure_dir / "class_shares.png", "Share of each predicted class"),
    ]
    if "knn_distance" in cur and "knn_distance" in ref:
        figs.append(figure_html(_hist_figure(ref["knn_distance"], cur["knn_distance"], "Distance to the reference", "mean kNN distance"),
                                figure_dir / "knn_distance.png", "Embedding kNN distance to the reference (reference: leave-one-out)"))
    return Section("Distributions", "".join(figs))


def per_class_section(result: dict[str, Any]) -> Section:
    frame = pd.DataFrame(result["per_class"]).sort_values("share_change", key=np.abs, ascending=False)
    notes = [
        f"Gained share: {escape(', '.join(result['classes_gained']) or 'none')}.",
        f"Lost share: {escape(', '.join(result['classes_lost']) or 'none')}.",
        f"Less confident: {escape(', '.join(result['classes_less_confident']) or 'none')}.",
    ]
    return Section("Per class", "<p>" + "<br>".join(notes) + "</p>" + table_html(frame.fillna(value=np.nan), float_format="{:.3f}"))


def queue_section(queue: pd.DataFrame, image_root: Path | None, max_cards: int = 48) -> Section:
    if queue.empty:
        return Section("Labeling queue", "<p>No current image reached the queue threshold.</p>")
    cards = []
    for row in queue.head(max_cards).itertuples(index=False):
        path = Path(str(row.path))
        full = path if path.is_absolute() or image_root is None else image_root / path
        uri = thumbnail_uri(full)
        img = f'<img src="{uri}" alt="{escape(row.sample_id)}">' if uri else "<p>(image unreadable)</p>"
        cards.append(f'<div class="card">{img}<b>#{row.rank}</b> {escape(row.sample_id)}<br>'
                     f"model: {escape(row.suggested_label)}<br>{escape(row.reason)}</div>")
    intro = f"<p>{len(queue)} images queued for labeling (queue.csv, queue.labelstudio.json)."
    intro += f" Showing the first {max_cards}.</p>" if len(queue) > max_cards else "</p>"
    return Section("Labeling queue", intro + '<div class="gallery">' + "".join(cards) + "</div>")


def write_monitor_report(path: str | Path, result: dict[str, Any], ref: dict[str, np.ndarray], cur: dict[str, np.ndarray],
                         queue: pd.DataFrame, image_root: Path | None = None) -> Path:
    """monitor.html beside monitor.json; PNGs under <dir>/figures/."""
    path = Path(path)
    sections = [verdict_section(result), distribution_section(ref, cur, result, path.parent / "figures"),
                per_class_section(result), queue_section(queue, image_root)]
    subtitle = f"reference: {result.get('reference', '')} | current: {result.get('current', '')}"
    return write_report(path, "kibble monitor: drift report", sections, subtitle)
