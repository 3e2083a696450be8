"""Learning curves of active learning: accuracy against the number of labels, and label savings."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kibble import KibbleError

CURVE_COLUMNS = ["strategy", "seed", "round", "n_labels", "test_accuracy"]


def mean_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Mean (and std) accuracy per strategy and round over seeds: strategy, round, n_labels, accuracy, std, n_seeds."""
    missing = [c for c in CURVE_COLUMNS if c not in curves.columns]
    if missing:
        raise KibbleError(f"learning curves need columns {CURVE_COLUMNS}; missing {missing}")
    grouped = curves.groupby(["strategy", "round"], sort=True)
    out = grouped.agg(n_labels=("n_labels", "mean"), accuracy=("test_accuracy", "mean"), std=("test_accuracy", "std"), n_seeds=("seed", "nunique"))
    return out.reset_index()


def labels_to_reach(n_labels, accuracy, target: float) -> float:
    """Labels at which a curve first reaches `target` accuracy (linear between points); NaN if never.

    A curve already at or above target at its first point returns that point's label count.
    """
    n = np.asarray(n_labels, dtype=np.float64)
    acc = np.asarray(accuracy, dtype=np.float64)
    if n.shape != acc.shape or n.ndim != 1 or len(n) == 0:
        raise KibbleError(f"n_labels and accuracy must be equal-length 1-D curves; got {n.shape} and {acc.shape}")
    order = np.argsort(n, kind="stable")
    n, acc = n[order], acc[order]
    if acc[0] >= target:
        return float(n[0])
    for i in range(1, len(n)):
        if acc[i] >= target:
            a0, a1 = acc[i - 1], acc[i]
            return float(n[i - 1] + (target - a0) / (a1 - a0) * (n[i] - n[i - 1])) if a1 > a0 else float(n[i])
    return float("nan")


def savings_table(curves: pd.DataFrame, baseline: str = "random") -> pd.DataFrame:
    """Per strategy: final mean accuracy, labels needed to reach the baseline's final mean accuracy,
    and that as a share of the baseline's labels (< 1 = the strategy saves labels)."""
    mean = mean_curves(curves)
    if baseline not in set(mean["strategy"]):
        raise KibbleError(f"no {baseline!r} curve to compare against; run the baseline arm too")
    base = mean[mean["strategy"] == baseline].sort_values("round")
    target, base_labels = float(base["accuracy"].iloc[-1]), float(base["n_labels"].iloc[-1])
    rows = []
    for name, part in mean.groupby("strategy", sort=False):
        part = part.sort_values("round")
        need = labels_to_reach(part["n_labels"], part["accuracy"], target)
        rows.append({
            "strategy": name, "final_labels": float(part["n_labels"].iloc[-1]), "final_accuracy": float(part["accuracy"].iloc[-1]),
            "final_accuracy_std": float(part["std"].iloc[-1]) if part["n_seeds"].iloc[-1] > 1 else float("nan"),
            f"labels_to_reach_{baseline}_final": need, f"share_of_{baseline}_labels": need / base_labels,
        })
    return pd.DataFrame(rows).sort_values(f"share_of_{baseline}_labels", na_position="last").reset_index(drop=True)


def curves_figure(curves: pd.DataFrame, title: str = "accuracy vs labels"):
    """A matplotlib figure: mean test accuracy vs labels per strategy, shaded +- 1 std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mean = mean_curves(curves)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, part in mean.groupby("strategy", sort=True):
        part = part.sort_values("round")
        style = "--" if name == "random" else "-"
        ax.plot(part["n_labels"], part["accuracy"], style, marker="o", ms=3, label=name)
        std = part["std"].fillna(0.0)
        ax.fill_between(part["n_labels"], part["accuracy"] - std, part["accuracy"] + std, alpha=0.15)
    ax.set_xlabel("labelled training images")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig
