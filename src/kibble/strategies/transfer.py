"""Active transfer learning (Monarch, *Human-in-the-Loop Machine Learning*, ch. 5; "Active Transfer
Learning with PyTorch"): small models on the main model's embeddings that predict where it is wrong
and what its training data does not yet cover.

- `atl_uncertainty`: on labelled items the model did not train on (the inner validation split, or a
  round's OOF), mark each prediction correct or incorrect, fit a logistic regression on the
  embeddings (plus the model's sorted top probabilities) to predict "incorrect", and rank the pool by
  P(incorrect). `spread=True` picks the batch across k-means clusters of the top candidates.
- `atl_representative` (adaptive): a logistic regression separating the training items from the
  pool; the most pool-like item moves to the training side, the classifier is refit (warm start), and
  so on until the batch is full, in `sub_batches` steps (one step = the non-adaptive version).

Pure functions of arrays returning a `StrategyOutput`; batch picks score above 1 (see active.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from kibble import KibbleError
from kibble.strategies.active import (UNCERTAINTY, batch_scores, check_batch, check_embedding_rows, check_pool, kmeans_picks,
                                      suggestions, uncertainty_score, unit_rows)
from kibble.strategies.base import StrategyOutput, argmax_rows, check_cleaning_inputs, entropy_rows
from kibble.strategies.cold_start import typicality

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeldOut:
    """Labelled items the current model did not train on: embeddings (M, D), labels (M,) class
    indices, and the model's probabilities on them (M, K)."""

    embeddings: np.ndarray
    labels: np.ndarray
    probs: np.ndarray


def _confidence_features(probs: np.ndarray) -> np.ndarray:
    """Class-agnostic confidence: the top-3 probabilities (sorted) and the normalised entropy."""
    k = probs.shape[1]
    top = -np.sort(-np.maximum(probs, 0.0), axis=1)[:, : min(3, k)]
    return np.column_stack([top, entropy_rows(probs) / np.log(k)])


def _features(emb: np.ndarray, probs: np.ndarray, use_probs: bool) -> np.ndarray:
    x = unit_rows(emb)
    return np.column_stack([x, _confidence_features(probs)]) if use_probs else x


def atl_uncertainty(probs, embeddings, held_embeddings, held_labels, held_probs, *, batch_size: int | None = None, use_probs: bool = True,
                    spread: bool = False, top_factor: float = 5.0, min_incorrect: int = 5, C: float = 1.0, fallback: str = "margin",
                    seed: int = 0) -> StrategyOutput:
    """Rank the pool by the probability that the model is wrong there, learnt from held-out errors.

    probs, embeddings: the pool (N, K) and (N, D). held_*: labelled items the model did not train on
    (embeddings (M, D), labels (M,), the model's probs (M, K)). use_probs: add the model's sorted top
    probabilities and entropy to the embeddings. spread: pick `batch_size` items, one per k-means
    cluster of the `top_factor x batch_size` likeliest errors. min_incorrect: with fewer held-out
    errors (or fewer correct items) than this, the classifier would learn noise: fall back to the
    `fallback` uncertainty score, with one log line. C: inverse L2 strength of the logistic regression.
    """
    emb, probs = check_pool(embeddings, probs)
    if probs is None:
        raise KibbleError("atl_uncertainty needs the model's pool probabilities (N, K); at a cold start use typiclust or probcover")
    if np.ndim(held_probs) == 2 and np.shape(held_probs)[1] != probs.shape[1]:
        raise KibbleError(f"held-out probs have {np.shape(held_probs)[1]} classes but the pool probs {probs.shape[1]}; use the same model's predictions")
    labels, hprobs = check_cleaning_inputs(held_labels, held_probs)
    hemb = check_embedding_rows(held_embeddings, "held-out embeddings", emb.shape[1])
    if len(hemb) != len(labels):
        raise KibbleError(f"held-out embeddings have {len(hemb)} rows but held-out labels {len(labels)}; one row per held-out item")
    b = check_batch(batch_size, len(emb)) if batch_size is not None else None
    if spread and b is None:
        raise KibbleError("atl_uncertainty: spread=true picks a batch; give batch_size")
    if top_factor < 1:
        raise KibbleError(f"top_factor={top_factor}; use >= 1 (how many times the batch to shortlist)")
    if fallback not in UNCERTAINTY:
        raise KibbleError(f"fallback={fallback!r}; use one of {sorted(UNCERTAINTY)}")
    if isinstance(min_incorrect, bool) or not isinstance(min_incorrect, (int, np.integer)) or min_incorrect < 1:
        raise KibbleError(f"min_incorrect={min_incorrect!r}; use an integer >= 1")
    wrong = argmax_rows(hprobs)[0] != labels
    n_wrong, n_right = int(wrong.sum()), int((~wrong).sum())
    if min(n_wrong, n_right) < min_incorrect:
        log.warning("atl_uncertainty: the held-out set has %d incorrect and %d correct predictions (need >= %d of each to learn where the "
                    "model errs); ranking by %s instead", n_wrong, n_right, min_incorrect, fallback)
        score = uncertainty_score(probs, fallback)
    else:
        score = _p_incorrect(_features(hemb, hprobs, use_probs), wrong, _features(emb, probs, use_probs), float(C))
    if spread:
        shortlist = np.argsort(-score, kind="stable")[: min(len(emb), int(np.ceil(top_factor * b)))]
        score = batch_scores(score, kmeans_picks(emb, score, shortlist, b, int(seed)))
    return StrategyOutput(score=score, suggested=argmax_rows(probs)[0], flagged=np.ones(len(emb), dtype=bool))


def _p_incorrect(x_held: np.ndarray, wrong: np.ndarray, x_pool: np.ndarray, c: float) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=2000))
    model.fit(x_held, wrong.astype(np.int64))
    return model.predict_proba(x_pool)[:, 1]


def atl_representative(embeddings, labelled_embeddings, batch_size: int, *, sub_batches: int = 10, C: float = 1.0, probs=None,
                       seed: int = 0) -> StrategyOutput:
    """Adaptive representative sampling: repeatedly pick what looks most like the pool and least like the training data.

    embeddings: pool (N, D). labelled_embeddings: the training items (M, D); none at a cold start (the
    first pick is then the pool's most typical item). The batch is picked in `sub_batches` steps: fit
    a logistic regression (training side vs pool side, balanced), move the step's most pool-like items
    to the training side, refit from the previous weights. probs: only for the suggested label.
    """
    emb, probs = check_pool(embeddings, probs)
    labelled = check_embedding_rows(labelled_embeddings, "labelled_embeddings", emb.shape[1])
    b = check_batch(batch_size, len(emb))
    if isinstance(sub_batches, bool) or not isinstance(sub_batches, (int, np.integer)) or sub_batches < 1:
        raise KibbleError(f"atl_representative: sub_batches={sub_batches!r}; use an integer >= 1 (1 = no adaptation)")
    if not C > 0:
        raise KibbleError(f"atl_representative: C={C!r}; use a positive inverse regularisation strength")
    base, picks = _adaptive_representative(emb, labelled, b, int(sub_batches), float(C), int(seed))
    return StrategyOutput(score=batch_scores(base, picks), suggested=suggestions(probs, len(emb)), flagged=np.ones(len(emb), dtype=bool))


def _adaptive_representative(emb: np.ndarray, labelled: np.ndarray, b: int, sub_batches: int, c: float, seed: int) -> tuple[np.ndarray, list[int]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    n, m = len(emb), len(labelled)
    x = StandardScaler().fit_transform(unit_rows(np.concatenate([labelled, emb])))
    pool_side = np.r_[np.zeros(m, dtype=np.int64), np.ones(n, dtype=np.int64)]
    free = np.ones(n, dtype=bool)
    picked: list[int] = []
    base = np.zeros(n)
    if b == 0:
        return base, picked
    if m == 0:  # nothing on the training side yet: start from the pool's most typical item
        first = int(np.argmax(typicality(x[m:], 20)))
        picked.append(first)
        free[first] = False
        pool_side[m + first] = 0
    steps = min(sub_batches, b - len(picked))
    sizes = np.diff(np.linspace(0, b - len(picked), steps + 1).round().astype(int)) if steps else []
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=1000, warm_start=True, random_state=seed)
    for size in sizes:
        model.fit(x, pool_side)
        p = model.predict_proba(x[m:])[:, 1]
        base = p.copy()
        top = np.argsort(-np.where(free, p, -np.inf), kind="stable")[:size]
        picked += [int(t) for t in top]
        free[top] = False
        pool_side[m + top] = 0
    return base, picked
