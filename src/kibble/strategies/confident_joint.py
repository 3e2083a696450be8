"""cleanlab's confident learning (`find_label_issues`, filter_by="prune_by_noise_rate") in bounded memory.

Why a module of its own: the strategy (kibble.strategies.cleaning.confident_learning) is one call, but
reproducing cleanlab's mask exactly at 10^6 x 1,000 without its copies of the matrix takes its own
machinery: the confident joint counted in chunks, each class's rows from one sort, and each pruning
column's top counts by partition. Tests compare every piece with cleanlab's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kibble.strategies.base import row_chunks


def prune_by_noise_rate(labels: np.ndarray, probs: np.ndarray, rows: "RowPass | None" = None) -> np.ndarray:
    """cleanlab's `find_label_issues` with its defaults (filter_by="prune_by_noise_rate"), the same mask, in
    bounded memory and without a Python call per (class, class) pair.

    cleanlab copies the whole matrix three times (a boolean and a float copy for the confident joint, the
    rows grouped by class, a copy to compare predictions with labels): +8 GB at 10^6 x 1,000 float32.
    Here the confident joint is counted a chunk of rows at a time, the pruning takes one class's rows at a
    time with one sort call for all its columns, and only flagged rows are compared with their labels. The
    arithmetic and the sort algorithm are cleanlab's, on the same values in the same order, so ties break
    alike (tests compare the masks). rows: this matrix's `row_pass` when the caller made it already.
    """
    from cleanlab.count import FLOATING_POINT_COMPARISON
    from cleanlab.filter import _keep_at_least_n_per_class

    k_classes = probs.shape[1]
    passed = rows if rows is not None else row_pass(labels, probs)
    by_class = passed.by_class
    prune = _keep_at_least_n_per_class(prune_count_matrix=passed.joint.T, n=1, frac_noise=1.0)
    beaten = passed.beaten
    flagged = np.zeros(len(labels), dtype=bool)
    for k in range(k_classes):
        rows = by_class.rows(k)
        columns = np.flatnonzero(prune[:, k])
        columns = columns[columns != k]
        if len(rows) <= 1 or not len(columns):  # cleanlab: a class with <= min_examples_per_class (1) rows flags none
            continue
        near = np.flatnonzero(beaten[rows])
        mask = None
        if len(near) < len(rows):  # first only the rows some other class beats or ties: usually all the pruning needs
            mask = _class_mask(probs, rows[near], k, columns, prune[columns, k], screened=True)
            if mask is not None:
                flagged[rows[near]] = mask
        if mask is None:
            flagged[rows] = _class_mask(probs, rows, k, columns, prune[columns, k], screened=False)
    hits = np.flatnonzero(flagged)
    for chunk in row_chunks(len(hits), k_classes):  # un-flag rows whose (nudged) prediction is their label
        part = hits[chunk]
        nudged = probs[part]
        nudged[np.arange(len(part)), labels[part]] += FLOATING_POINT_COMPARISON
        flagged[part[nudged.argmax(axis=1) == labels[part]]] = False
    return flagged


def _class_mask(probs: np.ndarray, rows: np.ndarray, k: int, columns: np.ndarray, counts: np.ndarray, screened: bool) -> np.ndarray | None:
    """Which of class k's `rows` are among the first counts[j] of cleanlab's argsort(p_k - p_j) in a column j.

    screened: `rows` are only the class's rows whose argmax is another class (RowPass.beaten). The answer is then
    the whole class's answer when in every column the counts[j]-th smallest p_k - p_j among them is below 0 (the
    other rows have p_k - p_j >= 0: after that cut, ties with 0 included) and no column's tie at its cut overflows
    (a tie is broken by the sort of the whole line); otherwise None, and the caller takes all the class's rows."""
    mine = np.ascontiguousarray(probs[rows].T)  # these rows only, one line per class
    mask = np.zeros(len(rows), dtype=bool)
    for chunk in row_chunks(len(columns), len(rows)):  # a few columns at a time: each is one of these rows long
        cols, need = columns[chunk], counts[chunk]
        # -margin (p[k] - p[j] is exactly -(p[j] - p[k])), one contiguous line per column: the rows cleanlab's
        # argsort(-margin) puts first in each column
        neg = mine[k] - mine[cols]
        if screened and (np.count_nonzero(neg < 0, axis=1) < need).any():
            return None
        chosen = _top_counts(neg, need, ties_by_sort=not screened)
        if chosen is None:
            return None
        mask |= chosen
    return mask


def _top_counts(neg_margins: np.ndarray, counts: np.ndarray, ties_by_sort: bool = True) -> np.ndarray | None:
    """Rows (columns of `neg_margins`) among the first counts[j] of np.argsort(neg_margins[j]) for any j.

    A partition finds each line's counts[j]-th smallest value t: values below t are in any sort's first
    counts[j], and values equal to t too when all of them fit. Only a line whose ties at t overflow its count
    is sorted as cleanlab sorts it (which of the tied rows come first is the sort's choice). The counts are the
    few noisy rows per class pair: a partition instead of a sort of every line took confident_learning at 10^6 x 120
    from 4.0 s to about 1.6 s with the sorted class rows below (single thread; scripts/bench_scale.py).
    ties_by_sort=False: a line whose tie overflows returns None instead (the lines are a subset of the rows, and
    only the whole line's sort breaks its ties as cleanlab's does).
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
    if not ties_by_sort and not clear.all():
        return None
    for j in np.flatnonzero(~clear):  # more rows tie at the cut than the count takes
        chosen[np.argsort(lines[j])[: need[j]]] = True
    return chosen


class ClassRows:
    """Each class's row positions (ascending), from one stable sort of the labels instead of a pass over all
    labels per class (10^6 rows x 120 classes: 120 passes)."""

    def __init__(self, labels: np.ndarray, k_classes: int):
        # up to 32,767 classes the labels fit int16, which numpy's stable sort orders by radix (6x faster at 10^6)
        small = labels.astype(np.int16) if k_classes <= np.iinfo(np.int16).max else labels
        self.order = np.argsort(small, kind="stable")
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


ROW_PASS_ELEMENTS = 1 << 20  # values per chunk of the row pass (4 MB of float32; 2^16 to 2^22 timed alike at 10^6 x 120)


@dataclass(frozen=True)
class RowPass:
    """What one pass over the matrix's rows gives: cleanlab's calibrated confident joint (K x K, rows = given
    label), whether each row's argmax (first maximum, as np.argmax) is another class than its label (`beaten`),
    that argmax, and the matrix's smallest value."""

    joint: np.ndarray
    beaten: np.ndarray
    argmax: np.ndarray
    minimum: float
    by_class: ClassRows


def row_pass(labels: np.ndarray, probs: np.ndarray, by_class: ClassRows | None = None) -> RowPass:
    """cleanlab's `compute_confident_joint` counted a chunk of rows at a time (cleanlab builds an (N, K) boolean and
    float copy of the matrix for it), and from the same chunks, while they are in cache, what the pruning and the
    strategy read next: at 10^6 x 120, four passes over 0.5 GB became one.

    A row that is not `beaten` has its label as (first) maximum: p_k - p_j >= 0 in every column, so it is never
    among a column's first counts when that column holds counts[j] rows below 0 (see _class_mask)."""
    from cleanlab.count import calibrate_confident_joint

    n, k_classes = probs.shape
    by_class = by_class or ClassRows(labels, k_classes)
    thresholds = np.asarray(confident_thresholds(labels, probs, by_class)) - 1e-6
    if probs.dtype == np.float32:  # compare in float32: p >= t exactly when p >= the smallest float32 not below t
        low = thresholds.astype(np.float32)
        thresholds = np.where(low < thresholds, np.nextafter(low, np.float32(np.inf)), low)
    counts = np.zeros(k_classes * k_classes, dtype=np.int64)
    beaten, best, minimum = np.empty(n, dtype=bool), np.empty(n, dtype=np.int64), np.inf
    for part in row_chunks(n, k_classes, elements=ROW_PASS_ELEMENTS):
        chunk, given = probs[part], labels[part]
        top = chunk.argmax(axis=1)
        best[part] = top
        minimum = min(minimum, float(chunk.min()))
        beaten[part] = top != given
        confident = chunk >= thresholds
        n_confident = confident.view(np.uint8).sum(axis=1, dtype=np.int32)  # a row sum through uint8: ~1.5x count_nonzero's speed
        guess = np.where(n_confident > 1, top, confident.argmax(axis=1))  # 2+ confident classes: the likeliest
        keep = n_confident > 0
        counts += np.bincount(guess[keep] * k_classes + given[keep], minlength=k_classes * k_classes)
    # [given, true guess] as the transpose of a [guess, given] matrix, like cleanlab's confusion_matrix(...).T: the
    # calibration's float sums run in memory order, so the layout must match for the same rounding
    joint = counts.reshape(k_classes, k_classes).T
    np.fill_diagonal(joint, joint.diagonal().clip(min=1))
    return RowPass(calibrate_confident_joint(joint, labels), beaten, best, minimum, by_class)


def confident_joint(labels: np.ndarray, probs: np.ndarray, by_class: ClassRows | None = None) -> np.ndarray:
    """cleanlab's `compute_confident_joint` (calibrated, K x K, rows = given label), in bounded memory (row_pass)."""
    return row_pass(labels, probs, by_class).joint
