"""Cold-start strategies: the first labels, chosen from embeddings alone (no model needed).

With zero or a handful of labels, uncertainty sampling does worse than random (the model's
uncertainty means nothing yet); what helps is labelling *typical* images of every region of the
data. Two published methods, on L2-normalised embeddings (as both papers use):

- `typiclust`: TypiClust (Hacohen, Dekel & Weinshall, "Active Learning on a Budget: Opposite
  Strategies Suit High and Low Budgets", ICML 2022). k-means into |L| + B clusters; from the largest
  clusters holding no labelled point, the most typical point (inverse mean distance to its k nearest
  neighbours inside the cluster).
- `probcover`: ProbCover (Yehuda, Dekel, Hacohen & Weinshall, "Active Learning Through a Covering
  Lens", NeurIPS 2022). Balls of radius delta around every point; greedily pick the point whose ball
  covers the most points not yet covered (by labelled points or earlier picks). delta: the largest
  radius at which `purity` of the balls hold one k-means pseudo-class only (the paper's heuristic, with
  as many clusters as classes), or given.

Both take the pool's embeddings (N, D), the already-labelled rows' embeddings (M, D; none at a cold
start) and the batch size; probabilities are optional (only for the suggested label). Picks score
above 1 in pick order, every other row below 1 (as `kmeans`), so the top-`batch_size` rows are the batch.
"""

from __future__ import annotations

import logging

import numpy as np

from kibble import KibbleError
from kibble.strategies.active import batch_scores, check_batch, check_embedding_rows, check_pool, suggestions, unit_rows
from kibble.strategies.base import StrategyOutput

log = logging.getLogger(__name__)

# TypiClust's published settings: at most 500 clusters (MiniBatchKMeans above 50), 20 neighbours, clusters of <= 5 points skipped.
MAX_CLUSTERS, KMEANS_EXACT_UP_TO = 500, 50


def typiclust(embeddings, batch_size: int, labelled_embeddings=None, *, k_neighbors: int = 20, max_clusters: int = MAX_CLUSTERS,
              min_cluster_size: int = 5, probs=None, seed: int = 0) -> StrategyOutput:
    """TypiClust: the most typical pool point of each of the largest clusters without labels.

    embeddings: pool (N, D). labelled_embeddings: rows already labelled (M, D), or None.
    k_neighbors: neighbours for typicality (capped at half the cluster). max_clusters: cap on |L| + B.
    min_cluster_size: clusters of this many points or fewer are skipped (outliers), unless none is larger.
    probs: the model's pool probabilities, only for the suggested label (None at a cold start).
    """
    emb, probs = check_pool(embeddings, probs)
    labelled = check_embedding_rows(labelled_embeddings, "labelled_embeddings", emb.shape[1])
    b = check_batch(batch_size, len(emb))
    for name, value, low in (("k_neighbors", k_neighbors, 1), ("max_clusters", max_clusters, 1), ("min_cluster_size", min_cluster_size, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise KibbleError(f"typiclust: {name}={value!r}; use an integer >= {low}")
    base, picks = _typiclust(emb, labelled, b, int(k_neighbors), int(max_clusters), int(min_cluster_size), int(seed))
    return StrategyOutput(score=batch_scores(base, picks), suggested=suggestions(probs, len(emb)), flagged=np.ones(len(emb), dtype=bool))


def kmeans_assign(x: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """k-means cluster of each row: KMeans up to 50 clusters, MiniBatchKMeans above (as TypiClust's code)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if n_clusters <= 1:
        return np.zeros(len(x), dtype=np.int64)
    if n_clusters <= KMEANS_EXACT_UP_TO:
        model = KMeans(n_clusters=n_clusters, n_init=3, random_state=seed)
    else:
        model = MiniBatchKMeans(n_clusters=n_clusters, n_init=3, batch_size=max(1024, 4 * n_clusters), random_state=seed)
    return model.fit_predict(x).astype(np.int64)


def typicality(x: np.ndarray, k: int) -> np.ndarray:
    """1 / (mean Euclidean distance to the k nearest other rows + 1e-5); a lone row gets 1."""
    from sklearn.neighbors import NearestNeighbors

    if len(x) < 2:
        return np.ones(len(x))
    k = max(1, min(k, len(x) - 1))
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    return 1.0 / (dist[:, 1:].mean(axis=1) + 1e-5)


def _typiclust(emb: np.ndarray, labelled: np.ndarray, b: int, k_neighbors: int, max_clusters: int, min_size: int,
               seed: int) -> tuple[np.ndarray, list[int]]:
    n, m = len(emb), len(labelled)
    base = np.zeros(n)
    if b == 0:
        return base, []
    x = unit_rows(np.concatenate([labelled, emb]))
    assign = kmeans_assign(x, min(m + b, max_clusters, len(x)), seed)
    pool_assign = assign[m:]
    sizes = np.bincount(assign, minlength=assign.max() + 1)
    existing = np.bincount(assign[:m], minlength=len(sizes))
    has_pool = np.bincount(pool_assign, minlength=len(sizes)) > 0

    def by_priority(clusters: np.ndarray) -> np.ndarray:  # fewest labelled points, then largest
        return clusters[np.lexsort((-sizes[clusters], existing[clusters]))]

    with_pool = np.flatnonzero(has_pool)
    order = by_priority(np.flatnonzero(has_pool & (sizes > min_size)))
    if not len(order):
        order = by_priority(with_pool)
    members = {int(c): np.flatnonzero(pool_assign == c) for c in with_pool}
    for c, rows in members.items():  # typicality inside each cluster; also the order of the rows not picked
        base[rows] = typicality(x[m + rows], min(k_neighbors, len(rows) // 2))
    picked: list[int] = []
    free = np.ones(n, dtype=bool)
    visit = misses = 0
    while len(picked) < b:
        if misses == len(order):  # the large clusters are used up: the small ones too
            order, misses = by_priority(with_pool), 0
        c = int(order[visit % len(order)])
        visit += 1
        rows = members[c][free[members[c]]]
        if not len(rows):
            misses += 1
            continue
        misses = 0
        typical = base[rows] if len(rows) == len(members[c]) else typicality(x[m + rows], min(k_neighbors, len(rows) // 2))
        pick = int(rows[np.argmax(typical)])
        picked.append(pick)
        free[pick] = False
    return base, picked


def probcover(embeddings, batch_size: int, labelled_embeddings=None, *, delta: float | None = None, purity: float = 0.95,
              n_clusters: int | None = None, probs=None, seed: int = 0) -> StrategyOutput:
    """ProbCover: greedy maximum coverage of delta-balls on normalised embeddings.

    embeddings: pool (N, D). labelled_embeddings: rows already labelled (M, D), or None; their balls
    count as covered. delta: ball radius on unit vectors (0 < delta <= 2), or None for the purity
    heuristic: the largest radius at which a share `purity` of the balls are pure under k-means with
    `n_clusters` clusters (default: the number of classes, from probs). Once everything is covered the
    rest of the batch is drawn at random (seeded), as in the paper.
    """
    emb, probs = check_pool(embeddings, probs)
    labelled = check_embedding_rows(labelled_embeddings, "labelled_embeddings", emb.shape[1])
    b = check_batch(batch_size, len(emb))
    if delta is not None and not (isinstance(delta, (int, float, np.floating)) and 0 < float(delta) <= 2):
        raise KibbleError(f"probcover: delta={delta!r}; use a radius in (0, 2] (embeddings are unit vectors), or null for the purity heuristic")
    if not 0 < float(purity) < 1:
        raise KibbleError(f"probcover: purity={purity!r}; use a share in (0, 1), e.g. 0.95")
    x = unit_rows(np.concatenate([labelled, emb]))
    if delta is None:
        k = n_clusters if n_clusters is not None else (probs.shape[1] if probs is not None else None)
        if k is None or isinstance(k, bool) or int(k) < 2:
            raise KibbleError("probcover: give delta, or n_clusters >= 2 (the number of classes) for the purity heuristic")
        delta = purity_delta(x, int(k), float(purity), int(seed))
    base, picks, covered = _probcover(x, len(labelled), b, float(delta), int(seed))
    log.info("probcover: delta %.3f, %d picks; labelled + picks cover %.1f%% of the pool", delta, len(picks), 100 * covered)
    return StrategyOutput(score=batch_scores(base, picks), suggested=suggestions(probs, len(emb)), flagged=np.ones(len(emb), dtype=bool))


def purity_delta(x: np.ndarray, n_clusters: int, purity: float, seed: int) -> float:
    """ProbCover's radius: pseudo-labels from k-means; a ball around x_i is pure while it holds no point
    of another cluster, i.e. while delta < d_i (distance to the nearest other-cluster point). The share
    of pure balls falls with delta, so the largest delta keeping `purity` of them pure is a quantile of d."""
    from sklearn.metrics import pairwise_distances_chunked

    assign = kmeans_assign(x, min(n_clusters, len(x)), seed)
    if assign.max() == 0:
        return 2.0  # one cluster (or one point): every ball is pure
    def nearest_other(chunk: np.ndarray, start: int) -> np.ndarray:
        same = assign[start:start + len(chunk), None] == assign[None, :]
        return np.where(same, np.inf, chunk).min(axis=1)
    d = np.concatenate(list(pairwise_distances_chunked(x, reduce_func=nearest_other)))
    delta = float(np.quantile(d, 1.0 - purity))
    positive = d[d > 0]
    return max(delta, float(positive.min()) if len(positive) else 1e-6) * (1 - 1e-9)


def _probcover(x: np.ndarray, m: int, b: int, delta: float, seed: int) -> tuple[np.ndarray, list[int], float]:
    from sklearn.neighbors import radius_neighbors_graph

    n = len(x) - m
    graph = radius_neighbors_graph(x, radius=delta, mode="connectivity", include_self=True).tocsr()
    graph.data[:] = 1.0
    covered = np.zeros(len(x), dtype=bool)
    if m:
        covered[graph[:m].indices] = True  # the labelled rows' balls
    degree = graph @ (~covered).astype(np.float64)  # symmetric graph: uncovered points in each ball
    base = degree[m:].copy()
    picked: list[int] = []
    free = np.ones(n, dtype=bool)
    rng = np.random.default_rng(seed)
    for _ in range(b):
        gain = np.where(free, degree[m:], -1.0)
        if gain.max() <= 0:  # everything coverable is covered: the paper draws the rest at random
            pick = int(rng.choice(np.flatnonzero(free)))
        else:
            pick = int(np.argmax(gain))
        picked.append(pick)
        free[pick] = False
        ball = graph[m + pick].indices
        newly = ball[~covered[ball]]
        if len(newly):
            covered[newly] = True
            degree -= np.asarray(graph[newly].sum(axis=0)).ravel()  # symmetric: the balls that held them
    return base, picked, float(covered[m:].mean()) if n else 1.0
