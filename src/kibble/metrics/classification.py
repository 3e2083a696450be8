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
