"""Active-learning strategies: uncertainty scores, BALD over real MC-dropout passes, diversity, cost, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kibble import KibbleError
from kibble.models.head import FeatureClassifier
from kibble.models.mc_dropout import mc_dropout_probs, stack_passes
from kibble.strategies import active
from kibble.strategies.active_registry import ACTIVE_STRATEGIES, get_active_strategy, run_active
from kibble.strategies.transfer import HeldOut

PROBS = np.array([
    [0.98, 0.01, 0.01],   # confident
    [0.50, 0.49, 0.01],   # torn between two classes
    [0.34, 0.33, 0.33],   # spread over all three
    [0.70, 0.20, 0.10],
])


def entropy_rows(p: np.ndarray) -> np.ndarray:
    return -(np.where(p > 0, p * np.log(np.clip(p, 1e-12, None)), 0.0)).sum(-1)


def test_uncertainty_scores_match_their_definitions():
    lc = active.least_confidence(PROBS)
    np.testing.assert_allclose(lc.score, (1 - PROBS.max(1)) * 3 / 2)
    mg = active.margin(PROBS)
    top = np.sort(PROBS, 1)
    np.testing.assert_allclose(mg.score, 1 - (top[:, -1] - top[:, -2]))
    np.testing.assert_allclose(active.ratio(PROBS).score, top[:, -2] / top[:, -1])
    np.testing.assert_allclose(active.entropy(PROBS).score, entropy_rows(PROBS) / np.log(3))
    for out in (lc, mg, active.entropy(PROBS)):
        assert out.flagged.all() and (out.suggested == PROBS.argmax(1)).all()
        assert np.argmin(out.score) == 0  # the confident row is the last to label
    # margin prefers the two-way tie; entropy the three-way spread
    assert np.argmax(mg.score) == 1 and np.argmax(active.entropy(PROBS).score) == 2


def test_bald_is_mutual_information_of_the_passes():
    agree = np.tile([[0.5, 0.5]], (4, 1))                       # every pass unsure in the same way
    disagree = np.array([[0.99, 0.01], [0.01, 0.99]] * 2)         # passes confident but contradicting
    mc = np.stack([agree, disagree], axis=1)                      # (T=4, N=2, K=2)
    out = active.bald(mc)
    assert out.score[0] == pytest.approx(0.0, abs=1e-9)           # aleatoric only: no information about the weights
    expected = entropy_rows(mc.mean(0)) - entropy_rows(mc).mean(0)
    np.testing.assert_allclose(out.score, expected)
    assert out.score[1] > 0.6
    with pytest.raises(KibbleError, match="T >= 2"):
        active.bald(mc[:1])
    with pytest.raises(KibbleError, match=r"\(T, N, K\)"):
        active.bald(agree)


def test_bald_from_real_mc_dropout_passes():
    torch.manual_seed(0)
    head = FeatureClassifier(in_features=16, num_classes=4, hidden=32, dropout=0.5)
    x = np.random.default_rng(0).normal(size=(30, 16)).astype(np.float32)
    head.eval()
    state = torch.get_rng_state()
    mc = mc_dropout_probs(head, x, passes=8, seed=3)
    assert mc.shape == (8, 30, 4)
    assert torch.equal(state, torch.get_rng_state())              # global RNG untouched
    assert not head.training and not any(m.training for m in head.modules())  # eval mode restored
    assert not np.allclose(mc[0], mc[1])                          # the passes really are stochastic
    np.testing.assert_allclose(mc.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(mc, mc_dropout_probs(head, x, passes=8, seed=3))  # reproducible
    out = run_active("bald", None, mc_probs=mc)
    np.testing.assert_allclose(out.score, entropy_rows(mc.mean(0).astype(np.float64)) - entropy_rows(mc.astype(np.float64)).mean(0), atol=1e-6)
    assert (out.score > 0).all()
    assert stack_passes([mc, mc]).shape == (16, 30, 4)            # fold models' passes stack along T
    with pytest.raises(KibbleError, match="dropout > 0"):
        mc_dropout_probs(FeatureClassifier(in_features=16, num_classes=4, dropout=0.0), x, passes=4)
    with pytest.raises(KibbleError, match="at least 2"):
        mc_dropout_probs(head, x, passes=1)


def blobs(seed: int = 0):
    """Three tight, far-apart clusters of 20; the model is most unsure about cluster 0."""
    rng = np.random.default_rng(seed)
    centres = np.eye(3) * 10
    emb = np.concatenate([c + rng.normal(scale=0.1, size=(20, 3)) for c in centres])
    unsure = np.concatenate([rng.uniform(0.40, 0.50, 20), rng.uniform(0.05, 0.2, 40)])
    probs = np.stack([1 - unsure, unsure], axis=1)
    return probs, emb, np.repeat([0, 1, 2], 20)


def test_kmeans_spreads_the_batch_over_clusters_where_uncertainty_does_not():
    probs, emb, cluster = blobs()
    top3 = np.argsort(-active.margin(probs).score)[:3]
    assert set(cluster[top3]) == {0}                              # plain uncertainty: three near-copies
    out = active.kmeans_diverse(probs, emb, batch_size=3, uncertainty="margin", seed=0)
    picks = np.argsort(-out.score)[:3]
    assert set(cluster[picks]) == {0, 1, 2} and (out.score[picks] > 1).all() and (np.delete(out.score, picks) < 1).all()
    for c in range(3):  # the most uncertain member of each cluster
        members = np.flatnonzero(cluster == c)
        assert members[np.argmax(active.margin(probs).score[members])] in picks


def test_hybrid_picks_a_diverse_batch_from_the_uncertain_shortlist():
    probs, emb, cluster = blobs()
    out = active.hybrid(probs, emb, batch_size=4, top_factor=5, uncertainty="margin")
    picks = np.argsort(-out.score)[:4]
    shortlist = np.argsort(-active.margin(probs).score)[:20]
    assert set(picks) <= set(shortlist) and len(set(picks)) == 4


def test_representative_downweights_outliers_and_outlier_finds_them():
    probs, emb, _ = blobs()
    emb = np.concatenate([emb, [[-7.0, 3.0, -5.0]]])
    probs = np.concatenate([probs, [[0.5, 0.5]]])                 # the outlier is the most uncertain row
    rep = active.representative(probs, emb, k=5)
    out = active.representative(probs, emb, k=5, outlier=True)
    assert np.argmax(out.score) == len(probs) - 1
    assert rep.score[-1] < np.sort(rep.score)[-5]


def test_expected_cost_prefers_confusions_across_groups():
    # classes 0,1 in one group, 2 in another: severity 0.5 within a group, 1 across
    cost = np.array([[0, 0.5, 1], [0.5, 0, 1], [1, 1, 0]])
    probs = np.array([[0.5, 0.5, 0.0], [0.5, 0.0, 0.5]])
    assert active.entropy(probs).score[0] == pytest.approx(active.entropy(probs).score[1])
    out = active.expected_cost(probs, cost)
    np.testing.assert_allclose(out.score, [0.25, 0.5])
    with pytest.raises(KibbleError, match="K x K"):
        active.expected_cost(probs, np.zeros((2, 2)))


def test_random_is_seeded_and_registry_covers_every_strategy():
    np.testing.assert_array_equal(active.random(PROBS, seed=1).score, active.random(PROBS, seed=1).score)
    assert not np.array_equal(active.random(PROBS, seed=1).score, active.random(PROBS, seed=2).score)
    probs, emb, _ = blobs()
    mc = np.stack([probs, probs[::-1]])
    cost = np.array([[0, 1.0], [1.0, 0]])
    held_out = HeldOut(emb[::2], probs[::2].argmax(1), probs[::2])
    for name in ACTIVE_STRATEGIES:
        out = run_active(name, probs, embeddings=emb, mc_probs=mc, severity=cost, batch_size=5, seed=0,
                         labelled_embeddings=emb[:4], held_out=held_out)
        assert len(out.score) == len(probs) and np.isfinite(out.score).all(), name


def test_bad_input_gives_one_line_errors():
    with pytest.raises(KibbleError, match="unknown active-learning strategy 'entropyy'; valid names: .*margin") as err:
        get_active_strategy("entropyy")
    assert "\n" not in str(err.value)
    probs, emb, _ = blobs()
    with pytest.raises(KibbleError, match="larger than the pool") as err:
        active.kmeans_diverse(probs, emb, batch_size=61)
    assert "\n" not in str(err.value)
    with pytest.raises(KibbleError, match="needs pool embeddings"):
        run_active("kmeans", probs, batch_size=3)
    with pytest.raises(KibbleError, match="sum to 1"):
        active.entropy(np.array([[0.5, 0.6]]))
    with pytest.raises(KibbleError, match="NaN"):
        active.margin(np.array([[np.nan, 1.0]]))
    with pytest.raises(KibbleError, match="uncertainty="):
        active.kmeans_diverse(probs, emb, batch_size=3, uncertainty="bogus")


def test_a_switch_hands_over_at_its_labels_per_class():
    from kibble.strategies.active_registry import Switch, model_free, needs, parse_switch, strategy_at

    assert parse_switch("margin") is None
    assert parse_switch("typiclust:margin@5") == Switch("typiclust", "margin", 5.0)
    assert [strategy_at("typiclust:margin@5", n, 10) for n in (0, 10, 49, 50, 200)] == ["typiclust"] * 3 + ["margin"] * 2
    assert strategy_at("margin", 0, 10) == "margin"
    assert model_free("typiclust:margin@5") and not model_free("margin:typiclust@5")
    assert needs("typiclust:bald@2") == needs("typiclust") | needs("bald")
    for bad in ("typiclust:margin", "typiclust:margin@0", "typiclust:margin@x", "typiclust:nope@5", "a:b:c@1"):
        with pytest.raises(KibbleError, match="switch|active-learning"):
            parse_switch(bad)


def test_score_pool_runs_the_switch_member_the_labels_call_for_under_the_configured_name():
    from kibble.queue.new_labels import score_pool

    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=40)
    early = score_pool(["random:margin@2"], probs, seed=1, n_labels=5)  # 5 labels < 2 x 3 classes: random
    late = score_pool(["random:margin@2"], probs, seed=1, n_labels=6)
    assert list(early) == list(late) == ["random:margin@2"]
    np.testing.assert_allclose(early["random:margin@2"].score, run_active("random", probs, seed=1).score)
    np.testing.assert_allclose(late["random:margin@2"].score, run_active("margin", probs).score)
    with pytest.raises(KibbleError, match="switches by the number of labels; none was given"):
        score_pool(["random:margin@2"], probs, seed=1)
