"""Severity: a within-group confusion costs less than an across-group one (PROBLEM.md: malamute ->
Siberian husky is milder than malamute -> Shetland sheepdog)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import confusion_matrix

from kibble import KibbleError
from kibble.data.classes import ClassInfo, ClassList
from kibble.metrics.evaluation import evaluate_probs
from kibble.metrics.severity import group_confusion, severity_summary, severity_weighted_error

# two spitz breeds and two herding breeds
CLASSES = ClassList(
    [ClassInfo("malamute", group="spitz"), ClassInfo("husky", group="spitz"), ClassInfo("sheltie", group="herding"), ClassInfo("collie", group="herding")],
    severity={"same_group": 0.3, "other_group": 1.0},
)


def two_models(n_per_class: int = 25, n_wrong: int = 5):
    """Same truth, same number of mistakes; model A confuses within groups, model B across groups."""
    y = np.repeat(np.arange(4), n_per_class)
    within = {0: 1, 1: 0, 2: 3, 3: 2}
    across = {0: 2, 1: 3, 2: 0, 3: 1}
    a, b = y.copy(), y.copy()
    for c in range(4):
        idx = np.flatnonzero(y == c)[:n_wrong]
        a[idx], b[idx] = within[c], across[c]
    return y, a, b


def test_same_accuracy_different_severity():
    y, a, b = two_models()
    assert (a == y).mean() == (b == y).mean() == 0.8
    cost = CLASSES.severity_matrix()
    sev_a, sev_b = severity_weighted_error(y, a, cost), severity_weighted_error(y, b, cost)
    assert sev_a == pytest.approx(0.2 * 0.3) and sev_b == pytest.approx(0.2 * 1.0)
    assert sev_a < sev_b
    sum_a = severity_summary(confusion_matrix(y, a), cost, CLASSES.names, [c.group for c in CLASSES.classes])
    sum_b = severity_summary(confusion_matrix(y, b), cost, CLASSES.names, [c.group for c in CLASSES.classes])
    assert (sum_a["within_group_errors"], sum_a["across_group_errors"]) == (20, 0)
    assert (sum_b["within_group_errors"], sum_b["across_group_errors"]) == (0, 20)
    assert sum_a["error_rate"] == sum_b["error_rate"] == pytest.approx(0.2)
    assert sum_a["mean_cost_per_error"] == pytest.approx(0.3) and sum_b["mean_cost_per_error"] == pytest.approx(1.0)
    assert sum_b["group_confusion"] == {"groups": ["spitz", "herding"], "matrix": [[40, 10], [10, 40]]}


def test_full_evaluation_reports_the_difference():
    y, a, b = two_models()
    cost = CLASSES.severity_matrix()
    onehot = lambda pred: np.eye(4)[pred] * 0.9 + 0.025  # noqa: E731
    ra, rb = evaluate_probs(y, onehot(a), CLASSES, cost), evaluate_probs(y, onehot(b), CLASSES, cost)
    assert ra["accuracy"] == rb["accuracy"] and ra["f1_macro"] == pytest.approx(rb["f1_macro"])
    assert ra["severity_weighted_error"] < rb["severity_weighted_error"]
    assert rb["top_confusions"][0]["cost"] == 1.0 and ra["top_confusions"][0]["cost"] == 0.3


def test_unit_costs_give_the_error_rate_and_ungrouped_classes_are_their_own_group():
    y, a, _ = two_models()
    flat = ClassList.from_names(["w", "x", "y", "z"])
    assert severity_weighted_error(y, a, flat.severity_matrix()) == pytest.approx((a != y).mean())
    summary = severity_summary(confusion_matrix(y, a), flat.severity_matrix(), flat.names, [None] * 4)
    assert "within_group_errors" not in summary  # no groups at all: nothing to split
    mixed = severity_summary(confusion_matrix(y, a), CLASSES.severity_matrix(), CLASSES.names, ["spitz", "spitz", None, None])
    assert mixed["within_group_errors"] == 10 and mixed["across_group_errors"] == 10  # sheltie/collie ungrouped: across


def test_group_confusion_sums_blocks():
    cm = np.array([[3, 1, 0], [2, 4, 1], [0, 5, 6]])
    frame = group_confusion(cm, ["g", "g", None])
    assert frame.loc["g", "g"] == 10 and frame.loc["g", "(none)"] == 1 and frame.loc["(none)", "g"] == 5
    with pytest.raises(KibbleError, match="2 groups for a 3-class"):
        group_confusion(cm, ["g", "h"])


def test_cost_matrix_from_csv(tmp_path):
    names = ["malamute", "husky", "sheltie"]
    pd.DataFrame([[0, 0.2, 1.0], [0.2, 0, 1.0], [3.0, 3.0, 0]], index=names, columns=names).to_csv(tmp_path / "cost.csv")
    (tmp_path / "classes.yaml").write_text(yaml.safe_dump({"classes": [{"name": n} for n in names], "severity": {"matrix": "cost.csv"}}))
    classes = ClassList.load(tmp_path / "classes.yaml")
    cost = classes.severity_matrix(tmp_path)
    y, pred = np.array([0, 1, 2, 2]), np.array([1, 1, 0, 1])
    assert severity_weighted_error(y, pred, cost) == pytest.approx((0.2 + 0 + 3.0 + 3.0) / 4)


def test_bad_inputs():
    cost = CLASSES.severity_matrix()
    with pytest.raises(KibbleError, match="no rows"):
        severity_weighted_error([], [], cost)
    with pytest.raises(KibbleError, match="equal length"):
        severity_weighted_error([0, 1], [0], cost)
    with pytest.raises(KibbleError, match="class indices must be in 0..3"):
        severity_weighted_error([0, 4], [0, 1], cost)
    with pytest.raises(KibbleError, match="finite and >= 0"):
        severity_summary(np.eye(2, dtype=int), np.array([[0, -1], [1, 0]]), ["a", "b"])
