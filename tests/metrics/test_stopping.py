"""kibble.metrics.stopping: gain per 100 labels, its band (paired bootstrap / normal approximation), the stopping rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kibble import KibbleError
from kibble.metrics.stopping import (NO_GAIN, check_settings, contrast, expected_gain, pooled_gains, round_gains, slope_weights,
                                     stop_reason)


def paired(rng: np.random.Generator, n: int, p_both: float, p_first_only: float, p_second_only: float) -> tuple[np.ndarray, np.ndarray]:
    """Correctness of two models on n items drawn from a joint right/wrong distribution."""
    kind = rng.choice(4, size=n, p=[p_both, p_first_only, p_second_only, 1 - p_both - p_first_only - p_second_only])
    return (kind == 0) | (kind == 1), (kind == 0) | (kind == 2)


def curve(n: int, steps: list[int]) -> list[np.ndarray]:
    """Correctness per round: round k gets steps[k] more items right than round k-1 (nested, deterministic)."""
    right = np.cumsum([int(0.6 * n), *steps])
    return [np.arange(n) < k for k in right]


def test_gain_is_points_per_100_labels():
    first, second = curve(1000, [50])  # 60 % -> 65 % with 50 more labels: 10 points per 100 labels
    gains = round_gains([100, 150], correct=[first, second])
    assert gains[0] is NO_GAIN and gains[1].value == pytest.approx(10.0)
    assert gains[1].low <= 10.0 <= gains[1].high and gains[1].method.startswith("paired bootstrap")
    approx = round_gains([100, 150], [0.60, 0.65], n_items=1000)[1]
    assert approx.value == pytest.approx(10.0) and approx.method.startswith("normal")
    # the same accuracies, but the paired band knows the second model only adds right answers
    assert gains[1].high - gains[1].low < approx.high - approx.low
    assert slope_weights([100, 150]) @ [0.6, 0.65] == pytest.approx(10.0)


def test_paired_bootstrap_band_covers_the_true_gain():
    rng = np.random.default_rng(0)
    true_gain = (0.08 - 0.04) / 50 * 1e4  # second model right on 8 % more items, wrong on 4 % it had: 8 points / 100 labels
    covered, covered_approx = 0, 0
    trials = 200
    for t in range(trials):
        first, second = paired(rng, 400, 0.7, 0.04, 0.08)
        band = round_gains([100, 150], correct=[first, second], n_boot=1000, seed=t)[1]
        covered += band.low <= true_gain <= band.high
        approx = round_gains([100, 150], [first.mean(), second.mean()], n_items=400)[1]
        covered_approx += approx.low <= true_gain <= approx.high
    assert covered / trials >= 0.84, covered  # nominal 0.9
    assert covered_approx / trials >= 0.9, covered_approx  # independence overstates the spread: conservative


def test_a_flat_curve_stops_and_a_rising_one_does_not():
    labels = [100, 200, 300, 400]
    flat = curve(2000, [40, 1, 0])  # one last real step, then nothing
    rising = curve(2000, [60, 60, 60])  # 3 points per 100 labels
    expected_flat = expected_gain(labels, correct=flat, window=2)
    expected_rising = expected_gain(labels, correct=rising, window=2)
    assert expected_flat.value == pytest.approx(0.025) and expected_rising.value == pytest.approx(3.0)
    reason = stop_reason(expected_flat, 0.5, window=2)
    assert reason and "even the upper end is below stop.min_gain=0.5" in reason and "\n" not in reason
    assert stop_reason(expected_rising, 0.5) is None
    assert stop_reason(expected_flat, None) is None  # min_gain null: never stop early
    # too few measured rounds, or a round without a model (cold start), give no estimate and no stop
    assert expected_gain(labels[:2], correct=flat[:2], window=2) is NO_GAIN
    assert expected_gain([0, *labels], correct=[None, *flat], window=4) is NO_GAIN
    assert stop_reason(NO_GAIN, 0.5) is None
    # noisy evaluation: a flat curve on a small test set stays open (the band is too wide to call it flat)
    rng = np.random.default_rng(1)
    small = [rng.random(100) < 0.8 for _ in labels]
    assert stop_reason(expected_gain(labels, correct=small), 0.5) is None


def test_the_window_slope_smooths_one_noisy_round():
    labels = [100, 200, 300]
    acc = [0.70, 0.78, 0.74]  # a dip in the last round
    assert expected_gain(labels, acc, n_items=500, window=1).value == pytest.approx(-4.0)
    assert expected_gain(labels, acc, n_items=500, window=2).value == pytest.approx(2.0)  # the slope over the three


def test_pooled_gains_average_seeds_on_shared_items():
    n = 500
    rows, correct = [], {}
    for seed, steps in ((0, [50, 10]), (1, [30, 10])):
        for r, c in enumerate(curve(n, steps)):
            rows.append({"strategy": "margin", "seed": seed, "round": r, "n_labels": 20 + 50 * r, "test_accuracy": c.mean()})
            correct[("margin", seed, r)] = c
    rows.append({"strategy": "margin", "seed": 2, "round": 0, "n_labels": 20, "test_accuracy": float("nan")})  # no model
    table = pooled_gains(pd.DataFrame(rows), correct).set_index("round")
    assert np.isnan(table.loc[0, "gain_per_100_labels"]) and table.loc[0, "n_seeds"] == 3
    assert table.loc[1, "gain_per_100_labels"] == pytest.approx((20 + 12) / 2)  # 10 % and 6 % in 50 labels
    assert table.loc[1, "gain_low"] <= table.loc[1, "gain_per_100_labels"] <= table.loc[1, "gain_high"]
    assert table.loc[2, "gain_per_100_labels"] == pytest.approx(4.0)


@pytest.mark.parametrize("call, message", [
    (lambda: round_gains([100, 100], [0.5, 0.6], n_items=100), "n_labels must grow from round to round"),
    (lambda: round_gains([100, 150], [0.5, 60.0], n_items=100), "accuracy must be a fraction in [0, 1]"),
    (lambda: round_gains([100, 150, 200], [0.5, 0.6], n_items=100), "equal-length 1-D curves"),
    (lambda: round_gains([100, 150], [0.5, 0.6]), "needs per-item correctness, or n_items"),
    (lambda: round_gains([100, 150], [0.5, 0.6], n_items=[100, 100, 100]), "n_items must be one count or one per round"),
    (lambda: round_gains([100, 150], correct=[np.ones(10), np.ones(12)]), "must score the same test items"),
    (lambda: round_gains([100, 150], correct=[np.ones(10), np.full(10, 2)]), "one 1-D 0/1"),
    (lambda: expected_gain([100, 150], [0.5, 0.6], n_items=100, window=0), "stop.window=0"),
    (lambda: check_settings(0.5, 2, 1.5), "stop.level=1.5"),
    (lambda: check_settings("lots", 2), "expected a number"),
    (lambda: contrast([1.0, -1.0]), "needs per-item correctness"),
    (lambda: pooled_gains(pd.DataFrame({"round": [0]}), {}), "missing"),
])
def test_bad_input_is_one_line(call, message):
    with pytest.raises(KibbleError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        call()
    assert "\n" not in str(info.value)
