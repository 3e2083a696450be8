"""Active-learning strategies: which UNLABELED pool images are worth a human's label next.

Pure functions of the model's pool probabilities (N, K), MC-dropout passes (T, N, K) or embeddings
(N, D), returning a `StrategyOutput` (higher score = label it sooner; suggested = the model's guess,
shown to the annotator as a pre-annotation; every row flagged). Uncertainty sampling, BALD and
diversity follow Monarch, *Human-in-the-Loop Machine Learning* (ch. 3-5) and Settles' survey.

Batch strategies (`kmeans`, `hybrid`) pick a whole batch at once: their picks score above 1 (in
pick order), every other row keeps its uncertainty in [0, 1), so "top-`batch_size` by score" is
exactly the diverse batch.
"""

from __future__ import annotations

import numpy as np

from kibble import KibbleError
from kibble.strategies.base import StrategyOutput, argmax_rows, check_probs, entropy_rows, row_chunks, top_two

_EPS = 1e-12


def check_embeddings(embeddings, n: int) -> np.ndarray:
    emb = np.asarray(embeddings, dtype=np.float64) if embeddings is not None else None
    if emb is None:
        raise KibbleError("this strategy needs pool embeddings (N, D); save them (cv.save_embeddings=true) or use features mode")
    if emb.ndim != 2 or len(emb) != n:
        raise KibbleError(f"embeddings must be (N, D) with N={n} pool rows; got shape {emb.shape}")
    if not np.isfinite(emb).all():
        raise KibbleError("embeddings contain NaN or inf")
    return emb


def check_embedding_rows(embeddings, name: str, dim: int) -> np.ndarray:
    """(M, dim) finite embeddings of labelled or held-out rows; None or empty = none (M = 0)."""
    emb = np.asarray(embeddings if embeddings is not None else [], dtype=np.float64)
    if emb.size == 0:
        return np.zeros((0, dim))
    if emb.ndim != 2 or emb.shape[1] != dim:
        raise KibbleError(f"{name} must be (M, D) with D={dim} (the pool embeddings' width); got shape {emb.shape}")
    if not np.isfinite(emb).all():
        raise KibbleError(f"{name} contain NaN or inf")
    return emb


def check_pool(embeddings, probs) -> tuple[np.ndarray, np.ndarray | None]:
    """Pool embeddings (N, D) and, when given, the model's pool probabilities (N, K) with the same N.

    Model-free strategies (cold start) take probs=None: the first batch comes before any model."""
    probs = check_probs(probs) if probs is not None else None
    arr = np.asarray(embeddings) if embeddings is not None else None
    n = len(probs) if probs is not None else (len(arr) if arr is not None and arr.ndim == 2 else -1)
    return check_embeddings(embeddings, n), probs


def suggestions(probs: np.ndarray | None, n: int) -> np.ndarray:
    """The model's guess per row, or -1 (no suggestion) when there is no model yet."""
    return argmax_rows(probs)[0] if probs is not None else np.full(n, -1, dtype=np.int64)


def check_batch(batch_size, n: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 0:
        raise KibbleError(f"batch_size={batch_size!r}; give a non-negative number of images to pick")
    if batch_size > n:
        raise KibbleError(f"batch_size={batch_size} is larger than the pool ({n} unlabeled images); lower the budget or add images to the pool")
    return int(batch_size)


def _output(score: np.ndarray, probs: np.ndarray, suggested: np.ndarray | None = None) -> StrategyOutput:
    suggested = argmax_rows(probs)[0] if suggested is None else suggested
    return StrategyOutput(score=score, suggested=suggested.astype(np.int64), flagged=np.ones(len(score), dtype=bool))


def least_confidence(probs) -> StrategyOutput:
    """1 - max p, scaled by K/(K-1) to [0, 1]: the model's best guess is weak."""
    return _least_confidence(check_probs(probs))


def _least_confidence(probs: np.ndarray) -> StrategyOutput:
    k = probs.shape[1]
    best, top = argmax_rows(probs)
    return _output((1.0 - top) * k / (k - 1), probs, best)


def margin(probs) -> StrategyOutput:
    """1 - (p_top1 - p_top2): torn between two classes (the most robust uncertainty sampler in practice)."""
    return _margin(check_probs(probs))


def _margin(probs: np.ndarray) -> StrategyOutput:
    first, second = top_two(probs)
    return _output(1.0 - (first - second), probs)


def ratio(probs) -> StrategyOutput:
    """p_top2 / p_top1 in [0, 1]: the margin on a relative scale."""
    return _ratio(check_probs(probs))


def _ratio(probs: np.ndarray) -> StrategyOutput:
    first, second = top_two(probs)
    return _output(second / np.clip(first, _EPS, None), probs)


def entropy(probs) -> StrategyOutput:
    """Shannon entropy / log K in [0, 1]: uncertainty spread over all classes."""
    return _entropy(check_probs(probs))


def _entropy(probs: np.ndarray) -> StrategyOutput:
    return _output(np.clip(entropy_rows(probs) / np.log(probs.shape[1]), 0.0, 1.0), probs)


def bald(mc_probs) -> StrategyOutput:
    """BALD (Houlsby et al. 2011; Gal et al. 2017): mutual information between the label and the weights,

    MI = H(mean_t p_t) - mean_t H(p_t) over T >= 2 stochastic passes (MC dropout, fold models).
    High when the passes disagree (epistemic uncertainty), not merely when each pass is unsure.
    mc_probs: (T, N, K). suggested = argmax of the mean.
    """
    mc = np.asarray(mc_probs, dtype=np.float64)
    if mc.ndim != 3:
        raise KibbleError(f"BALD needs stochastic passes shaped (T, N, K); got shape {mc.shape}")
    if mc.shape[0] < 2:
        raise KibbleError(f"BALD needs T >= 2 stochastic passes (MC dropout); got T={mc.shape[0]}")
    mean = check_probs(mc.mean(axis=0), "mean of the passes")
    for t in range(mc.shape[0]):
        check_probs(mc[t], f"pass {t}")
    mc = np.clip(mc, 0.0, None)
    mi = entropy_rows(mean) - entropy_rows(mc).mean(axis=0)
    return _output(np.clip(mi, 0.0, None), mean)


def expected_cost(probs, severity) -> StrategyOutput:
    """Class-cost-aware uncertainty: the expected cost of the best decision, min_j sum_i p_i C[i, j].

    C = classes.yaml's severity matrix (true i, predicted j; 0 on the diagonal). Confusing two
    look-alike breeds of the same group costs less than confusing groups, so such images rank lower
    than equally uncertain images whose candidate classes are far apart. Normalised by max C.
    """
    probs = check_probs(probs)
    cost = np.asarray(severity, dtype=np.float64)
    k = probs.shape[1]
    if cost.shape != (k, k):
        raise KibbleError(f"severity matrix must be K x K = {k} x {k} (classes.yaml order); got {cost.shape}")
    if not np.isfinite(cost).all() or (cost < 0).any():
        raise KibbleError("severity matrix costs must be finite and >= 0")
    scale = cost.max() if cost.max() > 0 else 1.0
    best, low = np.empty(len(probs), dtype=np.int64), np.empty(len(probs))
    for rows in row_chunks(len(probs), k):  # the (N, K) risk matrix one chunk at a time
        risk = np.maximum(probs[rows].astype(np.float64), 0.0) @ cost  # expected cost of predicting each class
        best[rows] = risk.argmin(axis=1)
        low[rows] = np.take_along_axis(risk, best[rows, None], axis=1)[:, 0]
    return StrategyOutput(score=low / scale, suggested=best, flagged=np.ones(len(probs), dtype=bool))


def random(probs, seed: int = 0) -> StrategyOutput:
    """Uniform random order (seeded): the baseline every other strategy must beat."""
    probs = check_probs(probs)
    return _output(np.random.default_rng(seed).random(len(probs)), probs)


def uncertainty_score(probs: np.ndarray, kind: str) -> np.ndarray:
    """An uncertainty score of checked probs (no second check)."""
    if kind not in UNCERTAINTY:
        raise KibbleError(f"uncertainty={kind!r}; use one of {sorted(UNCERTAINTY)}")
    return _UNCERTAINTY_COMPUTE[kind](probs).score


def unit_rows(emb: np.ndarray) -> np.ndarray:
    return emb / np.clip(np.linalg.norm(emb, axis=1, keepdims=True), _EPS, None)


def density(embeddings, k: int = 10) -> np.ndarray:
    """Mean cosine similarity of each row to its k nearest other rows, in [-1, 1]: high = typical."""
    from sklearn.neighbors import NearestNeighbors

    emb = unit_rows(np.asarray(embeddings, dtype=np.float64))
    n = len(emb)
    if n < 2:
        return np.ones(n)
    k = max(1, min(int(k), n - 1))
    dist, _ = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(emb).kneighbors(emb)
    return 1.0 - dist[:, 1:].mean(axis=1)


def representative(probs, embeddings, beta: float = 1.0, k: int = 10, uncertainty: str = "entropy", outlier: bool = False) -> StrategyOutput:
    """Information density (Settles & Craven 2008): uncertainty x density^beta, so a batch is not spent
    on rare outliers. outlier=True turns it round: uncertainty x (1 - density)^beta, for finding
    what the training set does not cover (novel images, drift). Density from k-NN cosine similarity
    rescaled to [0, 1]."""
    probs = check_probs(probs)
    emb = check_embeddings(embeddings, len(probs))
    if beta < 0:
        raise KibbleError(f"beta={beta}; use a non-negative exponent")
    dens = density(emb, k)
    span = dens.max() - dens.min() if len(dens) else 0.0
    dens = (dens - dens.min()) / span if span > _EPS else np.ones_like(dens)
    weight = (1.0 - dens) if outlier else dens
    return _output(uncertainty_score(probs, uncertainty) * np.power(weight, beta), probs)


def batch_scores(base: np.ndarray, picks: list[int]) -> np.ndarray:
    """Rows not picked keep a rank-normalised base score in [0, 1); picks score 1 + (order from the top)."""
    n = len(base)
    from scipy.stats import rankdata  # here, not at import: scipy.stats costs ~0.8 s, and every `kibble queue` imports this module

    score = (rankdata(base) - 1) / max(n, 1)
    for order, row in enumerate(picks):
        score[row] = 2.0 - order / max(len(picks), 1)
    return score


def kmeans_diverse(probs, embeddings, batch_size: int, uncertainty: str = "entropy", seed: int = 0) -> StrategyOutput:
    """Cluster the pool embeddings into `batch_size` groups (k-means) and pick the most uncertain row
    of each: one uncertain image per region of the image space, not ten near-copies of one."""
    probs = check_probs(probs)
    emb = check_embeddings(embeddings, len(probs))
    b = check_batch(batch_size, len(probs))
    unc = uncertainty_score(probs, uncertainty)
    return _output(batch_scores(unc, kmeans_picks(emb, unc, np.arange(len(probs)), b, seed)), probs)


def kmeans_picks(emb: np.ndarray, unc: np.ndarray, rows: np.ndarray, b: int, seed: int) -> list[int]:
    from sklearn.cluster import KMeans

    if b == 0 or len(rows) == 0:
        return []
    if b >= len(rows):
        return [int(r) for r in rows[np.argsort(-unc[rows], kind="stable")]]
    x = unit_rows(emb[rows])
    assign = KMeans(n_clusters=b, n_init=3, random_state=seed).fit_predict(x)
    picks = []
    for c in range(b):
        members = rows[assign == c]
        if len(members):
            picks.append(int(members[np.argmax(unc[members])]))
    # empty clusters (duplicates): fill with the most uncertain rows not yet picked
    for r in rows[np.argsort(-unc[rows], kind="stable")]:
        if len(picks) >= b:
            break
        if int(r) not in picks:
            picks.append(int(r))
    return sorted(picks, key=lambda r: -unc[r])


def hybrid(probs, embeddings, batch_size: int, top_factor: float = 5.0, uncertainty: str = "margin", seed: int = 0) -> StrategyOutput:
    """Uncertainty then diversity (Monarch ch. 5): the top `top_factor x batch_size` most uncertain rows,
    clustered into `batch_size` groups, the most uncertain of each cluster picked."""
    probs = check_probs(probs)
    emb = check_embeddings(embeddings, len(probs))
    b = check_batch(batch_size, len(probs))
    if top_factor < 1:
        raise KibbleError(f"top_factor={top_factor}; use >= 1 (how many times the batch to shortlist)")
    unc = uncertainty_score(probs, uncertainty)
    shortlist = np.argsort(-unc, kind="stable")[: min(len(probs), int(np.ceil(top_factor * b)))]
    return _output(batch_scores(unc, kmeans_picks(emb, unc, shortlist, b, seed)), probs)


UNCERTAINTY = {"least_confidence": least_confidence, "margin": margin, "ratio": ratio, "entropy": entropy}
_UNCERTAINTY_COMPUTE = {"least_confidence": _least_confidence, "margin": _margin, "ratio": _ratio, "entropy": _entropy}
