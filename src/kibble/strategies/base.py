"""What every strategy returns, and input checks shared by all (cleanlab-style validation)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kibble import KibbleError


@dataclass(frozen=True)
class StrategyOutput:
    """Per-sample results of one strategy over N samples.

    score:     higher = more worth a human's look (comparable within one strategy only)
    suggested: the class index the strategy proposes (-1 = no suggestion)
    flagged:   True where the strategy claims a problem; queues draw only from flagged rows
    """

    score: np.ndarray
    suggested: np.ndarray
    flagged: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.score)
        if len(self.suggested) != n or len(self.flagged) != n:
            raise ValueError("score, suggested and flagged must have the same length")


def check_labels_probs(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate (N,) int labels in [0, K) and (N, K) finite probabilities; return them as arrays."""
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise KibbleError(f"probs must be 2-D (N, K); got shape {probs.shape}")
    if labels.ndim != 1 or len(labels) != len(probs):
        raise KibbleError(f"labels must be 1-D with one entry per probs row; got {labels.shape} vs {probs.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise KibbleError("labels must be integer class indices (classes.yaml order)")
    if len(labels) and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise KibbleError(f"labels must lie in [0, {probs.shape[1]}); found {labels.min()}..{labels.max()}")
    if not np.isfinite(probs).all():
        raise KibbleError("probs contain NaN or inf")
    if len(probs) and np.abs(probs.sum(axis=1) - 1).max() > 1e-3:
        raise KibbleError("probs rows must sum to 1 (softmax outputs)")
    return labels.astype(np.int64), probs


def check_probs(probs, name: str = "probs") -> np.ndarray:
    """(N, K) finite, non-negative rows summing to 1 with K >= 2; returned as float64."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise KibbleError(f"{name} must be 2-D (N, K); got shape {probs.shape}")
    if probs.shape[1] < 2:
        raise KibbleError(f"{name} need at least 2 classes (columns); got {probs.shape[1]}")
    if not np.isfinite(probs).all():
        raise KibbleError(f"{name} contain NaN or inf")
    if probs.size and probs.min() < -1e-6:
        raise KibbleError(f"{name} contain negative values; pass softmax outputs, not logits")
    if len(probs) and np.abs(probs.sum(axis=1) - 1).max() > 1e-3:
        raise KibbleError(f"{name} rows must sum to 1 (softmax outputs)")
    return np.clip(probs, 0.0, None)


def entropy_rows(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row (last axis) of non-negative probabilities; 0 log 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(probs > 0, probs * np.log(probs), 0.0)
    return -plogp.sum(axis=-1)
