"""Calibration of top-1 confidence: expected calibration error, reliability bins, and the confidence
threshold that reaches a target precision (what to auto-accept vs send to a human).

Pure functions over (N, K) probabilities and integer labels.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from kibble import KibbleError


def _check(probs: np.ndarray, y_true: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=float)
    t = np.asarray(y_true, dtype=np.int64)
    if probs.ndim != 2 or len(probs) != len(t):
        raise KibbleError(f"probabilities {probs.shape} must be (N, K) with one row per label ({len(t)})")
    if len(t) == 0:
        raise KibbleError("no rows to evaluate")
    if not np.isfinite(probs).all():
        raise KibbleError("probabilities contain NaN/inf")
    if t.min() < 0 or t.max() >= probs.shape[1]:
        raise KibbleError(f"labels must be class indices in 0..{probs.shape[1] - 1}")
    return probs, t


def reliability_bins(probs: np.ndarray, y_true: Sequence[int], n_bins: int = 15) -> list[dict[str, Any]]:
    """Equal-width bins of top-1 confidence: count, mean confidence and accuracy per bin."""
    probs, t = _check(probs, y_true)
    if int(n_bins) < 1:
        raise KibbleError(f"n_bins={n_bins}; use at least 1 bin")
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == t
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    # bin i holds (edges[i], edges[i+1]]; confidence 0 (impossible for softmax) goes to the first bin
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, int(n_bins) - 1)
    bins = []
    for i in range(int(n_bins)):
        mask = index == i
        count = int(mask.sum())
        bins.append({
            "lower": float(edges[i]),
            "upper": float(edges[i + 1]),
            "count": count,
            "confidence": float(confidence[mask].mean()) if count else float("nan"),
            "accuracy": float(correct[mask].mean()) if count else float("nan"),
        })
    return bins


def expected_calibration_error(probs: np.ndarray, y_true: Sequence[int], n_bins: int = 15) -> dict[str, float]:
    """ECE (count-weighted mean |accuracy - confidence| over bins) and MCE (the worst bin)."""
    return _ece(reliability_bins(probs, y_true, n_bins))


def _ece(bins: list[dict[str, Any]]) -> dict[str, float]:
    n = sum(b["count"] for b in bins)
    gaps = [(b["count"], abs(b["accuracy"] - b["confidence"])) for b in bins if b["count"]]
    return {"ece": float(sum(c * g for c, g in gaps) / n), "mce": float(max(g for _, g in gaps))}


def brier_and_nll(probs: np.ndarray, y_true: Sequence[int]) -> dict[str, float]:
    """Multi-class Brier score and negative log-likelihood (proper scoring rules)."""
    probs, t = _check(probs, y_true)
    onehot = np.eye(probs.shape[1])[t]
    picked = np.clip(probs[np.arange(len(t)), t], 1e-12, 1.0)
    return {"brier": float(((probs - onehot) ** 2).sum(axis=1).mean()), "nll": float(-np.log(picked).mean())}


def threshold_for_precision(probs: np.ndarray, y_true: Sequence[int], target: float = 0.95) -> dict[str, Any]:
    """The lowest top-1 confidence threshold whose accepted predictions (confidence >= threshold) reach
    `target` precision, i.e. the largest coverage at that precision. `threshold` is None when no
    threshold reaches it (not even the single most confident prediction)."""
    probs, t = _check(probs, y_true)
    if not 0.0 < float(target) <= 1.0:
        raise KibbleError(f"target precision {target}; use a value in (0, 1]")
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == t).astype(float)
    order = np.argsort(-confidence, kind="stable")
    conf_sorted, correct_sorted = confidence[order], correct[order]
    # only cut between distinct confidences: all predictions with equal confidence are kept together
    last_of_value = np.r_[conf_sorted[1:] != conf_sorted[:-1], True]
    kept = np.arange(1, len(t) + 1)
    precision = np.cumsum(correct_sorted) / kept
    ok = np.flatnonzero(last_of_value & (precision >= float(target) - 1e-12))
    result: dict[str, Any] = {"target_precision": float(target), "n": int(len(t))}
    if len(ok) == 0:
        return {**result, "threshold": None, "precision": None, "coverage": 0.0, "n_accepted": 0}
    k = int(ok[-1])
    return {**result, "threshold": float(conf_sorted[k]), "precision": float(precision[k]), "coverage": float(kept[k] / len(t)), "n_accepted": int(kept[k])}


def calibration_metrics(probs: np.ndarray, y_true: Sequence[int], n_bins: int = 15, target_precision: float = 0.95) -> dict[str, Any]:
    """Everything `kibble eval` reports about confidence, in one dict."""
    probs, t = _check(probs, y_true)
    bins = reliability_bins(probs, t, n_bins)
    return {
        **_ece(bins),
        **brier_and_nll(probs, t),
        "mean_confidence": float(probs.max(axis=1).mean()),
        "accuracy": float((probs.argmax(axis=1) == t).mean()),
        "n_bins": int(n_bins),
        "bins": bins,
        "threshold": threshold_for_precision(probs, t, target_precision),
    }
