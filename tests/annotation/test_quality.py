"""Annotator quality: gold accuracy, kappa / Krippendorff's alpha against references, speed, flags, the note tag."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from kibble import KibbleError
from kibble.annotation.quality import (
    agreement, annotator_quality, answers_per_hour, cohen_kappa, gold_accuracy, human_note, krippendorff_alpha,
    log_odds_weight, parse_tag, quality_tag, with_tag,
)


def reviews(rows):
    return pd.DataFrame(rows, columns=["sample_id", "label", "verdict", "annotator", "lead_time"])


def test_krippendorff_alpha_matches_the_published_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", nominal example: alpha = 0.743
    nan = None
    data = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
        [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
    ]
    matrix = np.array(data, dtype=object).T  # items x raters
    assert krippendorff_alpha(matrix) == pytest.approx(0.743, abs=0.001)
    assert krippendorff_alpha(np.array([["a", "a"], ["b", "b"]], dtype=object)) == 1.0
    assert math.isnan(krippendorff_alpha(np.array([["a", None], [None, "b"]], dtype=object)))


def test_cohen_kappa_is_sklearn_and_agreement_picks_the_method():
    two = reviews([
        ("s1", "cat", "confirmed", "a", 5), ("s1", "cat", "confirmed", "b", 5),
        ("s2", "dog", "corrected", "a", 5), ("s2", "cat", "confirmed", "b", 5),
        ("s3", "dog", "corrected", "a", 5), ("s3", "dog", "corrected", "b", 5),
        ("s4", None, "ambiguous", "a", 5), ("s4", None, "ambiguous", "b", 5),
        ("s5", None, "skipped", "a", 5), ("s5", "cat", "confirmed", "b", 5),
    ])
    result = agreement(two)
    from sklearn.metrics import cohen_kappa_score

    expected = cohen_kappa_score(["cat", "dog", "dog", "<ambiguous>"], ["cat", "cat", "dog", "<ambiguous>"])
    assert result["method"] == "cohen_kappa" and result["value"] == pytest.approx(expected)
    assert result["n_items"] == 4  # the skip does not pair
    three = pd.concat([two, reviews([("s1", "cat", "confirmed", "c", 1), ("s2", "fox", "corrected", "c", 1)])])
    assert agreement(three)["method"] == "krippendorff_alpha"
    assert len(agreement(three)["pairs"]) == 3
    assert cohen_kappa(["x", "x"], ["x", "x"]) == 1.0
    with pytest.raises(KibbleError, match="same items"):
        cohen_kappa(["x"], ["x", "y"])


def test_gold_accuracy_weights_and_flags():
    gold = pd.DataFrame({"sample_id": [f"g{i}" for i in range(10)], "gold_label": ["cat"] * 10})
    rows = [(f"g{i}", "cat", "confirmed", "good", 10.0) for i in range(10)]
    rows += [(f"g{i}", "cat" if i < 5 else "dog", "confirmed" if i < 5 else "corrected", "bad", 2.0) for i in range(10)]
    rows += [(f"g{i}", None, "skipped", "lazy", None) for i in range(10)] + [("x1", "cat", "confirmed", "lazy", None)]
    table, _ = annotator_quality(reviews(rows), gold, n_classes=3, threshold=0.8, min_gold=5)
    table = table.set_index("annotator")
    assert table.loc["good", "gold_accuracy"] == 1.0 and not table.loc["good", "flagged"]
    assert table.loc["bad", "gold_accuracy"] == 0.5 and table.loc["bad", "flagged"]
    assert "0.50 < 0.80" in table.loc["bad", "flag_reason"]
    assert table.loc["lazy", "gold_n"] == 0 and not table.loc["lazy", "flagged"]  # skips are not answers
    assert table.loc["good", "weight"] == pytest.approx(math.log(2 * (11 / 12) / (1 / 12)))
    assert table.loc["good", "weight"] > table.loc["bad", "weight"] > 0
    assert table.loc["good", "answers_per_hour"] == pytest.approx(360.0)
    assert math.isnan(table.loc["lazy", "answers_per_hour"])
    assert log_odds_weight(0, 20, 10) == 0.0  # worse than chance: no say
    assert list(gold_accuracy(reviews(rows), None).columns) == ["annotator", "gold_n", "gold_correct", "gold_accuracy"]


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(KibbleError, match="no annotator id"):
        annotator_quality(reviews([("s1", "cat", "confirmed", None, None)]), None, 3)
    with pytest.raises(KibbleError, match="threshold"):
        annotator_quality(reviews([("s1", "cat", "confirmed", "a", None)]), None, 3, threshold=80)
    with pytest.raises(KibbleError, match="negative"):
        answers_per_hour(reviews([("s1", "cat", "confirmed", "a", -3.0)]))


def test_note_tag_round_trip():
    tag = quality_tag({"gold_n": 12, "weight": 2.5, "gold_accuracy": 0.6, "flagged": True}, gold_item=True)
    note = with_tag("between husky and malamute", tag)
    assert human_note(note) == "between husky and malamute"
    parsed = parse_tag(note)
    assert parsed["weight"] == 2.5 and parsed["flagged"] and parsed["gold_item"]
    assert parse_tag("no tag [here]") == {} and with_tag(with_tag("x", tag), "") == "x"


def test_cohen_kappa_matches_sklearn_on_random_answers():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(0)
    for _ in range(50):
        n, k = int(rng.integers(2, 40)), int(rng.integers(2, 6))
        a = [f"c{v}" for v in rng.integers(0, k, n)]
        b = [x if rng.random() < 0.6 else f"c{rng.integers(0, k)}" for x in a]
        if len(set(a) | set(b)) > 1:
            assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))


def test_answer_values_equal_answer_value_row_by_row():
    from kibble.annotation.quality import answer_value, answer_values

    verdicts = pd.Series(["confirmed", "corrected", "ambiguous", "out_of_scope", "skipped", "corrected", "confirmed", None], dtype=object)
    labels = pd.Series(["cat", "dog", None, "x", "cat", float("nan"), 3, "fox"], dtype=object)
    expected = [answer_value(str(v), lab) for v, lab in zip(verdicts, labels)]
    assert answer_values(verdicts, labels).tolist() == expected
    assert expected[:5] == ["cat", "dog", "<ambiguous>", "<out_of_scope>", None]
