"""kibble.metrics.learning_curve: labels to reach a target, per-seed savings paired with the baseline, and their spread."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from kibble import KibbleError
from kibble.metrics.learning_curve import labels_to_reach, paired_p, per_seed_savings, savings_table, seed_summary

LABELS = [100, 200, 300, 400]


def curves(arms: dict[tuple[str, int], list[float]]) -> pd.DataFrame:
    rows = [{"strategy": name, "seed": seed, "round": r, "n_labels": LABELS[r], "test_accuracy": acc}
            for (name, seed), accs in arms.items() for r, acc in enumerate(accs)]
    return pd.DataFrame(rows)


def test_labels_to_reach_interpolates_between_rounds():
    assert labels_to_reach(LABELS, [0.5, 0.6, 0.8, 0.9], 0.7) == pytest.approx(250.0)


def test_labels_to_reach_is_nan_when_the_curve_never_gets_there():
    assert np.isnan(labels_to_reach(LABELS, [0.5, 0.6, 0.6, 0.6], 0.7))


def test_each_seed_is_measured_against_the_baseline_of_the_same_seed():
    frame = curves({("random", 0): [0.5, 0.6, 0.7, 0.8], ("margin", 0): [0.5, 0.7, 0.8, 0.85],
                    ("random", 1): [0.5, 0.55, 0.6, 0.6], ("margin", 1): [0.5, 0.6, 0.6, 0.65]})
    rows = per_seed_savings(frame).set_index(["strategy", "seed"])
    # seed 0: random ends at 0.8, margin reaches it at 300 labels = 75 % of random's 400
    assert rows.loc[("margin", 0), "labels_to_reach_random_final"] == pytest.approx(300.0)
    assert rows.loc[("margin", 0), "share_of_random_labels"] == pytest.approx(0.75)
    # seed 1: random ends at 0.6, margin first reaches it at 200 labels
    assert rows.loc[("margin", 1), "share_of_random_labels"] == pytest.approx(0.5)
    assert rows.loc[("margin", 0), "accuracy_gap"] == pytest.approx(0.05)
    # mean gap over the rounds after the seed set: (0.1 + 0.1 + 0.05) / 3
    assert rows.loc[("margin", 0), "mean_accuracy_gap"] == pytest.approx(0.25 / 3)
    # the baseline against itself: seed 1's random touched its final value at 300 labels already
    assert rows.loc[("random", 1), "share_of_random_labels"] == pytest.approx(0.75)
    assert rows.loc[("random", 0), "accuracy_gap"] == 0.0


def test_a_strategy_that_never_reaches_the_baseline_is_counted_as_not_reached():
    frame = curves({("random", 0): [0.5, 0.6, 0.7, 0.8], ("entropy", 0): [0.5, 0.55, 0.6, 0.7]})
    row = per_seed_savings(frame).set_index("strategy").loc["entropy"]
    assert not row["reached"] and np.isnan(row["share_of_random_labels"])


def test_a_seed_without_a_baseline_curve_is_refused():
    frame = curves({("random", 0): [0.5, 0.6, 0.7, 0.8], ("margin", 1): [0.5, 0.7, 0.8, 0.85]})
    with pytest.raises(KibbleError, match="seed 1 but 'random' does not"):
        per_seed_savings(frame)


def test_per_seed_savings_without_the_baseline_names_the_missing_arm():
    with pytest.raises(KibbleError, match="no 'random' curve"):
        per_seed_savings(curves({("margin", 0): [0.5, 0.6, 0.7, 0.8]}))


def test_summary_gives_mean_and_sample_std_over_the_seeds_that_reached():
    frame = curves({("random", 0): [0.5, 0.6, 0.7, 0.8], ("margin", 0): [0.5, 0.7, 0.8, 0.85],
                    ("random", 1): [0.5, 0.55, 0.6, 0.6], ("margin", 1): [0.5, 0.6, 0.6, 0.65],
                    ("random", 2): [0.5, 0.6, 0.7, 0.9], ("margin", 2): [0.5, 0.6, 0.7, 0.8]})
    summary = seed_summary(per_seed_savings(frame)).set_index("strategy")
    margin = summary.loc["margin"]
    assert margin["n_seeds"] == 3 and margin["n_reached"] == 2
    assert margin["share_of_random_labels_mean"] == pytest.approx(0.625)
    assert margin["share_of_random_labels_std"] == pytest.approx(np.std([0.75, 0.5], ddof=1))
    gaps = [0.05, 0.05, -0.1]
    assert margin["accuracy_gap_mean"] == pytest.approx(np.mean(gaps))
    assert margin["accuracy_gap_std"] == pytest.approx(np.std(gaps, ddof=1))
    assert margin["accuracy_gap_p"] == pytest.approx(stats.ttest_rel([0.85, 0.65, 0.8], [0.8, 0.6, 0.9]).pvalue)
    assert margin["accuracy_gap_verdict"] == "tie"
    assert summary.loc["random", "accuracy_gap_verdict"] == ""


def test_a_consistent_gap_larger_than_its_spread_is_not_called_a_tie():
    arms = {}
    for seed, bump in enumerate([0.10, 0.11, 0.12, 0.10]):
        arms[("random", seed)] = [0.5, 0.6, 0.7, 0.75]
        arms[("margin", seed)] = [0.5, 0.6 + bump, 0.7 + bump, 0.75 + bump]
    margin = seed_summary(per_seed_savings(curves(arms))).set_index("strategy").loc["margin"]
    assert margin["accuracy_gap_verdict"] == "better" and margin["mean_accuracy_gap_verdict"] == "better"
    assert margin["accuracy_gap_p"] < 0.01


def test_paired_p_handles_one_seed_and_zero_spread():
    assert np.isnan(paired_p([0.1]))
    assert paired_p([0.02, 0.02, 0.02]) == 0.0
    assert paired_p([0.0, 0.0, 0.0]) == 1.0


def test_summary_refuses_a_frame_that_is_not_per_seed_savings():
    with pytest.raises(KibbleError, match="missing"):
        seed_summary(pd.DataFrame({"strategy": ["margin"], "seed": [0]}))


def test_savings_table_on_mean_curves_still_ranks_by_share():
    frame = curves({("random", 0): [0.5, 0.6, 0.7, 0.8], ("margin", 0): [0.5, 0.7, 0.8, 0.85]})
    table = savings_table(frame)
    assert list(table["strategy"]) == ["margin", "random"]
    assert table.loc[0, "share_of_random_labels"] == pytest.approx(0.75)


def test_budget_comparison_pairs_each_seed_with_random_at_each_budget():
    from kibble.metrics.learning_curve import budget_comparison

    def curve(name, seed, accs):
        return [{"strategy": name, "seed": seed, "round": r, "n_labels": n, "test_accuracy": a}
                for r, (n, a) in enumerate(zip([0, 10, 20, 50], accs))]

    curves = pd.DataFrame([*curve("random", 0, [np.nan, 0.4, 0.5, 0.7]), *curve("typiclust", 0, [np.nan, 0.6, 0.7, 0.8]),
                           *curve("random", 1, [np.nan, 0.3, 0.6, 0.8]), *curve("typiclust", 1, [np.nan, 0.5, 0.55, 0.65])])
    rows = budget_comparison(curves, budgets=[10, 20], match_at=[20, 50]).set_index(["strategy", "seed"])
    assert rows.loc[("typiclust", 0), "gap@10"] == pytest.approx(0.2) and rows.loc[("typiclust", 1), "gap@20"] == pytest.approx(-0.05)
    assert rows.loc[("typiclust", 0), "need@20"] == pytest.approx(10.0)  # already above random's 0.5 at 10 labels
    assert rows.loc[("typiclust", 0), "need@50"] == pytest.approx(20.0) and rows.loc[("typiclust", 0), "share@50"] == pytest.approx(0.4)
    assert rows.loc[("typiclust", 1), "need@20"] == pytest.approx(35.0)  # 20 + 30 x (0.60 - 0.55) / (0.65 - 0.55)
    assert np.isnan(rows.loc[("typiclust", 1), "need@50"])  # never reaches random's 0.8
    assert rows.loc[("random", 1), "share@50"] == pytest.approx(1.0) and rows.loc[("random", 0), "gap@10"] == 0
    assert np.isnan(budget_comparison(curves, budgets=[30], match_at=[])["acc@30"]).all()  # no point at 30 labels
    with pytest.raises(KibbleError, match="'typiclust' has seed 2 but 'random' does not"):
        budget_comparison(pd.concat([curves, pd.DataFrame(curve("typiclust", 2, [np.nan, 0.5, 0.6, 0.7]))]), budgets=[10], match_at=[])
