"""Report sections of active learning: the new-label queue of a round, and accuracy-vs-labels curves."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kibble.metrics.learning_curve import curves_figure, mean_curves
from kibble.paths import Workspace
from kibble.report.document import Section, escape, figure_html, table_html, write_report


def curve_sections(curves: pd.DataFrame, savings: pd.DataFrame | None, png_path: Path, title: str = "accuracy vs labels") -> list[Section]:
    """The learning-curve figure (saved as PNG too), the mean curve table and the label-savings table."""
    fig = figure_html(curves_figure(curves, title), png_path=png_path, caption="mean test accuracy over seeds (band: +- 1 std)")
    body = fig
    if savings is not None and len(savings):
        body += "<p>Labels each strategy needs to reach the baseline's final accuracy (share &lt; 1 saves labels):</p>" + table_html(savings)
    mean = mean_curves(curves)
    wide = mean.pivot_table(index="round", columns="strategy", values="accuracy").reset_index()
    labels = mean.groupby("round")["n_labels"].mean().rename("n_labels").reset_index()
    body += "<p>Mean test accuracy per round:</p>" + table_html(labels.merge(wide, on="round"))
    return [Section("Active learning: accuracy vs labels", body)]


def write_active_report(out_dir: Path, curves: pd.DataFrame, savings: pd.DataFrame | None, title: str) -> Path:
    """W/active/report.html (+ curves.png) for `kibble loop mode=active` and the benchmark."""
    out_dir = Path(out_dir)
    return write_report(out_dir / "report.html", title, curve_sections(curves, savings, out_dir / "curves.png", title))


def round_sections(ws: Workspace, round_dir: Path) -> list[Section]:
    """Round report entry (kibble.report.round.ROUND_SECTIONS): the round's kind=new items, and the
    workspace's active-learning curves when `kibble loop mode=active` has run; [] otherwise."""
    sections: list[Section] = []
    queue_path = Path(round_dir) / "queue.csv"
    if queue_path.is_file():
        queue = pd.read_csv(queue_path, dtype={"sample_id": str, "suggested_label": str})
        if "kind" in queue.columns and (queue["kind"] == "new").any():
            new = queue[queue["kind"] == "new"]
            counts = queue["kind"].value_counts().rename_axis("kind").reset_index(name="items")
            by_strategy = new.groupby("strategy").agg(items=("sample_id", "size"), mean_score=("score", "mean")).reset_index()
            guesses = new["suggested_label"].value_counts().rename_axis("model's guess").reset_index(name="items")
            body = (
                f"<p>{len(new)} unlabeled pool images queued for new labels this round, beside "
                f"{int((queue['kind'] != 'new').sum())} relabel items (one budget).</p>"
                + table_html(counts) + table_html(by_strategy) + "<p>Model's guesses on the new items:</p>" + table_html(guesses)
            )
            sections.append(Section("New labels (active learning)", body))
    curves_path = Path(ws.root) / "active" / "curves.csv"
    if curves_path.is_file():
        curves = pd.read_csv(curves_path)
        savings_path = curves_path.with_name("savings.csv")
        savings = pd.read_csv(savings_path) if savings_path.is_file() else None
        sections += curve_sections(curves, savings, Path(round_dir) / "active_curves.png")
        sections[-1].body = f"<p>From {escape(str(curves_path))}.</p>" + sections[-1].body
    return sections
