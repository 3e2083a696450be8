"""Error severity: not every mistake is equally bad.

A K x K cost matrix (`ClassList.severity_matrix`: from class groups, or a user's CSV) gives the cost
of predicting column j for true class i (0 on the diagonal). The severity-weighted error rate is the
mean cost per image: with unit costs it equals the error rate, and two models with the same accuracy
differ when one confuses within-group classes (cheap) and the other across groups (expensive).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from kibble import KibbleError


def _check_cost(cost: np.ndarray, n_classes: int) -> np.ndarray:
    cost = np.asarray(cost, dtype=float)
    if cost.shape != (n_classes, n_classes):
        raise KibbleError(f"severity cost matrix has shape {cost.shape}, expected ({n_classes}, {n_classes})")
    if not np.isfinite(cost).all() or (cost < 0).any():
        raise KibbleError("severity costs must be finite and >= 0")
    return cost


def severity_weighted_error(y_true: Sequence[int], y_pred: Sequence[int], cost: np.ndarray) -> float:
    """Mean cost per image: sum_i cost[true_i, pred_i] / N (correct predictions cost 0)."""
    t, p = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape or t.ndim != 1:
        raise KibbleError(f"y_true {t.shape} and y_pred {p.shape} must be 1-D and of equal length")
    if len(t) == 0:
        raise KibbleError("no rows to evaluate")
    cost = _check_cost(cost, cost.shape[0] if np.ndim(cost) == 2 else 0)
    if t.max() >= len(cost) or p.max() >= len(cost) or min(t.min(), p.min()) < 0:
        raise KibbleError(f"class indices must be in 0..{len(cost) - 1} for the {len(cost)}-class cost matrix")
    return float(cost[t, p].mean())


def severity_confusion(confusion: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Count x cost per (true, predicted) cell: where the severity-weighted error comes from."""
    cm = np.asarray(confusion, dtype=float)
    return cm * _check_cost(cost, cm.shape[0])


def group_confusion(confusion: np.ndarray, groups: Sequence[str | None]) -> pd.DataFrame:
    """Confusion summed over class groups (rows = true group, columns = predicted group).

    Ungrouped classes form the group '(none)'. The diagonal holds within-group counts (including
    correct predictions); the off-diagonal cells are the across-group, severe errors.
    """
    cm = np.asarray(confusion, dtype=np.int64)
    if len(groups) != cm.shape[0]:
        raise KibbleError(f"{len(groups)} groups for a {cm.shape[0]}-class confusion matrix")
    labels = ["(none)" if g is None else str(g) for g in groups]
    names = list(dict.fromkeys(labels))
    index = np.array([names.index(g) for g in labels])
    onehot = np.zeros((len(labels), len(names)), dtype=np.int64)
    onehot[np.arange(len(labels)), index] = 1
    return pd.DataFrame(onehot.T @ cm @ onehot, index=names, columns=names)


def severity_summary(confusion: np.ndarray, cost: np.ndarray, class_names: Sequence[str], groups: Sequence[str | None] | None = None) -> dict[str, Any]:
    """Severity-weighted error rate and where it comes from.

    error_rate: plain share of wrong predictions; severity_weighted_error: mean cost per image;
    mean_cost_per_error: severity_weighted_error / error_rate; per_class: the cost each true class
    contributes; within_group / across_group errors when groups are known.
    """
    cm = np.asarray(confusion, dtype=np.int64)
    n = int(cm.sum())
    if n == 0:
        raise KibbleError("no rows to evaluate")
    weighted = severity_confusion(cm, cost)
    errors = n - int(np.trace(cm))
    total_cost = float(weighted.sum())
    per_class = [
        {"class": str(name), "errors": int(cm[i].sum() - cm[i, i]), "cost": float(weighted[i].sum()), "cost_per_image": float(weighted[i].sum() / cm[i].sum()) if cm[i].sum() else 0.0}
        for i, name in enumerate(class_names)
    ]
    out: dict[str, Any] = {
        "n": n,
        "errors": errors,
        "error_rate": errors / n,
        "severity_weighted_error": total_cost / n,
        "mean_cost_per_error": total_cost / errors if errors else 0.0,
        "total_cost": total_cost,
        "per_class": per_class,
    }
    if groups is not None and any(g is not None for g in groups):
        # an ungrouped class is a group of its own, as in ClassList.severity_matrix
        labels = np.array([f"\0{i}" if g is None else str(g) for i, g in enumerate(groups)], dtype=object)
        same = labels[:, None] == labels[None, :]
        off = ~np.eye(len(labels), dtype=bool)
        out["within_group_errors"] = int(cm[same & off].sum())
        out["across_group_errors"] = int(cm[~same].sum())
        grouped = group_confusion(cm, list(groups))
        out["group_confusion"] = {"groups": list(grouped.index), "matrix": grouped.to_numpy().tolist()}
    return out
