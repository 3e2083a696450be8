"""The full evaluation of probabilities against labels, answering the scoping questions in one dict:
per-class P/R/F1/support, macro and importance-weighted F1, targets with pass/fail, top confused
pairs, severity-weighted error, calibration and metadata slices.

Used by `kibble eval` and the round report (fold-ensemble predictions on the test split).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from kibble import KibbleError
from kibble.data.classes import ClassList
from kibble.metrics.calibration import calibration_metrics
from kibble.metrics.classification import check_targets, classification_metrics, slice_metrics, top_confusions, weighted_f1
from kibble.metrics.severity import severity_summary


def evaluate_probs(
    y_true: Sequence[int],
    probs: np.ndarray,
    classes: ClassList,
    cost: np.ndarray,
    metadata: pd.DataFrame | None = None,
    slice_by: Sequence[str] = (),
    top_k: int = 10,
    n_bins: int = 15,
    target_precision: float = 0.95,
) -> dict[str, Any]:
    """Every number `kibble eval` reports; `metadata` holds one row per sample for the slices."""
    t = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or probs.shape[1] != len(classes):
        raise KibbleError(f"probabilities have shape {probs.shape}, expected (N, {len(classes)}) for the class list")
    if len(t) != len(probs):
        raise KibbleError(f"{len(t)} labels but {len(probs)} probability rows")
    pred = probs.argmax(axis=1)
    metrics = classification_metrics(t, pred, classes.names)
    weights = [c.weight for c in classes.classes]
    per_class = metrics["per_class"]
    weighted = weighted_f1([r["f1"] for r in per_class], [r["support"] for r in per_class], weights)
    targets = check_targets(per_class, weighted, classes.targets)
    groups = [c.group for c in classes.classes]
    severity = severity_summary(np.asarray(metrics["confusion_matrix"]), cost, classes.names, groups)
    result: dict[str, Any] = {
        **metrics,
        "weighted_f1": weighted,
        "weights": dict(zip(classes.names, weights)),
        "targets": targets,
        "passed": targets["passed"],
        "top_confusions": top_confusions(metrics["confusion_matrix"], classes.names, top_k, cost),
        "severity": severity,
        "severity_weighted_error": severity["severity_weighted_error"],
        "calibration": calibration_metrics(probs, t, n_bins, target_precision),
    }
    slices: dict[str, list[dict[str, Any]]] = {}
    for column in slice_by:
        if metadata is None or column not in metadata.columns:
            available = sorted(metadata.columns) if metadata is not None else []
            raise KibbleError(f"eval.slice_by: manifest has no column {column!r}; available: {available}")
        slices[column] = slice_metrics(metadata[column].tolist(), t, pred, weights, column)
    result["slices"] = slices
    return result
