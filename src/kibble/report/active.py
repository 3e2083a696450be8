"""Report sections of active learning: the new-label queue of a round, and accuracy-vs-labels curves."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kibble.data.classes import ClassList
from kibble.metrics.learning_curve import curves_figure, mean_curves
from kibble.paths import Workspace
from kibble.report.document import Section, escape, figure_html, table_html, write_report


def curve_sections(curves: pd.DataFrame, savings: pd.DataFrame | None, png_path: Path, title: str = "accuracy vs labels",
                   gains: pd.DataFrame | None = None, stop: dict | None = None) -> list[Section]:
    """The learning-curve figure (saved as PNG too), the mean curve table and the label-savings table;
    with `gains` (kibble.metrics.stopping.pooled_gains) the per-round table also shows each strategy's
    gain per 100 labels and its band, and the (arm, seed)s that stopped early are listed."""
    fig = figure_html(curves_figure(curves, title), png_path=png_path, caption="mean test accuracy over seeds (band: +- 1 std)")
    body = fig
    if savings is not None and len(savings):
        body += "<p>Labels each strategy needs to reach the baseline's final accuracy (share &lt; 1 saves labels):</p>" + table_html(savings)
    mean = mean_curves(curves)
    wide = mean.pivot_table(index="round", columns="strategy", values="accuracy").reset_index()
    labels = mean.groupby("round")["n_labels"].mean().rename("n_labels").reset_index()
    table = labels.merge(wide, on="round")
    if gains is not None and len(gains):
        table = _with_gains(table, gains)
        level = f" ({100 * float(stop.get('level', 0.9)):g} %)" if stop else ""
        body += ("<p>Mean test accuracy per round; <i>gain / 100 labels</i>: accuracy points gained since the previous round per "
                 f"100 new labels (mean over seeds), band{level}: paired bootstrap over the test items; it covers test-set sampling, "
                 "not the spread between training seeds (the figure's band):</p>")
    else:
        body += "<p>Mean test accuracy per round:</p>"
    body += table_html(table)
    if "stop_reason" in curves.columns:
        stopped = curves["stop_reason"].fillna("").astype(str) != ""
        stops = curves.loc[stopped, ["strategy", "seed", "round", "n_labels", "test_accuracy", "stop_reason"]]
        rule = "" if not stop or stop.get("min_gain") is None else (
            f"stop.min_gain={stop['min_gain']:g} accuracy points per 100 labels (expected gain: slope over the last "
            f"{stop.get('window', 2)} rounds; stop when its band's upper end is below): ")
        if len(stops):
            body += (f"<p>{escape(rule)}{len(stops)} of {curves.groupby(['strategy', 'seed']).ngroups} runs stopped early "
                     "(they drop out of the later rounds' means and of the savings table's final accuracies):</p>" + table_html(stops))
        elif rule:
            body += f"<p>{escape(rule)}no run stopped early.</p>"
    return [Section("Active learning: accuracy vs labels", body)]


def _with_gains(table: pd.DataFrame, gains: pd.DataFrame) -> pd.DataFrame:
    """Per strategy, `<s> gain / 100 labels` and `<s> band` columns beside its accuracy column."""
    out = table.copy()
    for name, part in gains.groupby("strategy", sort=True):
        part = part.set_index("round")
        value = part["gain_per_100_labels"].reindex(out["round"]).to_numpy()
        low, high = (part[c].reindex(out["round"]).to_numpy() for c in ("gain_low", "gain_high"))
        out[f"{name} gain / 100 labels"] = [f"{v:+.2f}" if v == v else "-" for v in value]
        out[f"{name} band"] = [f"[{a:+.2f}, {b:+.2f}]" if a == a else "-" for a, b in zip(low, high)]
    return out


def write_active_report(out_dir: Path, curves: pd.DataFrame, savings: pd.DataFrame | None, title: str,
                        gains: pd.DataFrame | None = None, stop: dict | None = None) -> Path:
    """W/active/report.html (+ curves.png) for `kibble loop mode=active` and the benchmark."""
    out_dir = Path(out_dir)
    return write_report(out_dir / "report.html", title, curve_sections(curves, savings, out_dir / "curves.png", title, gains=gains, stop=stop))


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
            if ws.classes.is_file():  # the names people read beside the ids
                display = ClassList.load(ws.classes).display_names
                guesses.insert(1, "name", [display.get(str(c), str(c)) for c in guesses["model's guess"]])
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
        gains_path = curves_path.with_name("gains.csv")
        gains = pd.read_csv(gains_path) if gains_path.is_file() else None
        sections += curve_sections(curves, savings, Path(round_dir) / "active_curves.png", gains=gains)
        sections[-1].body = f"<p>From {escape(str(curves_path))}.</p>" + sections[-1].body
    return sections
