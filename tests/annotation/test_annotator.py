"""The simulated annotator: answers from true_label, with a seeded error rate."""

from __future__ import annotations

import pandas as pd
import pytest

from kibble import KibbleError
from kibble.annotation.annotator import SimulatedAnnotator
from kibble.labels.reviews import REVIEW_COLUMNS, validate_reviews

CLASSES = ["cat", "dog", "fox", "owl"]
N = 200
MANIFEST = pd.DataFrame(
    {
        "sample_id": [f"s{i}" for i in range(N)],
        "path": [f"s{i}.png" for i in range(N)],
        "label": [CLASSES[i % 4] for i in range(N)],
        "split": "train",
        "true_label": [CLASSES[(i // 2) % 4] for i in range(N)],
    }
)
QUEUE = pd.DataFrame({"queue_id": [f"q{i}" for i in range(N)], "round": 2, "sample_id": MANIFEST["sample_id"],
                      "given_label": MANIFEST["label"]})


def test_perfect_annotator_answers_the_truth():
    reviews = SimulatedAnnotator(name="sim").review(QUEUE, MANIFEST, CLASSES)
    assert list(reviews.columns) == REVIEW_COLUMNS and len(reviews) == N
    assert (reviews["label"] == MANIFEST["true_label"]).all()
    expected = ["confirmed" if t == g else "corrected" for t, g in zip(MANIFEST["true_label"], MANIFEST["label"])]
    assert reviews["verdict"].tolist() == expected
    assert set(reviews["annotator"]) == {"sim"} and (reviews["round"] == 2).all()
    assert reviews["queue_id"].tolist() == QUEUE["queue_id"].tolist()
    validate_reviews(reviews, MANIFEST, CLASSES)  # a valid reviews table


def test_error_rate_and_seed():
    always_wrong = SimulatedAnnotator(error_rate=1.0, seed=1).review(QUEUE, MANIFEST, CLASSES)
    assert (always_wrong["label"] != MANIFEST["true_label"]).all() and always_wrong["label"].isin(CLASSES).all()
    a = SimulatedAnnotator(error_rate=0.3, seed=7)
    first = a.review(QUEUE, MANIFEST, CLASSES)
    rate = (first["label"] != MANIFEST["true_label"]).mean()
    assert 0.15 < rate < 0.45
    again = SimulatedAnnotator(error_rate=0.3, seed=7).review(QUEUE, MANIFEST, CLASSES)
    assert first["label"].tolist() == again["label"].tolist()  # reproducible
    second_round = a.review(QUEUE, MANIFEST, CLASSES)
    assert second_round["label"].tolist() != first["label"].tolist()  # fresh errors each round


def test_cost():
    a = SimulatedAnnotator(cost_per_item=0.25)
    assert a.cost(40) == 10.0
    a.review(QUEUE.head(8), MANIFEST, CLASSES)
    assert a.items_reviewed == 8 and a.total_cost == 2.0


def test_needs_true_label():
    with pytest.raises(KibbleError, match="no true_label column"):
        SimulatedAnnotator().review(QUEUE, MANIFEST.drop(columns="true_label"), CLASSES)
    with pytest.raises(KibbleError, match="not in the manifest"):
        SimulatedAnnotator().review(pd.DataFrame({"sample_id": ["ghost"]}), MANIFEST, CLASSES)
    with pytest.raises(KibbleError, match="error_rate"):
        SimulatedAnnotator(error_rate=1.5)


def test_truth_outside_the_class_list_is_out_of_scope():
    manifest = MANIFEST.head(2).assign(true_label=["cat", "wolf"])
    reviews = SimulatedAnnotator().review(QUEUE.head(2), manifest, CLASSES)
    assert reviews["verdict"].tolist() == ["confirmed", "out_of_scope"] and reviews.loc[1, "label"] is None
