"""Importance-weighted F1, targets with pass/fail, top confused pairs and slices (pure functions)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from kibble import KibbleError
from kibble.metrics.classification import check_targets, classification_metrics, slice_metrics, top_confusions, weighted_f1

NAMES = ["a", "b", "c", "d"]
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 2]
Y_PRED = [0, 0, 1, 1, 0, 2, 2, 2, 1]


def test_weighted_f1_with_equal_weights_is_macro_f1_over_present_classes():
    m = classification_metrics(Y_TRUE, Y_PRED, NAMES)
    f1 = [r["f1"] for r in m["per_class"]]
    support = [r["support"] for r in m["per_class"]]
    assert weighted_f1(f1, support, [1, 1, 1, 1]) == pytest.approx(f1_score(Y_TRUE, Y_PRED, average="macro"))
    # importance weights tilt it towards the heavy class; "d" (no images) is left out whatever its weight
    expected = (1 * f1[0] + 1 * f1[1] + 4 * f1[2]) / 6
    assert weighted_f1(f1, support, [1, 1, 4, 100]) == pytest.approx(expected)
    assert weighted_f1(f1, support, [0, 0, 1, 1]) == pytest.approx(f1[2])


def test_weighted_f1_rejects_bad_weights():
    with pytest.raises(KibbleError, match="one entry per class"):
        weighted_f1([0.5, 0.5], [1, 1], [1.0])
    with pytest.raises(KibbleError, match="finite numbers >= 0"):
        weighted_f1([0.5, 0.5], [1, 1], [1.0, -1.0])
    with pytest.raises(KibbleError, match="all have weight 0"):
        weighted_f1([0.5, 0.5], [1, 1], [0.0, 0.0])


def test_check_targets_lists_failing_classes_and_overrides():
    m = classification_metrics(Y_TRUE, Y_PRED, NAMES)
    f1 = {r["class"]: r["f1"] for r in m["per_class"]}
    assert f1["a"] == pytest.approx(2 / 3) and f1["b"] == pytest.approx(0.4) and f1["c"] == pytest.approx(6 / 7)
    result = check_targets(m["per_class"], 0.72, {"per_class_f1": 0.8, "weighted_f1": 0.7})
    assert result["failing_classes"] == ["a", "b", "d"] and not result["passed"] and result["weighted_f1_passed"]
    rows = {r["class"]: r for r in result["per_class"]}
    assert rows["c"]["passed"] and rows["c"]["reason"] == ""
    assert rows["b"]["reason"] == "F1 0.400 < 0.80"
    assert rows["d"]["reason"] == "no images in the evaluation set"
    # per-class overrides (classes.yaml targets.class_f1); an F1 equal to its target passes
    relaxed = check_targets(m["per_class"][:3], 0.72, {"per_class_f1": 0.8, "weighted_f1": 0.75, "class_f1": {"a": f1["a"], "b": 0.4}})
    assert relaxed["failing_classes"] == [] and not relaxed["weighted_f1_passed"] and not relaxed["passed"]
    assert check_targets(m["per_class"][:3], 0.9, {"per_class_f1": 0.4, "weighted_f1": 0.85})["passed"]


def test_top_confusions_are_ranked_by_count_with_costs():
    cm = np.array([[5, 3, 0], [1, 4, 0], [0, 2, 6]])
    cost = np.array([[0, 0.5, 1], [0.5, 0, 1], [1, 1, 0]])
    pairs = top_confusions(cm, ["a", "b", "c"], k=2, cost=cost)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [("a", "b", 3), ("c", "b", 2)]
    assert pairs[0]["share_of_true"] == pytest.approx(3 / 8) and pairs[0]["weighted"] == pytest.approx(1.5)
    assert pairs[1]["cost"] == 1.0
    assert top_confusions(np.eye(3, dtype=int) * 4, ["a", "b", "c"]) == []
    with pytest.raises(KibbleError, match="expected \\(2, 2\\)"):
        top_confusions(cm, ["a", "b"])


def test_slices_by_metadata_value():
    env = ["in", "in", "out", "out", "in", None, "out", "out", "in"]
    rows = {r["value"]: r for r in slice_metrics(env, np.array(Y_TRUE), np.array(Y_PRED), [1, 1, 1, 1], "env")}
    assert set(rows) == {"in", "out", "(missing)"}
    inside = [i for i, v in enumerate(env) if v == "in"]
    assert rows["in"]["n"] == 4
    assert rows["in"]["accuracy"] == pytest.approx(np.mean([Y_TRUE[i] == Y_PRED[i] for i in inside]))
    assert rows["in"]["f1_macro"] == pytest.approx(f1_score([Y_TRUE[i] for i in inside], [Y_PRED[i] for i in inside], average="macro"))
    with pytest.raises(KibbleError, match="slice column 'env' has 2 values for 9 rows"):
        slice_metrics(["a", "b"], np.array(Y_TRUE), np.array(Y_PRED), [1, 1, 1, 1], "env")
