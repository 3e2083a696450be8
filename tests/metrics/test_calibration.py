"""ECE, reliability bins, Brier/NLL and the confidence threshold for a target precision."""

from __future__ import annotations

import numpy as np
import pytest

from kibble import KibbleError
from kibble.metrics.calibration import brier_and_nll, calibration_metrics, expected_calibration_error, reliability_bins, threshold_for_precision


def probs_with_confidence(conf: np.ndarray, pred: np.ndarray, k: int = 3) -> np.ndarray:
    """Rows whose top class is `pred` with probability `conf`, the rest spread evenly."""
    p = np.repeat(((1 - conf) / (k - 1))[:, None], k, axis=1)
    p[np.arange(len(conf)), pred] = conf
    return p


def test_ece_by_hand():
    # 4 predictions at confidence 0.9 (3 right), 4 at 0.6 (2 right): gaps 0.15 and 0.1
    conf = np.array([0.9] * 4 + [0.6] * 4)
    pred = np.zeros(8, dtype=int)
    y = np.array([0, 0, 0, 1, 0, 0, 1, 1])
    p = probs_with_confidence(conf, pred)
    ece = expected_calibration_error(p, y, n_bins=10)
    assert ece["ece"] == pytest.approx(0.5 * 0.15 + 0.5 * 0.1)
    assert ece["mce"] == pytest.approx(0.15)
    bins = reliability_bins(p, y, n_bins=10)
    assert len(bins) == 10 and sum(b["count"] for b in bins) == 8
    full = [b for b in bins if b["count"]]
    assert [(b["lower"], b["count"], b["accuracy"]) for b in full] == [(pytest.approx(0.5), 4, 0.5), (pytest.approx(0.8), 4, 0.75)]


def test_perfectly_calibrated_predictions_have_small_ece():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.4, 1.0, 20000)
    pred = rng.integers(0, 3, 20000)
    correct = rng.uniform(size=20000) < conf
    y = np.where(correct, pred, (pred + 1) % 3)
    assert expected_calibration_error(probs_with_confidence(conf, pred), y)["ece"] < 0.02
    overconfident = probs_with_confidence(np.minimum(conf + 0.3, 0.999), pred)
    assert expected_calibration_error(overconfident, y)["ece"] > 0.15


def test_threshold_for_precision():
    conf = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.45])
    y_right = np.array([1, 1, 1, 0, 1, 0, 0, 1], dtype=bool)
    p = probs_with_confidence(conf, np.zeros(8, dtype=int))
    y = np.where(y_right, 0, 1)
    # kept precision by cut: 1, 1, 1, .75, .8, .667, .571, .625
    t = threshold_for_precision(p, y, target=0.8)
    assert t["threshold"] == pytest.approx(0.7) and t["n_accepted"] == 5 and t["precision"] == pytest.approx(0.8) and t["coverage"] == pytest.approx(5 / 8)
    assert threshold_for_precision(p, y, target=1.0)["threshold"] == pytest.approx(0.9)
    assert threshold_for_precision(p, y, target=0.5)["coverage"] == 1.0
    never = threshold_for_precision(p, np.ones(8, dtype=int), target=0.9)
    assert never["threshold"] is None and never["coverage"] == 0.0
    # ties are kept together: two predictions at 0.9, one wrong, cannot be split to reach precision 1
    tied = probs_with_confidence(np.array([0.9, 0.9]), np.zeros(2, dtype=int))
    assert threshold_for_precision(tied, np.array([0, 1]), target=1.0)["threshold"] is None
    with pytest.raises(KibbleError, match=r"target precision 1.5"):
        threshold_for_precision(p, y, target=1.5)


def test_brier_nll_and_bundle():
    p = np.array([[1.0, 0.0], [0.5, 0.5]])
    scores = brier_and_nll(p, [0, 1])
    assert scores["brier"] == pytest.approx((0 + 0.5) / 2) and scores["nll"] == pytest.approx(np.log(2) / 2)
    bundle = calibration_metrics(p, [0, 1], n_bins=5, target_precision=0.9)
    assert {"ece", "mce", "brier", "nll", "bins", "threshold", "mean_confidence", "accuracy"} <= set(bundle)
    assert bundle["threshold"]["threshold"] == 1.0


def test_bad_inputs():
    with pytest.raises(KibbleError, match="no rows"):
        expected_calibration_error(np.zeros((0, 3)), [])
    with pytest.raises(KibbleError, match=r"must be \(N, K\) with one row per label"):
        expected_calibration_error(np.full((2, 3), 1 / 3), [0])
    with pytest.raises(KibbleError, match="NaN"):
        expected_calibration_error(np.array([[np.nan, 1.0]]), [0])
    with pytest.raises(KibbleError, match=r"class indices in 0..1"):
        expected_calibration_error(np.array([[0.5, 0.5]]), [2])
