"""Cleaning strategies against planted label flips (synthetic OOF probs and embeddings)."""

from __future__ import annotations

import numpy as np
import pytest
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores

from kibble import KibbleError
from kibble.metrics.detection import detection_metrics
from kibble.strategies.base import StrategyOutput
from kibble.strategies.cleaning import (
    combine,
    confident_learning,
    entropy,
    kfold,
    low_precision_classes,
    neighbors,
    normalized_margin,
    precision_renormalize,
    self_confidence,
)

PROB_STRATEGIES = [kfold, entropy, self_confidence, normalized_margin, confident_learning, precision_renormalize]


def planted(n=200, k=5, flip_frac=0.1, conc=20.0, seed=0):
    """OOF probs peaked on the true class; a share of given labels flipped to another class."""
    rng = np.random.default_rng(seed)
    truth = np.arange(n) % k
    alpha = np.ones((n, k))
    alpha[np.arange(n), truth] += conc
    probs = np.stack([rng.dirichlet(a) for a in alpha])
    labels = truth.copy()
    flipped = rng.choice(n, size=int(flip_frac * n), replace=False)
    labels[flipped] = (truth[flipped] + rng.integers(1, k, size=flipped.size)) % k
    is_noisy = labels != truth
    return labels, probs, truth, is_noisy


def test_kfold_flags_and_ranks_confident_disagreements_first():
    labels, probs, truth, noisy = planted()
    out = kfold(labels, probs)
    assert isinstance(out, StrategyOutput)
    np.testing.assert_array_equal(out.flagged, probs.argmax(1) != labels)
    np.testing.assert_array_equal(out.suggested, probs.argmax(1))
    np.testing.assert_allclose(out.score, probs.max(1))
    # every flip the model gets right is flagged, with the true class suggested
    caught = noisy & (probs.argmax(1) == truth)
    assert caught.sum() >= 0.9 * noisy.sum()
    assert out.flagged[caught].all()
    assert (out.suggested[caught] == truth[caught]).all()
    m = detection_metrics(noisy, out.score, flagged=out.flagged)
    assert m["precision_at_budget"] >= 0.9
    # unflagged rows still carry a score
    assert (out.score[~out.flagged] > 0).all()


def test_kfold_orders_by_predicted_class_probability():
    labels = np.array([0, 0, 0])
    probs = np.array([[0.1, 0.9], [0.4, 0.6], [0.8, 0.2]])
    out = kfold(labels, probs)
    assert out.flagged.tolist() == [True, True, False]
    assert out.score[0] > out.score[1]


@pytest.mark.parametrize("fn", [self_confidence, normalized_margin])
def test_label_quality_rankers_find_flips(fn):
    labels, probs, truth, noisy = planted()
    out = fn(labels, probs)
    assert out.flagged.all()
    m = detection_metrics(noisy, out.score)
    assert m["auroc"] > 0.9
    assert m["precision_at_budget"] >= 0.8
    # suggestion is always a correction, and for flips it is the true class
    assert (out.suggested != labels).all()
    assert (out.suggested[noisy] == truth[noisy]).mean() >= 0.9


def test_self_confidence_and_margin_match_cleanlab():
    labels, probs, _, _ = planted(seed=3)
    sc = get_label_quality_scores(labels, probs, method="self_confidence")
    nm = get_label_quality_scores(labels, probs, method="normalized_margin")
    np.testing.assert_allclose(self_confidence(labels, probs).score, 1 - sc, atol=1e-12)
    np.testing.assert_allclose(normalized_margin(labels, probs).score, 1 - nm, atol=1e-12)


def test_suggested_is_best_other_class_when_argmax_is_label():
    labels = np.array([0, 1])
    probs = np.array([[0.7, 0.1, 0.2], [0.3, 0.2, 0.5]])
    assert self_confidence(labels, probs).suggested.tolist() == [2, 2]
    out = normalized_margin(labels, probs)
    assert out.suggested.tolist() == [2, 2]
    np.testing.assert_allclose(out.score, [1 - (0.7 - 0.2 + 1) / 2, 1 - (0.2 - 0.5 + 1) / 2])


def test_entropy_is_normalised_and_ranks_uncertain_first():
    labels = np.array([0, 0, 1])
    probs = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.1, 0.8, 0.1]])
    out = entropy(labels, probs)
    np.testing.assert_allclose(out.score[:2], [0.0, 1.0], atol=1e-12)
    expected = -(0.1 * np.log(0.1) * 2 + 0.8 * np.log(0.8)) / np.log(3)
    assert out.score[2] == pytest.approx(expected)
    assert out.flagged.all()
    assert out.suggested.tolist() == [0, 0, 1]


def test_confident_learning_matches_cleanlab_mask():
    labels, probs, _, noisy = planted(seed=1)
    out = confident_learning(labels, probs)
    np.testing.assert_array_equal(out.flagged, find_label_issues(labels, probs))
    assert out.flagged[noisy].mean() >= 0.8 and (~noisy[out.flagged]).mean() <= 0.2
    np.testing.assert_allclose(out.score, 1 - get_label_quality_scores(labels, probs))
    np.testing.assert_array_equal(out.suggested, probs.argmax(1))
    both = confident_learning(labels, probs, filter_by="both")
    np.testing.assert_array_equal(both.flagged, find_label_issues(labels, probs, filter_by="both"))
    with pytest.raises(KibbleError, match="mask"):
        confident_learning(labels, probs, return_indices_ranked_by="self_confidence")


def polluted_class_a(seed=0):
    """Class A=0 holds 20 B=1 images; the model learnt a polluted A and over-predicts it on B."""
    rng = np.random.default_rng(seed)
    groups = [  # (n, given label, true label, dirichlet alpha)
        (40, 0, 0, [16, 4, 4]),     # clean A
        (20, 0, 1, [12, 10, 0.5]),  # B images labelled A
        (30, 1, 1, [14, 5, 1]),     # B labelled B, predicted A (A's precision drops)
        (40, 1, 1, [2, 16, 2]),     # clean B
        (40, 2, 2, [2, 2, 16]),     # clean C
    ]
    labels, truth, probs = [], [], []
    for n, given, true, alpha in groups:
        labels += [given] * n
        truth += [true] * n
        probs.append(rng.dirichlet(alpha, size=n))
    return np.array(labels), np.vstack(probs), np.array(truth)


def test_precision_renormalize_surfaces_b_images_labelled_a():
    labels, probs, truth = polluted_class_a()
    low, precision = low_precision_classes(labels, probs, threshold=0.8)
    assert low.tolist() == [0]
    assert precision[0] < 0.8 and precision[1] >= 0.8 and precision[2] >= 0.8
    out = precision_renormalize(labels, probs, threshold=0.8)
    np.testing.assert_array_equal(out.flagged, labels == 0)
    assert (out.score[labels != 0] == 0).all() and (out.suggested[labels != 0] == -1).all()
    noisy = labels != truth
    top = np.argsort(-out.score, kind="stable")[: noisy.sum()]
    assert noisy[top].mean() >= 0.85
    assert (out.suggested[noisy] == 1).mean() >= 0.9
    m = detection_metrics(noisy[labels == 0], out.score[labels == 0])
    assert m["auroc"] > 0.9


def test_precision_renormalize_explicit_classes_and_edge_rows():
    labels = np.array([0, 0, 1])
    probs = np.array([[0.5, 0.3, 0.2], [1.0, 0.0, 0.0], [0.2, 0.7, 0.1]])
    out = precision_renormalize(labels, probs, classes=[0])
    np.testing.assert_allclose(out.score, [0.6, 0.0, 0.0])
    assert out.suggested.tolist() == [1, -1, -1]
    assert out.flagged.tolist() == [True, True, False]
    with pytest.raises(KibbleError, match="classes"):
        precision_renormalize(labels, probs, classes=[3])
    with pytest.raises(KibbleError, match="threshold"):
        low_precision_classes(labels, probs, threshold=1.5)


def blobs(seed=0, per=30, dim=5, k=3):
    rng = np.random.default_rng(seed)
    centres = 10 * np.eye(dim)[:k] + 1.0
    emb = np.vstack([c + 0.5 * rng.standard_normal((per, dim)) for c in centres])
    truth = np.repeat(np.arange(k), per)
    return emb, truth


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_neighbors_flags_planted_flip_in_blobs(metric):
    emb, truth = blobs()
    labels = truth.copy()
    labels[5] = 2  # a class-0 point labelled 2
    out = neighbors(labels, emb, k=10, metric=metric)
    assert out.flagged.tolist() == [i == 5 for i in range(len(labels))]
    assert out.score[5] == 1.0 and out.suggested[5] == 0
    assert out.score.argmax() == 5
    assert (out.score[labels == truth] <= 0.1).all()


def test_neighbors_excludes_itself_even_among_duplicates():
    emb = np.array([[0.0], [0.0], [10.0], [11.0]])
    labels = np.array([0, 1, 1, 1])
    out = neighbors(labels, emb, k=1, metric="euclidean")
    assert out.score.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert out.suggested.tolist() == [1, 0, -1, -1]


def test_neighbors_validation():
    emb, labels = blobs()
    with pytest.raises(KibbleError, match="k must"):
        neighbors(labels, emb, k=len(labels))
    with pytest.raises(KibbleError, match="NaN"):
        bad = emb.copy()
        bad[0, 0] = np.nan
        neighbors(labels, bad)
    with pytest.raises(KibbleError, match="2-D"):
        neighbors(labels, emb[:, 0])
    with pytest.raises(KibbleError, match="one entry"):
        neighbors(labels[:-1], emb)
    with pytest.raises(KibbleError, match="integer"):
        neighbors(labels.astype(float), emb)


def test_combine_rank_averages_and_merges():
    a = StrategyOutput(np.array([0.9, 0.1, 0.5]), np.array([-1, 2, 1]), np.array([True, False, False]))
    b = StrategyOutput(np.array([10.0, 30.0, 20.0]), np.array([0, 0, 0]), np.array([False, False, True]))
    out = combine([a, b])
    np.testing.assert_allclose(out.score, [(3 / 3 + 1 / 3) / 2, (1 / 3 + 3 / 3) / 2, (2 / 3 + 2 / 3) / 2])
    assert out.suggested.tolist() == [0, 2, 1]
    assert out.flagged.tolist() == [True, False, True]
    only_b = combine([a, b], weights=[0, 1])
    np.testing.assert_allclose(only_b.score, [1 / 3, 1, 2 / 3])
    with pytest.raises(KibbleError, match="weights"):
        combine([a, b], weights=[1])
    with pytest.raises(KibbleError, match="same N"):
        combine([a, StrategyOutput(np.zeros(2), np.zeros(2), np.zeros(2, bool))])
    with pytest.raises(KibbleError, match="at least one"):
        combine([])


def test_combine_of_probs_and_neighbors_still_finds_flips():
    labels, probs, truth, noisy = planted(n=150, k=3, seed=4)
    rng = np.random.default_rng(4)
    emb = 10 * np.eye(3)[truth] + 0.5 * rng.standard_normal((150, 3)) + 1
    out = combine([self_confidence(labels, probs), neighbors(labels, emb, k=10)])
    assert detection_metrics(noisy, out.score)["auroc"] > 0.95


@pytest.mark.parametrize("fn", PROB_STRATEGIES)
def test_validation_rejects_bad_inputs(fn):
    labels, probs, _, _ = planted(n=20, k=3)
    nan = probs.copy()
    nan[0, 0] = np.nan
    with pytest.raises(KibbleError, match="NaN"):
        fn(labels, nan)
    with pytest.raises(KibbleError, match="2-D"):
        fn(labels, probs[:, 0])
    with pytest.raises(KibbleError, match="one entry"):
        fn(labels[:-1], probs)
    out_of_range = labels.copy()
    out_of_range[0] = 3
    with pytest.raises(KibbleError, match=r"\[0, 3\)"):
        fn(out_of_range, probs)
    with pytest.raises(KibbleError, match="integer"):
        fn(labels.astype(float), probs)
    with pytest.raises(KibbleError, match="negative"):
        fn(labels, np.tile([[1.2, -0.2, 0.0]], (20, 1)))
    with pytest.raises(KibbleError, match="sum to 1"):
        fn(labels, probs * 2)
