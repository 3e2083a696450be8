"""scripts/bench_drift.py's protocol helpers (pure functions): the split, the interval, the dev choice, the draws."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench_drift  # noqa: E402


def test_split_halves_is_seeded_disjoint_and_complete():
    dev, test = bench_drift.split_halves(11, seed=3)
    assert len(dev) == 5 and len(test) == 6 and not set(dev) & set(test)
    assert sorted(np.r_[dev, test].tolist()) == list(range(11))
    again = bench_drift.split_halves(11, seed=3)
    assert (again[0] == dev).all() and not (bench_drift.split_halves(11, seed=4)[0] == dev).all()


def test_clopper_pearson_interval_and_promise():
    low, high = bench_drift.binomial_ci(0, 300)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 300))  # exact upper bound with no events
    low, high = bench_drift.binomial_ci(15, 300)
    assert low < 0.05 < high and 0.025 < low and high < 0.085
    assert bench_drift.promise(3, 300, 0.05) == "holds"  # upper bound ~0.029
    assert bench_drift.promise(12, 300, 0.05) == "not contradicted"
    assert bench_drift.promise(4, 4, 0.05) == "broken"  # the 4 of 4 alarms at 200 images
    assert bench_drift.promise(1, 4, 0.05) == "not contradicted"  # 1 of 4 proves little either way


def trials(arm: str, iid_alarms: dict[int, int], power: dict[str, float], n_iid: int = 100, n_drift: int = 10) -> list[dict]:
    rows = []
    for ref, k in iid_alarms.items():
        rows += [{"arm": arm, "reference": ref, "scenario": "iid", "drift": i < k} for i in range(n_iid)]
        for scenario, rate in power.items():
            rows += [{"arm": arm, "reference": ref, "scenario": scenario, "drift": i < round(rate * n_drift)} for i in range(n_drift)]
    return rows


def test_choose_excludes_arms_that_break_the_false_alarm_rate_then_takes_the_best_worst_case():
    frame = pd.DataFrame(
        trials("loud", {200: 60, 2000: 2}, {"prior": 1.0, "blur": 1.0})  # the most power, but false alarms at 200
        + trials("average", {200: 3, 2000: 3}, {"prior": 1.0, "blur": 0.5})  # better mean, worse worst case
        + trials("steady", {200: 3, 2000: 3}, {"prior": 0.7, "blur": 0.7})
    )
    summary = bench_drift.summarise(frame, alpha=0.05)
    row = summary[(summary["arm"] == "loud") & (summary["reference"] == 200) & (summary["scenario"] == "iid")].iloc[0]
    assert row["alarms"] == 60 and row["trials"] == 100 and row["promise"] == "broken" and row["ci_low"] > 0.05
    chosen, board = bench_drift.choose(summary, alpha=0.05)
    assert chosen == "steady" and not board.loc["loud", "admissible"]
    assert board.loc["average", "mean power"] > board.loc["steady", "mean power"]
    # nothing admissible: the quietest arm, and the board shows none passed
    chosen, board = bench_drift.choose(bench_drift.summarise(pd.DataFrame(trials("a", {200: 30}, {"blur": 1.0})
                                                                          + trials("b", {200: 20}, {"blur": 0.1})), 0.05), 0.05)
    assert chosen == "b" and not board["admissible"].any()


def test_draw_current_keeps_to_the_pool_and_skews_the_prior():
    labels = np.repeat(np.arange(10).astype(str), 100)
    pool = np.arange(0, 1000, 2)
    rng = np.random.default_rng(0)
    rows, ratio = bench_drift.draw_current("iid", 200, pool, labels, np.arange(50), rng)
    assert np.isin(rows, pool).all() and len(set(rows)) == 200 and np.isnan(ratio)
    rows, ratio = bench_drift.draw_current("prior", 140, pool, labels, np.arange(50), rng)
    counts = pd.Series(labels[rows]).value_counts()
    assert np.isin(rows, pool).all() and counts.iloc[0] == 50 and ratio == pytest.approx(5.0)
    rows, _ = bench_drift.draw_current("blur", 20, pool, labels, np.arange(50), rng)
    assert rows.max() < 50  # positions in the corrupted subset, not pool rows
