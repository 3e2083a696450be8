"""Strategy registry: names, dispatch between probs and embeddings, helpful errors."""

from __future__ import annotations

import numpy as np
import pytest

from kibble import KibbleError
from kibble.strategies import cleaning
from kibble.strategies.registry import CLEANING_STRATEGIES, get_strategy, needs_embeddings, run_strategy

NAMES = ["kfold", "entropy", "self_confidence", "normalized_margin", "confident_learning", "precision", "neighbors", "random"]


def _data(n=60, k=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % k
    probs = rng.dirichlet(np.ones(k), size=n)
    probs[np.arange(n), labels] += 2
    probs /= probs.sum(1, keepdims=True)
    emb = 10 * np.eye(k)[labels] + rng.standard_normal((n, k)) + 1
    return labels, probs, emb


def test_registry_holds_all_strategies():
    assert set(CLEANING_STRATEGIES) == set(NAMES)
    assert get_strategy("precision") is cleaning.precision_renormalize
    assert get_strategy("neighbors") is cleaning.neighbors


def test_unknown_name_lists_valid_names():
    with pytest.raises(KibbleError) as exc:
        get_strategy("kfol")
    for name in NAMES:
        assert name in str(exc.value)
    with pytest.raises(KibbleError, match="kfold"):
        needs_embeddings("nope")
    with pytest.raises(KibbleError, match="kfold"):
        run_strategy("nope", *_data()[:2])


def test_needs_embeddings():
    assert needs_embeddings("neighbors")
    assert not any(needs_embeddings(n) for n in NAMES if n != "neighbors")


@pytest.mark.parametrize("name", [n for n in NAMES if n != "neighbors"])
def test_run_strategy_matches_direct_call(name):
    labels, probs, _ = _data()
    out = run_strategy(name, labels, probs)
    direct = CLEANING_STRATEGIES[name](labels, probs)
    np.testing.assert_array_equal(out.score, direct.score)
    np.testing.assert_array_equal(out.flagged, direct.flagged)
    np.testing.assert_array_equal(out.suggested, direct.suggested)
    with pytest.raises(KibbleError, match="probabilities"):
        run_strategy(name, labels, None)


def test_run_strategy_neighbors_uses_embeddings():
    labels, _, emb = _data()
    labels = labels.copy()
    labels[0] = 1
    out = run_strategy("neighbors", labels, None, embeddings=emb, k=5)
    assert out.flagged[0] and out.suggested[0] == 0
    with pytest.raises(KibbleError, match="embeddings"):
        run_strategy("neighbors", labels, np.full((60, 3), 1 / 3))


def test_run_strategy_passes_kwargs():
    labels, probs, _ = _data()
    out = run_strategy("precision", labels, probs, classes=[2])
    np.testing.assert_array_equal(out.flagged, labels == 2)
