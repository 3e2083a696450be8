"""Cold-start strategies (TypiClust, ProbCover) on blob mixtures: they cover every blob where random does not; bad input."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

from kibble import KibbleError
from kibble.strategies import active, cold_start
from kibble.strategies.active import unit_rows
from kibble.strategies.active_registry import MODEL_FREE, model_free, run_active

SIZES = [200, 100, 60, 40, 30, 20]  # unequal blobs: random spends a small budget on the big ones


def mixture(seed: int = 0, sizes=SIZES, dim: int = 16):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), dim)) * 4
    x = np.concatenate([c + rng.normal(size=(n, dim)) for c, n in zip(centres, sizes)])
    return x, np.repeat(np.arange(len(sizes)), sizes), centres


def picks_of(out, b: int) -> np.ndarray:
    return np.argsort(-out.score, kind="stable")[:b]


@pytest.mark.parametrize("name", ["typiclust", "probcover"])
def test_a_budget_of_one_per_blob_covers_every_blob_where_random_does_not(name: str):
    b = len(SIZES)
    covered, random_covered = [], []
    for seed in range(6):
        x, blob, _ = mixture(seed)
        out = run_active(name, None, embeddings=x, batch_size=b, seed=seed, n_classes=b)
        picks = picks_of(out, b)
        assert len(set(picks)) == b and (out.score[picks] > 1).all() and (np.delete(out.score, picks) < 1).all()
        assert (out.suggested == -1).all()  # no model: no suggested label
        covered.append(len(set(blob[picks])))
        random_covered.append(len(set(blob[picks_of(run_active("random", None, embeddings=x, seed=seed), b)])))
    assert covered == [b] * 6, covered
    assert sum(c == b for c in random_covered) <= 2, random_covered


def test_typiclust_picks_the_typical_point_of_its_cluster():
    x, blob, centres = mixture(1)
    picks = picks_of(cold_start.typiclust(x, len(SIZES), seed=1), len(SIZES))
    for p in picks:  # among the quarter of its blob nearest the blob's centre
        to_centre = np.linalg.norm(x[blob == blob[p]] - centres[blob[p]], axis=1)
        assert np.linalg.norm(x[p] - centres[blob[p]]) < np.quantile(to_centre, 0.25), "not a typical member"
    # the largest clusters first: the biggest blob's pick ranks first
    assert blob[picks[0]] == 0
    # a budget of the whole pool: once the clusters of 2 are used up, the skipped clusters of 1 too
    pairs = np.concatenate([np.repeat(x[:5], 2, axis=0), x[-3:]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # k-means: fewer distinct points than clusters
        assert sorted(picks_of(cold_start.typiclust(pairs, 13, min_cluster_size=1), 13)) == list(range(13))


@pytest.mark.parametrize("name", ["typiclust", "probcover"])
def test_labelled_blobs_are_skipped(name: str):
    x, blob, _ = mixture(2, sizes=[40] * 6)
    labelled = np.array([np.flatnonzero(blob == c)[0] for c in range(4)])  # blobs 0-3 have a label: |L| + B = 6 clusters
    pool = np.setdiff1d(np.arange(len(x)), labelled)
    out = run_active(name, None, embeddings=x[pool], batch_size=2, labelled_embeddings=x[labelled], n_classes=6, seed=0)
    assert set(blob[pool][picks_of(out, 2)]) == {4, 5}


def test_probcover_covers_greedily_then_draws_at_random(caplog: pytest.LogCaptureFixture):
    x, blob, _ = mixture(3)
    with caplog.at_level(logging.INFO, logger="kibble.strategies.cold_start"):
        out = cold_start.probcover(x, 3, delta=2.0, seed=0)  # one ball holds every unit vector
    assert "cover 100.0% of the pool" in caplog.text
    first = picks_of(out, 1)
    assert out.score[first] == out.score.max()
    again = cold_start.probcover(x, 3, delta=2.0, seed=0)
    np.testing.assert_array_equal(out.score, again.score)  # the random fill is seeded


def test_the_purity_delta_keeps_most_balls_inside_one_blob():
    x, blob, _ = mixture(4)
    u = unit_rows(x)
    delta = cold_start.purity_delta(u, len(SIZES), 0.95, seed=0)
    dist = np.linalg.norm(u[:, None] - u[None], axis=2)
    pure = [(blob[dist[i] <= delta] == blob[i]).all() for i in range(len(u))]
    assert np.mean(pure) >= 0.9 and delta > np.median(np.sort(dist, axis=1)[:, 1])  # balls are pure, yet hold neighbours


def test_model_free_strategies_run_without_probabilities_and_the_others_say_so():
    x, _, _ = mixture(5)
    assert model_free("typiclust") and model_free("kmeans") and not model_free("margin")
    for name in sorted(MODEL_FREE):
        out = run_active(name, None, embeddings=x, batch_size=4, n_classes=6, seed=0)
        assert len(out.score) == len(x) and (out.suggested == -1).all(), name
    with pytest.raises(KibbleError, match=r"'margin' needs the model's pool probabilities \(N, K\); none were given \(with no model yet use one of"):
        run_active("margin", None, embeddings=x)
    probs = np.full((len(x), 3), 1 / 3)
    probs[:, 0] += 0.1
    probs[:, 1] -= 0.1
    out = run_active("typiclust", probs, embeddings=x, batch_size=4)
    assert (out.suggested == 0).all()  # with a model: its guess as the suggested label


def test_bad_input_gives_one_line_errors():
    x, _, _ = mixture(0, sizes=[10, 10])
    cases = [
        (lambda: cold_start.typiclust(x, 21), "batch_size=21 is larger than the pool"),
        (lambda: cold_start.typiclust(x, 2, labelled_embeddings=np.zeros((3, 5))), r"labelled_embeddings must be \(M, D\) with D=16"),
        (lambda: cold_start.typiclust(np.where(np.eye(20, 16) > 0, np.nan, x), 2), "NaN"),
        (lambda: cold_start.typiclust(x, 2, k_neighbors=0), "k_neighbors=0"),
        (lambda: cold_start.typiclust(x[0], 2), r"embeddings must be \(N, D\)"),
        (lambda: cold_start.probcover(x, 2), "give delta, or n_clusters >= 2"),
        (lambda: cold_start.probcover(x, 2, delta=3.0), r"delta=3.0; use a radius in \(0, 2\]"),
        (lambda: cold_start.probcover(x, 2, n_clusters=2, purity=1.0), "purity=1.0"),
        (lambda: cold_start.probcover(x, 2, probs=np.full((19, 2), 0.5), n_clusters=2), "N=19 pool rows"),
        (lambda: run_active("typiclust", None, batch_size=2), "needs pool embeddings"),
        (lambda: run_active("random", None), "without a model needs the pool embeddings"),
    ]
    for call, message in cases:
        with pytest.raises(KibbleError, match=message) as err:
            call()
        assert "\n" not in str(err.value)
    assert active.check_batch(0, 3) == 0 and not (cold_start.typiclust(x, 0).score > 1).any()
