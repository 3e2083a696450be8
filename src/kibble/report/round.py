"""The per-round report `rounds/NNN/report.html`: what a reviewer needs before sending a queue out.

`write_round_report(ws, round_index)` renders the core sections (round summary, OOF per-class
table) and then every entry of `ROUND_SECTIONS`: dotted "module:function" names of functions
`(ws: Workspace, round_dir: Path) -> list[Section]` that return [] when they have nothing to show:
the queue gallery first (what the reviewer scans before sending the queue out), the fold ensemble's
evaluation on the test split (targets, confusion, calibration, confused pairs), the loop curves;
other features append their own entry. Figures are also saved as PNG in the round directory.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from kibble.data.classes import ClassList
from kibble.data.manifest import load_manifest
from kibble.io import read_json
from kibble.paths import Workspace
from kibble.report.document import Section, escape, figure_html, table_html, write_report

log = logging.getLogger(__name__)

# (ws, round_dir) -> list[Section], rendered in order after the core sections
ROUND_SECTIONS: list[str] = [
    "kibble.report.round:queue_sections",
    "kibble.report.round:data_issue_sections",
    "kibble.report.round:test_sections",
    "kibble.report.round:loop_sections",
    "kibble.report.round:cost_sections",
    "kibble.report.annotators:round_sections",
    "kibble.report.active:round_sections",
]
GALLERY_MAX_ITEMS = 500


def _workspace(ws: Workspace | str | Path) -> Workspace:
    return ws if isinstance(ws, Workspace) else Workspace(ws)


def summary_sections(ws: Workspace, round_dir: Path, classes: ClassList) -> list[Section]:
    """Round metrics (OOF accuracy, queue size and split, loop numbers) and the OOF per-class table."""
    path = round_dir / "metrics.json"
    metrics = read_json(path) if path.is_file() else {}
    scalars = {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
    body = table_html(pd.DataFrame({"metric": list(scalars), "value": [f"{v:.4f}" if isinstance(v, float) else str(v) for v in scalars.values()]}))
    by_strategy = metrics.get("queue_by_strategy")
    if by_strategy:
        body += "<p>Queue by strategy: " + escape(", ".join(f"{k}: {v}" for k, v in by_strategy.items())) + "</p>"
    split = metrics.get("budget_split")  # budget.split=value: what the round chose between relabelling and new labels, and why
    if isinstance(split, dict) and split.get("why"):
        body += "<p>Budget split: " + escape(str(split["why"])) + "</p>"
    sections = [Section("Round summary", body)]
    per_class = metrics.get("oof_per_class")
    if per_class:
        display = classes.display_names
        frame = pd.DataFrame([{"class": name, "name": display.get(name, name), **values} for name, values in per_class.items()])
        sections.append(Section("Out-of-fold precision and recall (vs given labels)",
                                "<p>Low OOF precision marks classes that other classes' images are probably mislabelled as.</p>" + table_html(frame)))
    return sections


def test_sections(ws: Workspace, round_dir: Path, splits: tuple[str, ...] = ("test", "val")) -> list[Section]:
    """The fold ensemble (rounds/NNN/predictions.parquet) evaluated on the first of `splits` with labelled rows."""
    from kibble.metrics.evaluation import evaluate_probs
    from kibble.predictions.store import read_store, stack
    from kibble.report.eval import eval_sections, example_kwargs

    path = round_dir / "predictions.parquet"
    if not path.is_file():
        return []
    classes = ClassList.load(ws.classes)
    frame, _ = read_store(path, class_names=classes.names)
    manifest = load_manifest(ws.manifest, classes.names)
    frame = frame.drop_duplicates("sample_id", keep="last").set_index("sample_id")
    labelled = manifest[manifest["label"].notna() & manifest["sample_id"].isin(frame.index)]
    split = next((s for s in splits if (labelled["split"] == s).any()), None)
    if split is None:
        return []
    rows = labelled[labelled["split"] == split].reset_index(drop=True)
    probs = stack(frame.loc[rows["sample_id"]].reset_index())
    y_true = np.array([classes.index[label] for label in rows["label"]], dtype=np.int64)
    result = evaluate_probs(y_true, probs, classes, classes.severity_matrix(ws.root), metadata=rows)
    sections = eval_sections(result, classes, round_dir, example_kwargs(rows, y_true, probs, ws.data_root), prefix=f"{split}_")
    name = {"test": "Test", "val": "Validation"}.get(split, split)
    return [Section(f"{name} set (fold ensemble): {s.title}", s.body) for s in sections]


def queue_sections(ws: Workspace, round_dir: Path) -> list[Section]:
    """The queue gallery: every queued image with given vs suggested label, score and strategy."""
    from kibble.report.gallery import queue_gallery_html

    path = round_dir / "queue.csv"
    if not path.is_file():
        return []
    queue = pd.read_csv(path, dtype={"sample_id": str, "given_label": str, "suggested_label": str, "path": str})
    classes = ClassList.load(ws.classes)
    from kibble.report.review_page import write_review_page

    review = write_review_page(ws, round_dir, queue)
    intro = (f"<p>{len(queue)} images queued for review ({escape(path.name)}). Sort by strategy or score, filter by strategy, "
             "and scan the suggestions before sending the queue to annotators.</p>"
             f'<p>Answer the queue yourself, no server needed: open <a href="{escape(review.name)}">{escape(review.name)}</a>, '
             "answer with the keyboard, download reviews.csv and run <code>kibble merge workspace=W reviews=reviews.csv</code>.</p>")
    return [Section("Queue gallery", intro + queue_gallery_html(queue, classes, ws.data_root, max_items=GALLERY_MAX_ITEMS))]


def data_issue_sections(ws: Workspace, round_dir: Path, per_issue: int = 6, thumb_size: int = 120) -> list[Section]:
    """Data issues beyond labels (rounds/NNN/data_issues.csv, kibble.data_issues): counts per issue and
    the first few images of each, most severe first."""
    from kibble.data.manifest import resolve_image_path
    from kibble.data_issues import ISSUES
    from kibble.report.document import thumbnail_uri
    from kibble.report.gallery import card_html

    path = round_dir / "data_issues.csv"
    if not path.is_file():
        return []
    table = pd.read_csv(path, dtype={"sample_id": str, "issue": str, "detail": str})
    if table.empty:
        return [Section("Data issues", "<p>No data issues found: no blank, low-information, odd-size, near-duplicate or outlier images.</p>")]
    manifest = pd.read_parquet(ws.manifest, columns=["sample_id", "path"]) if Path(ws.manifest).is_file() else None
    paths = manifest.astype({"sample_id": str}).drop_duplicates("sample_id").set_index("sample_id")["path"] if manifest is not None else pd.Series(dtype=str)
    counts = table["issue"].value_counts()
    order = [i for i in ISSUES if i in counts.index] + [i for i in counts.index if i not in ISSUES]
    body = (f"<p>{len(table)} issues on {table['sample_id'].nunique()} images ({escape(path.name)}); a share of the queue "
            "(<code>strategy.data_issues.budget</code>) lists them as <code>kind=data_issue</code>.</p>")
    body += table_html(pd.DataFrame({"issue": order, "images": [int(counts[i]) for i in order]}))
    for issue in order:
        rows = table[table["issue"] == issue].head(int(per_issue))
        cards = []
        for row in rows.itertuples(index=False):
            rel = paths.get(row.sample_id)
            thumb = thumbnail_uri(resolve_image_path(str(rel), ws.data_root), thumb_size) if isinstance(rel, str) else None
            cards.append(card_html(thumb, [escape(row.sample_id), f"score {float(row.score):.3f}", f'<span class="reason">{escape(row.detail)}</span>'],
                                   title=str(row.sample_id)))
        body += f"<h3>{escape(issue)}: {int(counts[issue])} images</h3>" + f'<div class="gallery pairs">{"".join(cards)}</div>'
    return [Section("Data issues", body)]


def loop_sections(ws: Workspace, round_dir: Path) -> list[Section]:
    """Per-round curves of a `kibble loop` run up to this round (noise remaining, queue precision, accuracy)."""
    from kibble.report.plots import loop_curves_figure

    path = ws.root / "loop_summary.csv"
    if not path.is_file():
        return []
    summary = pd.read_csv(path)
    this_round = int(round_dir.name) if round_dir.name.isdigit() else None
    if this_round is not None:
        summary = summary[summary["round"] <= this_round]
    if summary.empty:
        return []
    fig = loop_curves_figure(summary)
    body = figure_html(fig, round_dir / "loop_curves.png", "Cleaning loop, per round") if fig is not None else ""
    return [Section("Cleaning loop", body + table_html(summary))]


def cost_sections(ws: Workspace, round_dir: Path) -> list[Section]:
    """What each fold cost (device, images/s, peak memory, wall time): sizes the next GPU or cluster job."""
    path = round_dir / "metrics.json"
    costs = (read_json(path) if path.is_file() else {}).get("fold_costs")
    if not costs:
        return []
    frame = pd.DataFrame(costs)
    columns = [c for c in ("fold", "device", "world_size", "visible_devices", "seconds", "fit_seconds", "predict_seconds",
                           "train_images_per_second", "predict_images_per_second", "peak_device_memory_mb", "peak_host_memory_mb") if c in frame]
    total = float(pd.to_numeric(frame.get("seconds"), errors="coerce").sum()) if "seconds" in frame else float("nan")
    intro = f"<p>{len(frame)} folds, {total:.1f} s of fold wall time in all. Train images/s count the images of the optimizer steps, all ranks together.</p>"
    return [Section("Cost per fold", intro + table_html(frame[columns], float_format="{:.1f}"))]


def _resolve(name: str) -> Callable[[Workspace, Path], list[Section]]:
    module, _, func = name.partition(":")
    return getattr(importlib.import_module(module), func)


def write_round_report(ws: Workspace | str | Path, round_index: int) -> Path:
    """Render rounds/NNN/report.html from what the round directory holds; returns its path."""
    ws = _workspace(ws)
    round_dir = ws.round_dir(round_index)
    classes = ClassList.load(ws.classes)
    sections = summary_sections(ws, round_dir, classes)
    for name in ROUND_SECTIONS:
        sections += _resolve(name)(ws, round_dir)
    path = write_report(round_dir / "report.html", f"kibble round {int(round_index)}", sections, subtitle=f"workspace {ws.root}")
    log.info("round report: %s", path)
    return path


class RoundReport:
    """Round callback (after the queue is built): write rounds/NNN/report.html.

    Under `kibble loop` the loop writes it instead, once the round's loop metrics exist."""

    def __call__(self, ctx: Any) -> dict[str, Any]:
        if ctx.cfg is not None and ctx.cfg.get("task_name") == "loop":
            return {"report": str(ctx.round_dir / "report.html"), "deferred": "kibble loop writes it after the round"}
        return {"report": str(write_round_report(ctx.workspace, ctx.round_index))}
