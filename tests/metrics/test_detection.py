"""Detection metrics against known noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kibble import KibbleError
from kibble.metrics.detection import detection_metrics, queue_precision_recall


def test_perfect_and_reversed_rankings():
    noisy = np.array([True, True, False, False, False])
    score = np.array([0.9, 0.8, 0.3, 0.2, 0.1])
    m = detection_metrics(noisy, score)
    assert m["budget"] == 2 and m["n_noisy"] == 2 and m["n_queued"] == 2
    assert m["precision_at_budget"] == 1.0 and m["recall_at_budget"] == 1.0
    assert m["auprc"] == pytest.approx(1.0) and m["auroc"] == pytest.approx(1.0)
    r = detection_metrics(noisy, -score)
    assert r["precision_at_budget"] == 0.0 and r["auroc"] == pytest.approx(0.0)


def test_budget_and_flagged_restrict_the_queue():
    noisy = np.array([True, False, True, False, False, True])
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.1])
    m = detection_metrics(noisy, score, budget=4)
    assert m["precision_at_budget"] == pytest.approx(2 / 4)
    assert m["recall_at_budget"] == pytest.approx(2 / 3)
    flagged = np.array([True, False, False, True, False, True])
    f = detection_metrics(noisy, score, budget=4, flagged=flagged)
    assert f["n_queued"] == 3
    assert f["precision_at_budget"] == pytest.approx(2 / 3)
    assert f["recall_at_budget"] == pytest.approx(2 / 3)
    big = detection_metrics(noisy, score, budget=100)
    assert big["n_queued"] == 6 and big["recall_at_budget"] == 1.0


def test_ties_keep_row_order():
    noisy = np.array([False, True, True])
    m = detection_metrics(noisy, np.zeros(3), budget=1)
    assert m["precision_at_budget"] == 0.0


def test_single_class_is_nan_not_error():
    m = detection_metrics(np.zeros(4, bool), np.arange(4.0))
    assert math.isnan(m["auroc"]) and math.isnan(m["auprc"])
    assert m["budget"] == 0 and math.isnan(m["precision_at_budget"]) and math.isnan(m["recall_at_budget"])
    allnoisy = detection_metrics(np.ones(3, bool), np.arange(3.0))
    assert math.isnan(allnoisy["auroc"]) and allnoisy["precision_at_budget"] == 1.0


def test_validation():
    with pytest.raises(KibbleError, match="same shape"):
        detection_metrics(np.array([True, False]), np.zeros(3))
    with pytest.raises(KibbleError, match="NaN"):
        detection_metrics(np.array([True, False]), np.array([np.nan, 0.0]))
    with pytest.raises(KibbleError, match="budget"):
        detection_metrics(np.array([True, False]), np.zeros(2), budget=-1)
    with pytest.raises(KibbleError, match="boolean"):
        detection_metrics(np.array([2, 0]), np.zeros(2))
    with pytest.raises(KibbleError, match="flagged"):
        detection_metrics(np.array([True, False]), np.zeros(2), flagged=np.array([True]))


def test_queue_precision_recall():
    r = queue_precision_recall(["a", "b", "c", "c"], ["b", "c", "d", "e"])
    assert r == {"precision": 2 / 3, "recall": 2 / 4, "n_queued": 3, "n_noisy": 4, "n_hits": 2}
    empty = queue_precision_recall([], [1])
    assert math.isnan(empty["precision"]) and empty["recall"] == 0.0
    assert queue_precision_recall(np.array([1, 2]), [2])["n_hits"] == 1
    with pytest.raises(KibbleError, match="string"):
        queue_precision_recall("abc", ["a"])
