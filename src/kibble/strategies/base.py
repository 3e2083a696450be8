"""What every strategy returns, the input checks all strategies share, and the row-chunked kernels.

Checks follow cleanlab's `rank.py`: a public strategy validates its input once and hands it to a
`compute_*` worker that trusts it, so a round validates its OOF once (the queue callback calls the
workers) instead of once per strategy. The checks neither copy nor convert float32/float64
probabilities: at 10^6 x 10^3 a float64 copy alone is 8 GB. They accept values down to -1e-6 (float
noise of a softmax); every worker reads such values as 0, as the clipped copy of earlier versions did.

Every kernel walks the matrix in row chunks of about `CHUNK_ELEMENTS` values, so its temporaries
(a float64 copy, a mask, a log) stay a few MiB whatever N and K are, and each row's arithmetic is
exactly the unchunked one: chunked results equal unchunked results bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from kibble import KibbleError

# Values per chunk: 2^18 float64 values = 2 MiB, cache-sized (measured fastest for entropy and margins).
CHUNK_ELEMENTS = 1 << 18
_NEGATIVE_TOLERANCE = -1e-6
_SUM_TOLERANCE = 1e-3


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


# ------------------------------------------------------------------------------------------ chunks


def row_chunks(n_rows: int, n_cols: int, elements: int = CHUNK_ELEMENTS) -> Iterator[slice]:
    """Slices of consecutive rows holding about `elements` values each (at least one row)."""
    step = max(1, int(elements) // max(int(n_cols), 1))
    for start in range(0, int(n_rows), step):
        yield slice(start, min(int(n_rows), start + step))


def as_float(probs) -> np.ndarray:
    """float32/float64 arrays as they are (no copy); float16 as float32; anything else as float64."""
    arr = np.asarray(probs)
    if arr.dtype in (np.float32, np.float64):
        return arr
    return arr.astype(np.float32 if arr.dtype == np.float16 else np.float64)


def row_stats(probs: np.ndarray) -> tuple[np.ndarray, float]:
    """Row sums in float64 and the smallest value, in one chunked pass.

    A row holds a NaN or inf exactly when its float64 sum is not finite (float32 values cannot
    overflow a float64 sum), so the sums double as the finiteness check.
    """
    sums = np.empty(len(probs), dtype=np.float64)
    low = np.inf
    for rows in row_chunks(len(probs), probs.shape[1]):
        chunk = probs[rows]
        np.add.reduce(chunk, axis=1, dtype=np.float64, out=sums[rows])
        if chunk.size and np.isfinite(sums[rows]).all():  # a NaN row fails the finiteness check anyway
            low = min(low, float(chunk.min()))
    return sums, low


def argmax_rows(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row argmax (first maximum, as np.argmax) and that maximum as float64."""
    n = len(probs)
    best, top = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.float64)
    for rows in row_chunks(n, probs.shape[1]):
        chunk = probs[rows]
        best[rows] = chunk.argmax(axis=1)
        top[rows] = np.take_along_axis(chunk, best[rows, None], axis=1)[:, 0]
    return best, top


def gather(probs: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """probs[i, columns[i]] as float64, negatives read as 0."""
    return np.maximum(probs[np.arange(len(probs)), columns].astype(np.float64), 0.0)


def best_other(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Most probable class other than the given label (first maximum): the likeliest correction.

    Each chunk is copied into one reused buffer (negatives read as 0) with the label masked out; a
    contiguous copy costs less than picking out the rows whose argmax is the label.
    """
    n, k = probs.shape
    other = np.empty(n, dtype=np.int64)
    buffer: np.ndarray | None = None
    for rows in row_chunks(n, k):
        chunk = probs[rows]
        if buffer is None:
            buffer = np.empty(chunk.shape, dtype=probs.dtype)
        masked = buffer[: len(chunk)]
        np.maximum(chunk, 0, out=masked)
        masked[np.arange(len(chunk)), labels[rows]] = -np.inf
        other[rows] = masked.argmax(axis=1)
    return other


def top_two(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The largest and second-largest value of each row (float64, negatives read as 0); K >= 2."""
    n, k = probs.shape
    first, second = np.empty(n, dtype=np.float64), np.empty(n, dtype=np.float64)
    for rows in row_chunks(n, k):
        part = np.partition(probs[rows], k - 2, axis=1)[:, -2:]
        second[rows], first[rows] = part[:, 0], part[:, 1]
    return np.maximum(first, 0.0), np.maximum(second, 0.0)


def entropy_rows(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row (last axis); 0 log 0 = 0, and values <= 0 count as 0.

    In float64 per chunk, the same arithmetic per row as the unchunked formula. Rows holding a value
    <= 0 come out NaN from the plain formula and only they are recomputed with a mask (masking every
    value costs a third of the time).
    """
    probs = np.asarray(probs)
    if probs.ndim != 2:
        return _entropy_masked(np.asarray(probs, dtype=np.float64))
    out = np.empty(len(probs), dtype=np.float64)
    for rows in row_chunks(len(probs), probs.shape[1]):
        chunk = probs[rows]
        with np.errstate(divide="ignore", invalid="ignore"):
            plogp = np.log(chunk, dtype=np.float64)
            plogp *= chunk
        out[rows] = -plogp.sum(axis=1)
        redo = np.flatnonzero(np.isnan(out[rows]))
        if redo.size:
            out[rows.start + redo] = _entropy_masked(chunk[redo].astype(np.float64))
    return out


def _entropy_masked(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(p), 0.0)
    return -plogp.sum(axis=-1)


# ------------------------------------------------------------------------------------------ checks


def _check_matrix(probs: np.ndarray, name: str, *, min_classes: int, order: str) -> None:
    """Finite, rows summing to 1, K >= min_classes, no value below -1e-6; `order` fixes which error wins."""
    sums, low = row_stats(probs) if len(probs) else (np.zeros(0), np.inf)
    checks = {
        "classes": (probs.shape[1] < min_classes, f"{name} need at least {min_classes} classes (columns); got {probs.shape[1]}"),
        "finite": (not np.isfinite(sums).all(), f"{name} contain NaN or inf"),
        "negative": (low < _NEGATIVE_TOLERANCE, f"{name} contain negative values; pass softmax outputs, not logits"),
        "sums": (bool(len(sums)) and np.abs(sums - 1).max() > _SUM_TOLERANCE, f"{name} rows must sum to 1 (softmax outputs)"),
    }
    for key in order.split():
        failed, message = checks[key]
        if failed:
            raise KibbleError(message)


def _check_labels(labels, probs: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if probs.ndim != 2:
        raise KibbleError(f"probs must be 2-D (N, K); got shape {probs.shape}")
    if labels.ndim != 1 or len(labels) != len(probs):
        raise KibbleError(f"labels must be 1-D with one entry per probs row; got {labels.shape} vs {probs.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise KibbleError("labels must be integer class indices (classes.yaml order)")
    if len(labels) and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise KibbleError(f"labels must lie in [0, {probs.shape[1]}); found {labels.min()}..{labels.max()}")
    return labels.astype(np.int64, copy=False)


def check_labels_probs(labels, probs) -> tuple[np.ndarray, np.ndarray]:
    """Validate (N,) int labels in [0, K) and (N, K) finite probabilities summing to 1 per row."""
    probs = as_float(probs)
    labels = _check_labels(labels, probs)
    _check_matrix(probs, "probs", min_classes=0, order="finite sums")
    return labels, probs


def check_probs(probs, name: str = "probs") -> np.ndarray:
    """(N, K) finite rows summing to 1, K >= 2, no value below -1e-6; returned without a copy."""
    probs = as_float(probs)
    if probs.ndim != 2:
        raise KibbleError(f"{name} must be 2-D (N, K); got shape {probs.shape}")
    _check_matrix(probs, name, min_classes=2, order="classes finite negative sums")
    return probs


def check_cleaning_inputs(labels, probs) -> tuple[np.ndarray, np.ndarray]:
    """The one validation pass of a round: labels checks, then check_probs' (K >= 2, no negatives)."""
    probs = as_float(probs)
    labels = _check_labels(labels, probs)
    _check_matrix(probs, "probs", min_classes=2, order="finite sums classes negative")
    return labels, probs
