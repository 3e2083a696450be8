"""How well a cleaning strategy finds known (planted or audited) label errors.

Precision/recall at a review budget answer the practical question (how many of the samples a human
looks at were really wrong); AUPRC/AUROC summarise the whole ranking independent of any budget.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

from kibble import KibbleError


def _as_bool(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise KibbleError(f"{name} must be 1-D; got shape {arr.shape}")
    if arr.dtype != bool:
        if not np.isin(arr, [0, 1]).all():
            raise KibbleError(f"{name} must be boolean (or 0/1)")
        arr = arr.astype(bool)
    return arr


def detection_metrics(is_noisy, score, budget: int | None = None, flagged=None) -> dict[str, Any]:
    """Score a ranking against known noise.

    is_noisy: bool (N,) ground truth; score: float (N,), higher = more suspicious.
    budget: reviews a human would do; default = number of noisy samples (so precision == recall).
    flagged: optional bool (N,); when given the queue draws only from flagged rows, as real queues do,
    so it may hold fewer than `budget` rows. Ties in score keep the original row order.
    Returns precision_at_budget (hits / rows queued), recall_at_budget (hits / n_noisy), auprc, auroc,
    n_noisy, budget, n_queued. Undefined values (no noisy rows, one class only, empty queue) are NaN.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    noisy = _as_bool(is_noisy, "is_noisy")
    score = np.asarray(score, dtype=np.float64)
    if score.shape != noisy.shape:
        raise KibbleError(f"score must have the same shape as is_noisy; got {score.shape} vs {noisy.shape}")
    if not np.isfinite(score).all():
        raise KibbleError("score contains NaN or inf")
    n_noisy = int(noisy.sum())
    if budget is None:
        budget = n_noisy
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 0:
        raise KibbleError(f"budget must be a non-negative integer; got {budget!r}")
    budget = int(budget)

    candidates = np.arange(len(score))
    if flagged is not None:
        mask = _as_bool(flagged, "flagged")
        if mask.shape != noisy.shape:
            raise KibbleError(f"flagged must have the same shape as is_noisy; got {mask.shape} vs {noisy.shape}")
        candidates = candidates[mask]
    order = candidates[np.argsort(-score[candidates], kind="stable")]
    queued = order[:budget]
    hits = int(noisy[queued].sum())

    # AUPRC/AUROC rank flagged rows above unflagged ones (a queue never reaches an unflagged row first)
    ranking = score if flagged is None else score + (np.ptp(score) + 1.0) * _as_bool(flagged, "flagged")
    one_class = n_noisy == 0 or n_noisy == len(noisy)
    return {
        "precision_at_budget": hits / len(queued) if len(queued) else float("nan"),
        "recall_at_budget": hits / n_noisy if n_noisy else float("nan"),
        "auprc": float("nan") if one_class else float(average_precision_score(noisy, ranking)),
        "auroc": float("nan") if one_class else float(roc_auc_score(noisy, ranking)),
        "n_noisy": n_noisy,
        "budget": budget,
        "n_queued": int(len(queued)),
    }


def queue_precision_recall(queued_ids: Iterable, noisy_ids: Iterable) -> dict[str, Any]:
    """Precision/recall of an actual queue (sample ids) against the ids known to be mislabelled.

    Ids are compared as a set (duplicates count once). Undefined ratios are NaN.
    """
    if isinstance(queued_ids, (str, bytes)) or isinstance(noisy_ids, (str, bytes)):
        raise KibbleError("queued_ids and noisy_ids must be collections of ids, not a single string")
    queued, noisy = set(queued_ids), set(noisy_ids)
    hits = len(queued & noisy)
    return {
        "precision": hits / len(queued) if queued else float("nan"),
        "recall": hits / len(noisy) if noisy else float("nan"),
        "n_queued": len(queued),
        "n_noisy": len(noisy),
        "n_hits": hits,
    }


def truth_aware_summary(is_noisy, outputs: Mapping[str, Any], queued_rows, known=None) -> dict[str, Any]:
    """What a round's queue found, where the truth is known (benchmarks, injected noise, a `true_label` column).

    is_noisy: bool (N,) given label != true label (rows without a truth: anything, masked by `known`);
    outputs: strategy name -> object with .score / .flagged (N,); queued_rows: row indices of the queue's
    relabel items (gold questions excluded). Returns queue precision/recall and, per strategy, AUPRC,
    AUROC and precision/recall at the queue's size. Rows outside `known` are left out of every number.
    """
    noisy = _as_bool(is_noisy, "is_noisy")
    keep = np.ones(len(noisy), dtype=bool) if known is None else _as_bool(known, "known")
    rows = np.asarray(list(queued_rows), dtype=np.int64)
    rows = rows[keep[rows]] if rows.size else rows
    hits = int(noisy[rows].sum())
    n_noisy = int(noisy[keep].sum())
    out: dict[str, Any] = {
        "n_with_true_label": int(keep.sum()),
        "noisy_in_train": n_noisy,
        "queue_precision": hits / len(rows) if len(rows) else float("nan"),
        "queue_recall": hits / n_noisy if n_noisy else float("nan"),
        "strategies": {},
    }
    for name, o in outputs.items():
        m = detection_metrics(noisy[keep], np.asarray(o.score, dtype=np.float64)[keep], budget=max(len(rows), 0),
                              flagged=np.asarray(o.flagged, dtype=bool)[keep])
        out["strategies"][name] = {k: m[k] for k in ("auprc", "auroc", "precision_at_budget", "recall_at_budget")}
    return out
