"""Classification metrics of predictions against labels: accuracy, macro F1, a per-class table.

Pure functions over arrays (class indices or names, in classes.yaml order). Macro averages run over
the classes present in y_true or y_pred, like torchmetrics' macro F1 that `kibble train` logs, so
the two agree; the per-class table lists every class (support 0 included).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from kibble import KibbleError


def to_indices(values: Sequence[Any] | np.ndarray, class_names: Sequence[str], what: str = "labels") -> np.ndarray:
    """Class names or integer indices -> int64 indices; unknown names raise one clear line."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        out = arr.astype(np.int64)
        bad = (out < 0) | (out >= len(class_names))
        if bad.any():
            raise KibbleError(f"{what}: index {int(out[bad][0])} is outside the {len(class_names)} classes")
        return out
    index = {str(c): i for i, c in enumerate(class_names)}
    out = np.empty(len(arr), dtype=np.int64)
    for i, value in enumerate(arr):
        if str(value) not in index:
            raise KibbleError(f"{what}: row {i} has class '{value}', not in the class list; fix the label or classes.yaml")
        out[i] = index[str(value)]
    return out


def classification_metrics(y_true: Sequence[Any], y_pred: Sequence[Any], class_names: Sequence[str]) -> dict[str, Any]:
    """accuracy, macro precision/recall/F1, a per-class table and the confusion matrix (rows = truth)."""
    class_names = [str(c) for c in class_names]
    t = to_indices(y_true, class_names, "y_true")
    p = to_indices(y_pred, class_names, "y_pred")
    if len(t) != len(p):
        raise KibbleError(f"y_true has {len(t)} rows but y_pred has {len(p)}")
    if len(t) == 0:
        raise KibbleError("no rows to evaluate")
    labels = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(t, p, labels=labels, zero_division=0)
    predicted = np.bincount(p, minlength=len(class_names))
    present = (support > 0) | (predicted > 0)
    per_class = [
        {
            "class": name,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            "predicted": int(predicted[i]),
        }
        for i, name in enumerate(class_names)
    ]
    return {
        "n": int(len(t)),
        "accuracy": float((t == p).mean()),
        "f1_macro": float(f1[present].mean()),
        "precision_macro": float(precision[present].mean()),
        "recall_macro": float(recall[present].mean()),
        "n_classes_evaluated": int(present.sum()),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(t, p, labels=labels).tolist(),
    }


def weighted_f1(per_class_f1: Sequence[float], support: Sequence[int], weights: Sequence[float]) -> float:
    """Importance-weighted F1: sum(w_c * F1_c) / sum(w_c) over the classes with test images.

    Classes absent from the evaluation set are left out (their F1 is undefined, not 0); the
    evaluation-set checks flag them separately.
    """
    f1 = np.asarray(per_class_f1, dtype=float)
    support = np.asarray(support)
    w = np.asarray(weights, dtype=float)
    if not (f1.shape == support.shape == w.shape):
        raise KibbleError(f"per-class F1 ({f1.shape}), support ({support.shape}) and weights ({w.shape}) must have one entry per class")
    if not np.isfinite(w).all() or (w < 0).any():
        raise KibbleError("class weights must be finite numbers >= 0 (classes.yaml `weight`)")
    present = support > 0
    total = w[present].sum()
    if total <= 0:
        raise KibbleError("the classes in the evaluation set all have weight 0; give some a positive weight in classes.yaml")
    return float((w[present] * f1[present]).sum() / total)


def check_targets(per_class: Sequence[dict[str, Any]], weighted: float, targets: dict[str, Any]) -> dict[str, Any]:
    """Pass/fail of every class (F1 >= per_class_f1, or its override in `class_f1`) and of weighted F1.

    Classes without support in the evaluation set cannot pass: they fail with reason 'no images'.
    """
    default = float(targets.get("per_class_f1", 0.80))
    overrides = {str(k): float(v) for k, v in (targets.get("class_f1") or {}).items()}
    weighted_target = float(targets.get("weighted_f1", 0.85))
    rows = []
    for row in per_class:
        target = overrides.get(row["class"], default)
        ok = row["support"] > 0 and row["f1"] >= target
        reason = "" if ok else ("no images in the evaluation set" if row["support"] == 0 else f"F1 {row['f1']:.3f} < {target:.2f}")
        rows.append({"class": row["class"], "f1": row["f1"], "target": target, "passed": bool(ok), "reason": reason})
    failing = [r["class"] for r in rows if not r["passed"]]
    weighted_ok = bool(weighted >= weighted_target)
    return {
        "per_class_f1": default,
        "weighted_f1": weighted_target,
        "weighted_f1_value": float(weighted),
        "weighted_f1_passed": weighted_ok,
        "per_class": rows,
        "failing_classes": failing,
        "passed": bool(weighted_ok and not failing),
    }


def top_confusions(confusion: np.ndarray | Sequence[Sequence[int]], class_names: Sequence[str], k: int = 10, cost: np.ndarray | None = None) -> list[dict[str, Any]]:
    """The k most frequent off-diagonal (true, predicted) pairs, with their share of the true class
    and, when a severity cost matrix is given, the pair's cost and count x cost."""
    cm = np.asarray(confusion, dtype=np.int64)
    n = len(class_names)
    if cm.shape != (n, n):
        raise KibbleError(f"confusion matrix has shape {cm.shape}, expected ({n}, {n})")
    off = cm.copy()
    np.fill_diagonal(off, 0)
    true_idx, pred_idx = np.nonzero(off)
    counts = off[true_idx, pred_idx]
    order = np.lexsort((pred_idx, true_idx, -counts))[: max(int(k), 0)]
    support = cm.sum(axis=1)
    out = []
    for i in order:
        t, p = int(true_idx[i]), int(pred_idx[i])
        row = {"true": str(class_names[t]), "predicted": str(class_names[p]), "count": int(off[t, p]), "share_of_true": float(off[t, p] / support[t])}
        if cost is not None:
            row["cost"] = float(cost[t, p])
            row["weighted"] = float(cost[t, p] * off[t, p])
        out.append(row)
    return out


def slice_metrics(values: Sequence[Any], y_true: np.ndarray, y_pred: np.ndarray, weights: Sequence[float], column: str) -> list[dict[str, Any]]:
    """Accuracy, macro F1 and weighted F1 per value of a metadata column (missing values -> '(missing)')."""
    values = np.asarray(["(missing)" if v is None or (isinstance(v, float) and v != v) else str(v) for v in values], dtype=object)
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if not (len(values) == len(t) == len(p)):
        raise KibbleError(f"slice column {column!r} has {len(values)} values for {len(t)} rows")
    n_classes = len(weights)
    w = np.asarray(weights, dtype=float)
    out = []
    for value in sorted(set(values)):
        mask = values == value
        _, _, f1, support = precision_recall_fscore_support(t[mask], p[mask], labels=list(range(n_classes)), zero_division=0)
        present = (support > 0) | (np.bincount(p[mask], minlength=n_classes) > 0)
        has = support > 0
        out.append({
            "column": column,
            "value": value,
            "n": int(mask.sum()),
            "accuracy": float((t[mask] == p[mask]).mean()),
            "f1_macro": float(f1[present].mean()),
            "weighted_f1": float((w[has] * f1[has]).sum() / w[has].sum()) if w[has].sum() > 0 else float("nan"),
        })
    return out
