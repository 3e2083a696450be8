"""Which current images should a human label? The least confident and the most atypical ones.

Both scores are percentiles against the reference, so they read the same for any model:
- low confidence: the share of reference images the model was MORE confident on (0.99 = less
  confident than 99 % of the reference);
- atypical: the share of reference images whose own k-nearest-neighbour distance (leave-one-out,
  Euclidean on the embeddings) is SMALLER than this image's distance to the reference (0.99 =
  farther from the reference than 99 % of the reference is from itself).
An image is queued when its larger score reaches `min_score`; the queue is ranked by that score.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import pandas as pd

from kibble import KibbleError
from kibble.monitor import drift
from kibble.queue.formats import QUEUE_COLUMNS


def percentile_above(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each value, the fraction of reference values strictly below it."""
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    return np.searchsorted(ref, np.asarray(values, dtype=np.float64), side="left") / max(len(ref), 1)


def triage_scores(ref_confidence: np.ndarray, cur_confidence: np.ndarray, ref_embeddings: np.ndarray | None = None,
                  cur_embeddings: np.ndarray | None = None, k: int = 5, max_reference: int = 5000, seed: int = 0) -> pd.DataFrame:
    """Per current image: confidence, its low-confidence percentile, kNN distance and atypicality percentile."""
    ref_confidence = np.asarray(ref_confidence, dtype=np.float64)
    cur_confidence = np.asarray(cur_confidence, dtype=np.float64)
    frame = pd.DataFrame({
        "confidence": cur_confidence,
        # fraction of the reference with a higher confidence than this image
        "low_confidence": 1.0 - np.searchsorted(np.sort(ref_confidence), cur_confidence, side="right") / max(len(ref_confidence), 1),
    })
    if ref_embeddings is not None and cur_embeddings is not None:
        rows = np.arange(len(ref_embeddings))
        if len(rows) > max_reference:
            rows = np.sort(np.random.default_rng(seed).choice(len(rows), max_reference, replace=False))
        ref = np.asarray(ref_embeddings)[rows]
        ref_dist = drift.knn_distances(ref, None, k)
        cur_dist = drift.knn_distances(ref, cur_embeddings, k)
        frame["knn_distance"] = cur_dist
        frame["atypical"] = percentile_above(ref_dist, cur_dist)
        frame.attrs["reference_knn_distance"] = ref_dist  # leave-one-out, for the report's overlay
    return frame


def _queue_id(sample_id: str, tag: str) -> str:
    return "m" + hashlib.sha1(f"{tag}|{sample_id}".encode()).hexdigest()[:12]


def monitor_queue(sample_ids: Sequence[str], paths: Sequence[str], predicted: Sequence[str], scores: pd.DataFrame,
                  budget: int = 50, min_score: float = 0.95, round_index: int | None = None, tag: str = "monitor") -> pd.DataFrame:
    """The queue table (queue/formats.py columns + kind=new): top `budget` images by their larger score."""
    if len(sample_ids) != len(scores) or len(paths) != len(scores) or len(predicted) != len(scores):
        raise KibbleError(f"monitor queue: {len(sample_ids)} ids, {len(paths)} paths, {len(predicted)} predictions for {len(scores)} scores")
    if budget < 0 or not 0 <= min_score <= 1:
        raise KibbleError(f"monitor.queue: budget={budget} must be >= 0 and min_score={min_score} in [0, 1]")
    low = scores["low_confidence"].to_numpy()
    atyp = scores["atypical"].to_numpy() if "atypical" in scores else np.zeros(len(scores))
    best = np.maximum(low, atyp)
    ids = np.asarray([str(s) for s in sample_ids])
    keep = np.flatnonzero(best >= min_score)
    order = keep[np.lexsort((ids[keep], -best[keep]))][: int(budget)]
    rows = []
    for rank, i in enumerate(order, start=1):
        if atyp[i] > low[i]:
            strategy = "monitor_atypical"
            where = f"in the top {100 * (1 - atyp[i]):.1f} % of reference" if atyp[i] < 1 else "beyond every reference image"
            reason = f"atypical: embedding kNN distance {scores['knn_distance'].iloc[i]:.3f} {where}"
        else:
            strategy = "monitor_low_confidence"
            reason = f"low confidence {scores['confidence'].iloc[i]:.2f} (below {100 * low[i]:.1f} % of reference)"
        rows.append({
            "queue_id": _queue_id(ids[i], tag), "round": round_index, "rank": rank, "sample_id": ids[i],
            "path": str(paths[i]), "given_label": None, "suggested_label": str(predicted[i]),
            "score": float(best[i]), "strategy": strategy, "reason": reason, "kind": "new",
        })
    columns = [*QUEUE_COLUMNS, "kind"]
    return pd.DataFrame(rows, columns=columns).astype({"rank": "Int64"}) if rows else pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
