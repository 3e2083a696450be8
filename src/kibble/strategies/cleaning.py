"""Label-cleaning strategies: which labelled samples deserve a human's second look, and what to suggest.

Every strategy is a pure function of integer labels (N,) and out-of-fold probabilities (N, K)
(or embeddings, for `neighbors`) returning a `StrategyOutput`; higher score = more suspicious.
Scores are only comparable within one strategy; `combine` rank-normalises them to mix strategies.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from kibble import KibbleError
from kibble.strategies import knn
from kibble.strategies.confident_joint import prune_by_noise_rate, row_pass
from kibble.strategies.base import (
    StrategyOutput,
    argmax_rows,
    best_other,
    check_cleaning_inputs,
    entropy_rows,
    gather,
    row_chunks,
)

_EPS = 1e-12


def kfold(labels, probs) -> StrategyOutput:
    """OOF argmax disagrees with the label; a confident disagreement is the likeliest real error.

    score = probability of the predicted class (also given to agreeing rows, which stay unflagged).
    """
    return compute_kfold(*check_cleaning_inputs(labels, probs))


def compute_kfold(labels: np.ndarray, probs: np.ndarray) -> StrategyOutput:
    """kfold on inputs that passed check_cleaning_inputs."""
    pred, top = argmax_rows(probs)
    return StrategyOutput(score=top, suggested=pred, flagged=pred != labels)


def entropy(labels, probs) -> StrategyOutput:
    """Boundary cases: the model is unsure between classes, whatever the label says.

    score = Shannon entropy (natural log) divided by log(K), so it lies in [0, 1]; all rows flagged.
    """
    return compute_entropy(*check_cleaning_inputs(labels, probs))


def compute_entropy(labels: np.ndarray, probs: np.ndarray) -> StrategyOutput:
    """entropy on inputs that passed check_cleaning_inputs."""
    score = entropy_rows(probs) / np.log(probs.shape[1])
    return StrategyOutput(score=np.clip(score, 0.0, 1.0), suggested=argmax_rows(probs)[0],
                          flagged=np.ones(len(labels), dtype=bool))


def random(labels, probs, seed: int = 0) -> StrategyOutput:
    """The baseline every ranking must beat: a uniformly random order (seeded), all rows flagged.

    A queue taking the top `budget` rows is a uniform random sample of the unsuppressed rows, built by
    the same queue code as any strategy's (`kibble loop baseline=random` compares against it).
    suggested = the OOF argmax, the model's guess an annotator sees beside any queued image.
    """
    return compute_random(*check_cleaning_inputs(labels, probs), seed=seed)


def compute_random(labels: np.ndarray, probs: np.ndarray, seed: int = 0) -> StrategyOutput:
    """random on inputs that passed check_cleaning_inputs."""
    score = np.random.default_rng(int(seed)).random(len(labels))
    return StrategyOutput(score=score, suggested=argmax_rows(probs)[0], flagged=np.ones(len(labels), dtype=bool))


def self_confidence(labels, probs) -> StrategyOutput:
    """Low probability on the given label (cleanlab's self-confidence); score = 1 - p[label].

    All rows are flagged (queues take the top scores). suggested = the most probable class other than
    the given label, i.e. the argmax unless the argmax is the label itself, so it is always a correction.
    """
    return compute_self_confidence(*check_cleaning_inputs(labels, probs))


def compute_self_confidence(labels: np.ndarray, probs: np.ndarray) -> StrategyOutput:
    """self_confidence on inputs that passed check_cleaning_inputs."""
    score = 1.0 - gather(probs, labels)
    return StrategyOutput(score=score, suggested=best_other(labels, probs), flagged=np.ones(len(labels), dtype=bool))


def normalized_margin(labels, probs) -> StrategyOutput:
    """cleanlab's normalised margin: quality = (p[label] - max_{j!=label} p[j] + 1) / 2; score = 1 - quality.

    Beats self-confidence when a competing class is strong. suggested = best other class; all flagged.
    """
    return compute_normalized_margin(*check_cleaning_inputs(labels, probs))


def compute_normalized_margin(labels: np.ndarray, probs: np.ndarray) -> StrategyOutput:
    """normalized_margin on inputs that passed check_cleaning_inputs."""
    other = best_other(labels, probs)
    quality = (gather(probs, labels) - gather(probs, other) + 1.0) / 2.0
    return StrategyOutput(score=1.0 - quality, suggested=other, flagged=np.ones(len(labels), dtype=bool))


def confident_learning(labels, probs, **kwargs) -> StrategyOutput:
    """cleanlab's confident learning as the reference: its `find_label_issues` mask decides `flagged`.

    score = 1 - cleanlab's self-confidence quality (1 - p[label]); suggested = argmax.
    kwargs go to `cleanlab.filter.find_label_issues` (e.g. filter_by, n_jobs); a mask is required,
    so `return_indices_ranked_by` is refused.
    """
    return compute_confident_learning(*check_cleaning_inputs(labels, probs), **kwargs)


def compute_confident_learning(labels: np.ndarray, probs: np.ndarray, **kwargs) -> StrategyOutput:
    """confident_learning on inputs that passed check_cleaning_inputs.

    cleanlab gets the probabilities in their own dtype (float32 from a store: no float64 copy of
    the matrix), with values below 0 read as 0 only when there are any.
    """
    from cleanlab.filter import find_label_issues

    if kwargs.get("return_indices_ranked_by") is not None:
        raise KibbleError("confident_learning needs a boolean mask; do not pass return_indices_ranked_by")
    if len(labels) == 0:
        empty = np.zeros(0)
        return StrategyOutput(score=empty, suggested=empty.astype(np.int64), flagged=empty.astype(bool))
    if not kwargs or set(kwargs) <= {"n_jobs", "filter_by"} and kwargs.get("filter_by", "prune_by_noise_rate") == "prune_by_noise_rate":
        # cleanlab's default rule without its copies of the matrix; one pass gives the joint, the argmax and the minimum
        passed = row_pass(labels, probs)
        if passed.minimum < 0:
            probs = np.clip(probs, 0.0, None)
            passed = row_pass(labels, probs)
        flagged, suggested = prune_by_noise_rate(labels, probs, passed), passed.argmax
    else:
        if min(float(probs[rows].min()) for rows in row_chunks(len(probs), probs.shape[1])) < 0:
            probs = np.clip(probs, 0.0, None)
        flagged, suggested = np.asarray(find_label_issues(labels, probs, **kwargs), dtype=bool), argmax_rows(probs)[0]
    # cleanlab.rank.get_label_quality_scores(method="self_confidence") is p[label]
    return StrategyOutput(score=1.0 - gather(probs, labels), suggested=suggested, flagged=flagged)


def low_precision_classes(labels, probs, threshold: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Classes whose OOF precision (share of rows predicted A that are labelled A) is below `threshold`.

    Low precision of A means the model learnt a polluted A, typically because other classes' images
    are labelled A. Returns (class indices, per-class precision (K,)); never-predicted classes get NaN
    precision and are not reported (no evidence either way).
    """
    return compute_low_precision_classes(*check_cleaning_inputs(labels, probs), threshold=threshold)


def compute_low_precision_classes(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """low_precision_classes on inputs that passed check_cleaning_inputs."""
    if not 0.0 <= threshold <= 1.0:
        raise KibbleError(f"threshold must lie in [0, 1]; got {threshold}")
    k = probs.shape[1]
    pred = argmax_rows(probs)[0]
    n_pred = np.bincount(pred, minlength=k).astype(np.float64)
    n_hit = np.bincount(pred[pred == labels], minlength=k).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(n_pred > 0, n_hit / n_pred, np.nan)
    low = np.flatnonzero(np.nan_to_num(precision, nan=1.0) < threshold)
    return low, precision


def precision_renormalize(labels, probs, classes: Sequence[int] | None = None,
                          threshold: float = 0.8) -> StrategyOutput:
    """Cheap approximation of precision cleaning (train without class A, apply to A's images).

    For each low-precision class A (or each index in `classes`), rows labelled A get A's column
    dropped and the rest renormalised: score = top remaining probability, suggested = that class;
    those rows are flagged, all other rows get score 0, suggested -1. A row with no mass outside A
    keeps score 0 and suggested -1. With K = 2 every such row scores 1 (nothing to rank by).
    """
    return compute_precision_renormalize(*check_cleaning_inputs(labels, probs), classes=classes, threshold=threshold)


def compute_precision_renormalize(labels: np.ndarray, probs: np.ndarray, classes: Sequence[int] | None = None,
                                  threshold: float = 0.8) -> StrategyOutput:
    """precision_renormalize on inputs that passed check_cleaning_inputs (validated once, not twice)."""
    k = probs.shape[1]
    if classes is None:
        targets, _ = compute_low_precision_classes(labels, probs, threshold)
    else:
        targets = np.unique(np.asarray(list(classes), dtype=np.int64))
        if targets.size and (targets.min() < 0 or targets.max() >= k):
            raise KibbleError(f"classes must be indices in [0, {k}); got {targets.tolist()}")
    score = np.zeros(len(labels))
    suggested = np.full(len(labels), -1, dtype=np.int64)
    flagged = np.isin(labels, targets)
    rows = np.flatnonzero(flagged)
    for part in row_chunks(rows.size, k):
        sel = rows[part]
        rest = np.maximum(probs[sel].astype(np.float64), 0.0)
        rest[np.arange(sel.size), labels[sel]] = 0.0
        mass = rest.sum(axis=1)
        ok = mass > _EPS
        top = rest.argmax(axis=1)
        score[sel[ok]] = rest[ok, top[ok]] / mass[ok]
        suggested[sel[ok]] = top[ok]
    return StrategyOutput(score=score, suggested=suggested, flagged=flagged)


def neighbors(labels, embeddings, k: int = 10, metric: str = "cosine", method: str = "auto",
              exact_below: int = knn.EXACT_BELOW, seed: int = 0) -> StrategyOutput:
    """Training-free check (Zhu et al. 2022): a label that disagrees with most of its neighbours is suspect.

    score = share of the k nearest neighbours (self excluded) with another label; flagged = score > 0.5.
    suggested = the most common label among the disagreeing neighbours (a correction, never the given
    label; ties go to the lower class index); -1 when every neighbour agrees.
    method: 'exact' (scikit-learn), 'ann' (faiss, approximate; metric cosine or euclidean) or 'auto':
    exact below `exact_below` rows (20,000, chosen by scripts/bench_scale.py), approximate from there
    (other metrics stay exact). seed fixes the approximate index's samples and k-means.
    """
    labels, emb = check_neighbors_inputs(labels, embeddings, k)
    return compute_neighbors(labels, emb, k, metric, method=method, exact_below=exact_below, seed=seed)


def check_neighbors_inputs(labels, embeddings, k) -> tuple[np.ndarray, np.ndarray]:
    """(N,) non-negative int labels, (N, D) finite embeddings (float32/float64 kept, no copy), k in [1, N-1]."""
    labels = np.asarray(labels)
    emb = np.asarray(embeddings)
    if emb.dtype not in (np.float32, np.float64):
        emb = emb.astype(np.float64)
    if emb.ndim != 2:
        raise KibbleError(f"embeddings must be 2-D (N, D); got shape {emb.shape}")
    if labels.ndim != 1 or len(labels) != len(emb):
        raise KibbleError(f"labels must be 1-D with one entry per embedding; got {labels.shape} vs {emb.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or (len(labels) and labels.min() < 0):
        raise KibbleError("labels must be non-negative integer class indices")
    if not all(np.isfinite(emb[rows]).all() for rows in row_chunks(len(emb), emb.shape[1])):
        raise KibbleError("embeddings contain NaN or inf")
    if not isinstance(k, (int, np.integer)) or k < 1 or k >= len(labels):
        raise KibbleError(f"k must be an integer in [1, N-1] = [1, {len(labels) - 1}]; got {k}")
    return labels.astype(np.int64, copy=False), emb


def compute_neighbors(labels: np.ndarray, emb: np.ndarray, k: int = 10, metric: str = "cosine", *,
                      method: str = "auto", exact_below: int = knn.EXACT_BELOW, seed: int = 0) -> StrategyOutput:
    """neighbors on inputs that passed check_neighbors_inputs."""
    idx = knn.neighbor_indices(emb, k, metric, method=method, exact_below=exact_below, seed=seed)
    return score_neighbor_labels(labels, idx)


def score_neighbor_labels(labels: np.ndarray, idx: np.ndarray) -> StrategyOutput:
    """neighbors' output from the (N, k) neighbour indices of each row (knn.neighbor_indices)."""
    k = idx.shape[1]
    nbr_labels = labels[idx]
    differs = nbr_labels != labels[:, None]
    score = differs.mean(axis=1)
    suggested = np.full(len(labels), -1, dtype=np.int64)
    for rows in row_chunks(len(labels), k * k):
        suggested[rows] = _most_common_other(nbr_labels[rows], differs[rows])
    return StrategyOutput(score=score, suggested=suggested, flagged=score > 0.5)


def _most_common_other(nbr_labels: np.ndarray, differs: np.ndarray) -> np.ndarray:
    """Most common disagreeing neighbour label per row (ties: the lower class), -1 where all agree.

    Each row's disagreeing labels are sorted (agreeing ones pushed last), each entry's copies counted
    (k^2 comparisons per row: no (N, classes) count matrix), and the first maximum taken.
    """
    none = np.iinfo(np.int64).max
    other = np.sort(np.where(differs, nbr_labels, none), axis=1)
    counts = (other[:, :, None] == other[:, None, :]).sum(axis=2)
    counts[other == none] = 0
    best = np.take_along_axis(other, counts.argmax(axis=1)[:, None], axis=1)[:, 0]
    return np.where(differs.any(axis=1), best, -1)


def combine(outputs: Sequence[StrategyOutput], weights: Sequence[float] | None = None) -> StrategyOutput:
    """Mix strategies whose raw scores live on different scales: weighted mean of rank-normalised scores.

    Each score becomes rankdata(score) / N (ties averaged, in (0, 1]); suggested comes from the first
    output with a suggestion (!= -1) for that row; flagged = flagged by any output.
    """
    outputs = list(outputs)
    if not outputs:
        raise KibbleError("combine needs at least one StrategyOutput")
    n = len(outputs[0].score)
    if any(len(o.score) != n for o in outputs):
        raise KibbleError(f"all outputs must cover the same N samples; got {[len(o.score) for o in outputs]}")
    w = np.ones(len(outputs)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(outputs),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise KibbleError(f"weights must be {len(outputs)} finite non-negative numbers with a positive sum")
    for o in outputs:
        if not np.isfinite(np.asarray(o.score, dtype=np.float64)).all():
            raise KibbleError("cannot combine scores containing NaN or inf")
    if n == 0:
        return StrategyOutput(np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool))
    from scipy.stats import rankdata  # here, not at import: scipy.stats costs ~0.8 s of every `kibble queue`

    ranks = np.stack([rankdata(o.score) / n for o in outputs])
    score = (w[:, None] * ranks).sum(axis=0) / w.sum()
    suggested = np.full(n, -1, dtype=np.int64)
    for o in outputs:
        sug = np.asarray(o.suggested, dtype=np.int64)
        fill = (suggested == -1) & (sug != -1)
        suggested[fill] = sug[fill]
    flagged = np.logical_or.reduce([np.asarray(o.flagged, dtype=bool) for o in outputs])
    return StrategyOutput(score=score, suggested=suggested, flagged=flagged)
