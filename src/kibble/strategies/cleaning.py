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
    if min(float(probs[rows].min()) for rows in row_chunks(len(probs), probs.shape[1])) < 0:
        probs = np.clip(probs, 0.0, None)
    if not kwargs or set(kwargs) <= {"n_jobs", "filter_by"} and kwargs.get("filter_by", "prune_by_noise_rate") == "prune_by_noise_rate":
        flagged = prune_by_noise_rate(labels, probs)  # cleanlab's default rule without its two copies of the matrix
    else:
        flagged = np.asarray(find_label_issues(labels, probs, **kwargs), dtype=bool)
    # cleanlab.rank.get_label_quality_scores(method="self_confidence") is p[label]
    return StrategyOutput(score=1.0 - gather(probs, labels), suggested=argmax_rows(probs)[0], flagged=flagged)


def prune_by_noise_rate(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """cleanlab's `find_label_issues` with its defaults (filter_by="prune_by_noise_rate"), the same mask, in
    bounded memory and without a Python call per (class, class) pair.

    cleanlab copies the whole matrix three times (a boolean and a float copy for the confident joint, the
    rows grouped by class, a copy to compare predictions with labels): +8 GB at 10^6 x 1,000 float32.
    Here the confident joint is counted a chunk of rows at a time, the pruning takes one class's rows at a
    time with one sort call for all its columns, and only flagged rows are compared with their labels. The
    arithmetic and the sort algorithm are cleanlab's, on the same values in the same order, so ties break
    alike (tests compare the masks).
    """
    from cleanlab.count import FLOATING_POINT_COMPARISON
    from cleanlab.filter import _keep_at_least_n_per_class

    k_classes = probs.shape[1]
    by_class = ClassRows(labels, k_classes)
    prune = _keep_at_least_n_per_class(prune_count_matrix=confident_joint(labels, probs, by_class).T, n=1, frac_noise=1.0)
    flagged = np.zeros(len(labels), dtype=bool)
    for k in range(k_classes):
        rows = by_class.rows(k)
        columns = np.flatnonzero(prune[:, k])
        columns = columns[columns != k]
        if len(rows) <= 1 or not len(columns):  # cleanlab: a class with <= min_examples_per_class (1) rows flags none
            continue
        mine = np.ascontiguousarray(probs[rows].T)  # this class's rows only, one line per class
        mask = np.zeros(len(rows), dtype=bool)
        for chunk in row_chunks(len(columns), len(rows)):  # a few columns at a time: each is one of this class's rows long
            cols = columns[chunk]
            # -margin (p[k] - p[j] is exactly -(p[j] - p[k])), one contiguous line per column: the rows cleanlab's
            # argsort(-margin) puts first in each column
            mask |= _top_counts(mine[k] - mine[cols], prune[cols, k])
        flagged[rows] = mask
    hits = np.flatnonzero(flagged)
    for chunk in row_chunks(len(hits), k_classes):  # un-flag rows whose (nudged) prediction is their label
        part = hits[chunk]
        nudged = probs[part]
        nudged[np.arange(len(part)), labels[part]] += FLOATING_POINT_COMPARISON
        flagged[part[nudged.argmax(axis=1) == labels[part]]] = False
    return flagged


def _top_counts(neg_margins: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Rows (columns of `neg_margins`) among the first counts[j] of np.argsort(neg_margins[j]) for any j.

    A partition finds each line's counts[j]-th smallest value t: values below t are in any sort's first
    counts[j], and values equal to t too when all of them fit. Only a line whose ties at t overflow its count
    is sorted as cleanlab sorts it (which of the tied rows come first is the sort's choice). The counts are the
    few noisy rows per class pair: a partition instead of a sort of every line took confident_learning at 10^6 x 120
    from 4.0 s to about 1.6 s with the sorted class rows below (single thread; scripts/bench_scale.py).
    """
    n_lines, width = neg_margins.shape
    take = np.minimum(counts.astype(np.int64), width)
    chosen = np.zeros(width, dtype=bool)
    live = np.flatnonzero(take > 0)
    if not len(live):
        return chosen
    lines, need = neg_margins[live], take[live]
    # one partition at the largest count (several kth values cost a sort's time), then only that prefix sorted
    head = np.partition(lines, int(need.max()) - 1, axis=1)[:, : int(need.max())]
    head.sort(axis=1)
    cut = head[np.arange(len(live)), need - 1][:, None]
    upto = lines <= cut
    clear = np.count_nonzero(upto, axis=1) == need
    chosen |= (upto if clear.all() else upto[clear]).any(axis=0)
    for j in np.flatnonzero(~clear):  # more rows tie at the cut than the count takes
        chosen[np.argsort(lines[j])[: need[j]]] = True
    return chosen


class ClassRows:
    """Each class's row positions (ascending), from one stable sort of the labels instead of a pass over all
    labels per class (10^6 rows x 120 classes: 120 passes)."""

    def __init__(self, labels: np.ndarray, k_classes: int):
        self.order = np.argsort(labels, kind="stable")
        self.bounds = np.searchsorted(labels[self.order], np.arange(k_classes + 1))

    def rows(self, k: int) -> np.ndarray:
        return self.order[self.bounds[k]:self.bounds[k + 1]]


def confident_thresholds(labels: np.ndarray, probs: np.ndarray, by_class: ClassRows) -> np.ndarray:
    """cleanlab's `get_confident_thresholds`: each class's mean p[k] over its rows, np.mean over the same values in
    the same order (so the same rounding), each class's rows taken from one sort rather than a mask per class."""
    from cleanlab.count import CONFIDENT_THRESHOLDS_LOWER_BOUND

    big_value = 2  # cleanlab's threshold for a class without rows: no probability reaches it
    means = [np.mean(probs[rows, k]) if len(rows := by_class.rows(k)) else big_value for k in range(probs.shape[1])]
    return np.clip(means, a_min=CONFIDENT_THRESHOLDS_LOWER_BOUND, a_max=None)  # cleanlab's dtype too (a list, then clip)


def confident_joint(labels: np.ndarray, probs: np.ndarray, by_class: ClassRows | None = None) -> np.ndarray:
    """cleanlab's `compute_confident_joint` (calibrated, K x K, rows = given label), counted a chunk of rows at a
    time: cleanlab builds an (N, K) boolean and float copy of the matrix for it."""
    from cleanlab.count import calibrate_confident_joint

    k_classes = probs.shape[1]
    by_class = by_class or ClassRows(labels, k_classes)
    thresholds = np.asarray(confident_thresholds(labels, probs, by_class)) - 1e-6
    if probs.dtype == np.float32:  # compare in float32: p >= t exactly when p >= the smallest float32 not below t
        low = thresholds.astype(np.float32)
        thresholds = np.where(low < thresholds, np.nextafter(low, np.float32(np.inf)), low)
    counts = np.zeros(k_classes * k_classes, dtype=np.int64)
    for part in row_chunks(len(labels), k_classes, elements=1 << 22):  # 4M values (16 MB float32 + 4 MB boolean): few calls
        confident = probs[part] >= thresholds
        n_confident = np.count_nonzero(confident, axis=1)
        guess = confident.argmax(axis=1)
        several = np.flatnonzero(n_confident > 1)  # 2+ confident classes: the likeliest
        guess[several] = probs[part][several].argmax(axis=1)
        keep = n_confident > 0
        counts += np.bincount(guess[keep] * k_classes + labels[part][keep], minlength=k_classes * k_classes)
    # [given, true guess] as the transpose of a [guess, given] matrix, like cleanlab's confusion_matrix(...).T: the
    # calibration's float sums run in memory order, so the layout must match for the same rounding
    joint = counts.reshape(k_classes, k_classes).T
    np.fill_diagonal(joint, joint.diagonal().clip(min=1))
    return calibrate_confident_joint(joint, labels)


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
