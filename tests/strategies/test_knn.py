"""neighbors' k-NN search: the approximate (faiss) path agrees with the exact one, the switch, self and duplicates."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from kibble import KibbleError
from kibble.strategies import knn
from kibble.strategies.cleaning import neighbors

pytest.importorskip("faiss")


def clustered(n_per: int = 100, classes: int = 20, dim: int = 48, noise: float = 0.1, seed: int = 0):
    """Gaussian clusters, labels = cluster with `noise` of them replaced by a random class."""
    rng = np.random.default_rng(seed)
    centres = 3 * rng.standard_normal((classes, dim))
    truth = np.repeat(np.arange(classes), n_per)
    emb = (centres[truth] + rng.standard_normal((len(truth), dim))).astype(np.float32)
    labels = truth.copy()
    flip = rng.random(len(labels)) < noise
    labels[flip] = rng.integers(0, classes, flip.sum())
    return labels, emb


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth)]))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_ann_finds_the_exact_neighbours_and_flags_the_same_rows(metric, monkeypatch):
    monkeypatch.setattr(knn, "SCAN_ROWS", 200)  # 8 of 51 lists, not all of them as 2,000 rows would get by default
    labels, emb = clustered()
    assert knn.probe_count(len(emb), knn.list_count(len(emb))) == 8 and knn.list_count(len(emb)) == 51
    given = emb.copy()
    exact = neighbors(labels, emb, k=10, metric=metric, method="exact")
    ann = neighbors(labels, emb, k=10, metric=metric, method="ann")
    found = knn.neighbor_indices(emb, 10, metric, method="ann")
    assert recall(found, knn.neighbor_indices(emb, 10, metric, method="exact")) > 0.95
    assert np.mean(ann.flagged != exact.flagged) <= 0.01
    assert np.abs(ann.score - exact.score).mean() < 0.01
    assert not (found == np.arange(len(emb))[:, None]).any()
    assert np.array_equal(emb, given)  # normalised copies, never the caller's array


def test_ann_on_wide_embeddings_goes_through_pca_and_still_agrees(monkeypatch):
    monkeypatch.setattr(knn, "PCA_DIMS", 16)
    monkeypatch.setattr(knn, "SCAN_ROWS", 100)
    labels, latent = clustered(n_per=60, classes=10, dim=12)  # clusters in 12 of 64 dimensions, as embeddings are
    rng = np.random.default_rng(5)
    emb = (latent @ rng.standard_normal((12, 64)) + 0.05 * rng.standard_normal((len(latent), 64))).astype(np.float32)
    found = knn.neighbor_indices(emb, 10, "cosine", method="ann")
    assert recall(found, knn.neighbor_indices(emb, 10, "cosine", method="exact")) > 0.9
    assert np.mean(neighbors(labels, emb, method="ann").flagged != neighbors(labels, emb, method="exact").flagged) <= 0.02


def test_ann_is_seeded(monkeypatch):
    monkeypatch.setattr(knn, "SCAN_ROWS", 100)
    labels, emb = clustered(n_per=50)
    a, b = (neighbors(labels, emb, method="ann", seed=3) for _ in range(2))
    assert np.array_equal(a.score, b.score) and np.array_equal(a.suggested, b.suggested)


def test_auto_searches_exactly_below_exact_below_and_approximately_from_it(monkeypatch):
    labels, emb = clustered(n_per=30)
    calls = []
    for name in ("exact_search", "ann_search"):
        real = getattr(knn, name)
        monkeypatch.setattr(knn, name, lambda *a, _real=real, _name=name, **kw: calls.append(_name) or _real(*a, **kw))
    n = len(labels)
    neighbors(labels, emb, exact_below=n + 1)
    neighbors(labels, emb, exact_below=n)
    neighbors(labels, emb, exact_below=0, metric="manhattan")  # faiss has no manhattan: auto stays exact
    assert calls == ["exact_search", "ann_search", "exact_search"]
    assert knn.resolve_method(knn.EXACT_BELOW - 1, "cosine") == "exact" and knn.resolve_method(knn.EXACT_BELOW, "cosine") == "ann"


def test_ann_excludes_itself_among_exact_duplicates():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((400, 8)).astype(np.float32)
    emb = np.repeat(base, 5, axis=0)  # every vector five times
    group = np.repeat(np.arange(400), 5)
    labels = np.where(np.arange(len(emb)) % 5 == 0, 1, 0)  # one copy of each vector labelled 1
    for method in ("exact", "ann"):
        found = knn.neighbor_indices(emb, 3, "euclidean", method=method)
        assert not (found == np.arange(len(emb))[:, None]).any()
        assert (group[found] == group[:, None]).all()  # the three nearest are copies
        out = neighbors(labels, emb, k=4, metric="euclidean", method=method)
        assert np.allclose(out.score, np.where(labels == 1, 1.0, 0.25))  # the four other copies
        assert out.suggested[labels == 1].tolist() == [0] * 400


def test_rows_whose_lists_run_short_are_searched_exactly():
    _, emb = clustered(n_per=20, classes=5, dim=6)
    exact = knn.exact_search(emb, 6, "cosine")
    found = exact.copy()
    found[[3, 40], 2:] = -1
    filled = knn.fill_missing(found, knn.preparer(emb, "cosine"), "cosine")
    assert np.array_equal(np.sort(filled[[3, 40]], axis=1), np.sort(exact[[3, 40]], axis=1))


def test_missing_faiss_is_one_line_naming_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    labels, emb = clustered(n_per=20, classes=5)
    with pytest.raises(KibbleError, match=r"pip install faiss-cpu") as err:
        neighbors(labels, emb, method="ann")
    assert "\n" not in str(err.value)
    assert neighbors(labels, emb, method="auto").score.shape == (100,)  # below exact_below: no faiss needed


def test_bad_method_metric_or_threshold_is_refused():
    labels, emb = clustered(n_per=20, classes=5)
    with pytest.raises(KibbleError, match="method must be one of"):
        neighbors(labels, emb, method="hnsw")
    with pytest.raises(KibbleError, match="supports metric cosine or euclidean"):
        neighbors(labels, emb, method="ann", metric="manhattan")
    with pytest.raises(KibbleError, match="exact_below"):
        neighbors(labels, emb, exact_below=-1)


def test_ann_on_fewer_rows_than_pca_dimensions_and_on_all_zero_rows():
    rng = np.random.default_rng(2)
    wide = rng.standard_normal((60, knn.PCA_DIMS + 100)).astype(np.float32)  # PCA to at most 60 components
    assert knn.neighbor_indices(wide, 5, "cosine", method="ann").shape == (60, 5)
    zeros = np.zeros((50, 4))  # cosine of a zero row: every other row equally far, as in scikit-learn
    out = neighbors(np.r_[np.zeros(49, int), 1], zeros, k=3, method="ann")
    assert out.score[-1] == 1.0 and out.suggested[-1] == 0


def test_each_row_scans_about_scan_rows_whatever_n():
    for n in (2_000, 20_000, 100_000, 1_000_000):
        nlist = knn.list_count(n)
        scanned = knn.probe_count(n, nlist) * n / nlist
        assert scanned >= min(n, knn.SCAN_ROWS) and (knn.probe_count(n, nlist) == knn.MIN_NPROBE or scanned < 1.1 * knn.SCAN_ROWS or scanned == n)
    assert knn.list_count(1_000_000) == 2000 and knn.probe_count(1_000_000, 2000) == knn.MIN_NPROBE
