"""The report's figures (matplotlib, object API: no pyplot state, no display needed).

Each function returns a `matplotlib.figure.Figure`; `kibble.report.document.figure_html` embeds it
and saves it as PNG.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def _labels_fit(n: int) -> bool:
    return n <= 40


def confusion_figure(confusion: Sequence[Sequence[int]], labels: Sequence[str], title: str = "Confusion matrix (rows: truth)", normalize: bool = True) -> Figure:
    """Row-normalised confusion heatmap; counts written in the cells of small matrices."""
    cm = np.asarray(confusion, dtype=float)
    n = len(labels)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    size = min(max(4.0, 0.45 * n + 2), 14.0)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.add_subplot()
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class" if normalize else "count")
    if _labels_fit(n):
        ax.set_xticks(range(n), labels=list(labels), rotation=90, fontsize=8)
        ax.set_yticks(range(n), labels=list(labels), fontsize=8)
    if n <= 15:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7, color="white" if shown[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def f1_bars_figure(per_class: Sequence[dict[str, Any]], labels: Sequence[str], target: float, weighted_f1: float | None = None, weighted_target: float | None = None) -> Figure:
    """Per-class F1 bars (red below the target) with the target line, sorted worst first."""
    frame = pd.DataFrame({"label": list(labels), "f1": [r["f1"] for r in per_class], "target": [r.get("target", target) for r in per_class]})
    frame = frame.sort_values("f1").reset_index(drop=True)
    n = len(frame)
    fig = Figure(figsize=(min(max(6.0, 0.3 * n + 2), 24.0), 4.2))
    ax = fig.add_subplot()
    colors = np.where(frame["f1"] >= frame["target"], "#4c9a6a", "#d0473d")
    ax.bar(range(n), frame["f1"], color=colors)
    ax.axhline(target, color="#222", linestyle="--", linewidth=1, label=f"target F1 {target:.2f}")
    if weighted_f1 is not None:
        label = f"weighted F1 {weighted_f1:.3f}" + (f" (target {weighted_target:.2f})" if weighted_target is not None else "")
        ax.axhline(weighted_f1, color="#3366cc", linestyle=":", linewidth=1.5, label=label)
    if _labels_fit(n) or n <= 130:
        ax.set_xticks(range(n), labels=frame["label"].tolist(), rotation=90, fontsize=7 if n > 40 else 8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("F1")
    ax.set_title("Per-class F1 (worst first)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def reliability_figure(bins: Sequence[dict[str, Any]], ece: float, threshold: dict[str, Any] | None = None) -> Figure:
    """Reliability diagram: accuracy vs confidence per bin (bar width = bin), the diagonal, and counts."""
    fig = Figure(figsize=(8.5, 4))
    ax, ax_count = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    lowers = np.array([b["lower"] for b in bins])
    widths = np.array([b["upper"] - b["lower"] for b in bins])
    acc = np.array([b["accuracy"] if b["count"] else 0.0 for b in bins])
    conf = np.array([b["confidence"] if b["count"] else np.nan for b in bins])
    ax.bar(lowers, acc, width=widths, align="edge", color="#6a8fc7", edgecolor="#335", label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.plot(conf, acc, "o", color="#d0473d", markersize=3, label="mean confidence")
    if threshold and threshold.get("threshold") is not None:
        ax.axvline(threshold["threshold"], color="#4c9a6a", linewidth=1, label=f"precision {threshold['target_precision']:.2f} at conf >= {threshold['threshold']:.2f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability (ECE {ece:.3f})")
    ax.legend(loc="upper left", fontsize=7)
    ax_count.bar(lowers, [b["count"] for b in bins], width=widths, align="edge", color="#999")
    ax_count.set_xlim(0, 1)
    ax_count.set_xlabel("confidence")
    ax_count.set_ylabel("images")
    ax_count.set_title("Confidence histogram")
    fig.tight_layout()
    return fig


def group_confusion_figure(groups: Sequence[str], matrix: Sequence[Sequence[int]]) -> Figure:
    """Confusion between class groups: off-diagonal cells are the severe, across-group errors."""
    return confusion_figure(matrix, groups, title="Confusion between groups (rows: true group)")


BASELINE_ARMS = ("random",)  # loop_summary.csv prefixes of baseline arms (kibble.loop.baseline)
LOOP_CURVES = [
    ("noise_remaining", "noise remaining (share of train labels wrong)"),
    ("queue_precision", "queue precision (share of queued labels that were wrong)"),
    ("oof_accuracy_true", "OOF accuracy vs truth"),
    ("test_accuracy", "test accuracy (fold ensemble)"),
]


def loop_curves_figure(summary: pd.DataFrame) -> Figure | None:
    """Per-round curves of a `kibble loop` run (loop_summary.csv); None when nothing to plot."""
    curves = [(c, t) for c, t in LOOP_CURVES if c in summary.columns and summary[c].notna().any()]
    if summary.empty or not curves:
        return None
    fig = Figure(figsize=(4.0 * len(curves), 3.3))
    rounds = summary["round"].to_numpy()
    for i, (col, title) in enumerate(curves, start=1):
        ax = fig.add_subplot(1, len(curves), i)
        arms = [n for n in BASELINE_ARMS if f"{n}_{col}" in summary.columns and summary[f"{n}_{col}"].notna().any()]
        ax.plot(rounds, summary[col].to_numpy(dtype=float), "o-", color="#335f9c", label="strategy queue" if arms else None)
        for name in arms:  # `kibble loop baseline=random`: the arm with the same budget, dashed
            ax.plot(rounds, summary[f"{name}_{col}"].to_numpy(dtype=float), "s--", color="#c0504d", label=f"{name} queue")
            ax.legend(fontsize=7)
        if col == "noise_remaining" and "noise_before" in summary.columns:
            ax.plot(rounds, summary["noise_before"].to_numpy(dtype=float), "o:", color="#999", label="before round")
            ax.legend(fontsize=7)
        ax.set_xticks(rounds)
        ax.set_xlabel("round")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
