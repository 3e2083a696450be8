"""Each row's k nearest other rows of an (N, D) embedding matrix: exact below a size, approximate above.

`neighbors` (strategies/cleaning.py) needs the k-NN graph of every labelled sample. Exact search is
brute force, N^2 D: at 10^5 x 1,280 it takes tens of minutes on a 2-core machine, at 10^6 days.
From `EXACT_BELOW` rows `method="auto"` switches to faiss (`pip install faiss-cpu`), an inverted-file
index (IVF-Flat): cosine rows are L2-normalised, projected to `PCA_DIMS` principal components when D
is larger, clustered into about 2 sqrt(N) lists by k-means, and each row scans the lists nearest to
it until about `SCAN_ROWS` rows (at least `MIN_NPROBE` lists): the same work per row at any N, so
small N gets a larger share of the rows scanned. Rows are searched in the order of their nearest
list, so consecutive rows scan lists that are still in cache. The numbers behind these choices (time, recall, agreement of the scores,
the threshold) are in docs/benchmarks.md, section "Scale: `neighbors` k-NN from 10^4 to 10^6 rows",
written by scripts/bench_scale.py --part neighbors.

Both paths return k + 1 candidates per row and drop the row itself the same way, so exact
duplicates are handled alike: the row is dropped where it appears, else the farthest candidate.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterator

import numpy as np

from kibble import KibbleError

log = logging.getLogger(__name__)

METHODS = ("auto", "exact", "ann")
ANN_METRICS = ("cosine", "euclidean")
# Below this many rows `auto` searches exactly: about a minute here (docs/benchmarks.md, see above).
EXACT_BELOW = 20_000
PCA_DIMS = 256  # principal components the index searches in when D is larger
SCAN_ROWS = 4000  # rows each row compares itself with: about this many, in whole lists...
MIN_NPROBE = 8  # ...and at least this many lists (what 4,000 rows come to at 10^6 rows)
MAX_LISTS = 2048  # k-means cost grows with lists^2: 2,048 lists train in about 30 s here (10^6 rows)
_TRAIN_PER_LIST = 40  # k-means and PCA train on a seeded sample of rows, not on all N
_PCA_TRAIN_ROWS = 20_000
_CHUNK_ROWS = 8192

Prepare = Callable[[np.ndarray], np.ndarray]


def import_faiss():
    """faiss, or a one-line KibbleError naming the package to install."""
    try:
        import faiss
    except ImportError:
        raise KibbleError("neighbors' approximate search needs faiss: pip install faiss-cpu "
                          "(or pass method='exact')") from None
    return faiss


def resolve_method(n: int, metric: str, method: str = "auto", exact_below: int = EXACT_BELOW) -> str:
    """'exact' or 'ann' for N rows: auto is exact below `exact_below` rows or for a metric faiss lacks."""
    if method not in METHODS:
        raise KibbleError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if not isinstance(exact_below, (int, np.integer)) or exact_below < 0:
        raise KibbleError(f"exact_below must be a non-negative integer; got {exact_below!r}")
    if method == "ann" and metric not in ANN_METRICS:
        raise KibbleError(f"method='ann' supports metric {' or '.join(ANN_METRICS)}; got {metric!r} (use method='exact')")
    if method == "auto":
        return "ann" if n >= exact_below and metric in ANN_METRICS else "exact"
    return method


def neighbor_indices(emb: np.ndarray, k: int, metric: str = "cosine", method: str = "auto",
                     exact_below: int = EXACT_BELOW, seed: int = 0) -> np.ndarray:
    """(N, k) int64 indices of each row's k nearest other rows, nearest first (self excluded).

    emb must be a finite float32/float64 (N, D) array with N > k (callers validate).
    """
    use = resolve_method(len(emb), metric, method, exact_below)
    log.debug("neighbors: %s k-NN over %d x %d (%s)", use, emb.shape[0], emb.shape[1], metric)
    found = exact_search(emb, k + 1, metric) if use == "exact" else ann_search(emb, k + 1, metric, seed)
    return drop_self(found)


def drop_self(found: np.ndarray) -> np.ndarray:
    """(N, k+1) candidates -> (N, k): drop the row itself, or the last candidate where it is absent.

    With exact duplicates the row itself may be tied with, and ranked behind, its copies.
    """
    n = len(found)
    is_self = found == np.arange(n)[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), found.shape[1] - 1)
    keep = np.ones(found.shape, dtype=bool)
    keep[np.arange(n), drop] = False
    return found[keep].reshape(n, found.shape[1] - 1)


def exact_search(emb: np.ndarray, kk: int, metric: str) -> np.ndarray:
    """scikit-learn's brute-force/tree search in float64: every row's kk nearest rows, itself included."""
    from sklearn.neighbors import NearestNeighbors

    emb = np.asarray(emb, dtype=np.float64)
    return NearestNeighbors(n_neighbors=kk, metric=metric).fit(emb).kneighbors(emb, return_distance=False)


def ann_search(emb: np.ndarray, kk: int, metric: str, seed: int = 0) -> np.ndarray:
    """faiss IVF-Flat (after PCA when D > PCA_DIMS): every row's kk approximate nearest rows, itself included.

    Rows whose scanned lists hold fewer than kk rows are searched exactly (brute force).
    """
    faiss = import_faiss()
    n, d = emb.shape
    rng = np.random.default_rng(seed)
    prepare = preparer(emb, metric)
    pca, dims = None, min(d, PCA_DIMS, n)  # faiss's PCA gives at most as many components as rows
    if dims < d:
        pca = faiss.PCAMatrix(d, dims)
        pca.train(prepare(_sample(rng, n, _PCA_TRAIN_ROWS)))
    z = np.empty((n, dims), dtype=np.float32)
    for rows in row_slices(n):
        part = prepare(np.arange(rows.start, rows.stop))
        z[rows] = pca.apply(part) if pca is not None else part

    nlist = list_count(n)
    quantizer = faiss.IndexFlatL2(dims)
    index = faiss.IndexIVFFlat(quantizer, dims, nlist)
    index.cp.seed = int(seed)
    index.cp.niter = 10
    index.cp.min_points_per_centroid = 1  # list_count keeps >= 39 rows per list; no faiss warning
    index.cp.max_points_per_centroid = _TRAIN_PER_LIST
    index.train(z[_sample(rng, n, _TRAIN_PER_LIST * nlist)])
    index.add(z)
    index.nprobe = nprobe = probe_count(n, nlist)

    found = np.empty((n, kk), dtype=np.int64)
    coarse_dist, coarse = quantizer.search(z, nprobe)
    order = np.argsort(coarse[:, 0], kind="stable")  # rows of one list together: its lists stay in cache
    for rows in row_slices(n):
        part = order[rows]
        _, found[part] = index.search_preassigned(z[part], kk, coarse[part], coarse_dist[part])
    return fill_missing(found, prepare, metric)


def list_count(n: int) -> int:
    """Inverted lists for N rows: about 2 sqrt(N), at most MAX_LISTS, at least 39 rows per list."""
    return int(max(1, min(round(2 * np.sqrt(n)), MAX_LISTS, n // 39)))


def probe_count(n: int, nlist: int) -> int:
    """Lists each row scans: enough for about SCAN_ROWS rows (so the work per row is the same at any N
    and the total grows linearly), at least MIN_NPROBE, at most all of them."""
    return int(min(nlist, max(MIN_NPROBE, np.ceil(SCAN_ROWS * nlist / max(n, 1)))))


def fill_missing(found: np.ndarray, prepare: Prepare, metric: str) -> np.ndarray:
    """Rows with a -1 (fewer than kk rows in their scanned lists) get their exact kk nearest rows."""
    missing = np.flatnonzero((found < 0).any(axis=1))
    if missing.size:
        found[missing] = brute_force(prepare, len(found), missing, found.shape[1], metric)
    return found


def brute_force(prepare: Prepare, n: int, queries: np.ndarray, kk: int, metric: str) -> np.ndarray:
    """Exact kk nearest rows of a few query rows, scanning all N rows in chunks (float32)."""
    q = prepare(queries)
    best_d = np.full((len(q), 0), np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), 0), dtype=np.int64)
    for rows in row_slices(n):
        xb = prepare(np.arange(rows.start, rows.stop))
        dist = -(q @ xb.T) if metric == "cosine" else (xb * xb).sum(axis=1)[None, :] - 2 * (q @ xb.T)
        best_d = np.hstack([best_d, dist])
        best_i = np.hstack([best_i, np.broadcast_to(np.arange(rows.start, rows.stop), dist.shape)])
        top = np.argsort(best_d, axis=1, kind="stable")[:, :kk]
        best_d, best_i = np.take_along_axis(best_d, top, 1), np.take_along_axis(best_i, top, 1)
    return best_i


def preparer(emb: np.ndarray, metric: str) -> Prepare:
    """(index array) -> float32 copies of those rows, L2-normalised for cosine (a zero row stays 0); emb is never written."""

    def prepare(rows: np.ndarray) -> np.ndarray:
        part = np.take(emb, rows, axis=0).astype(np.float32, copy=False)  # take: always a new C-contiguous array
        if metric == "cosine":
            norms = np.linalg.norm(part, axis=1, keepdims=True)
            np.divide(part, norms, out=part, where=norms > 0)
        return part

    return prepare


def _sample(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Sorted seeded sample of min(n, size) row indices."""
    return np.sort(rng.choice(n, size, replace=False)) if size < n else np.arange(n)


def row_slices(n: int) -> Iterator[slice]:
    """Consecutive slices of at most _CHUNK_ROWS rows covering range(n)."""
    for start in range(0, n, _CHUNK_ROWS):
        yield slice(start, min(n, start + _CHUNK_ROWS))
