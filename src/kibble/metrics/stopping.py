"""A stopping signal for active learning: accuracy gained per 100 new labels, with an uncertainty band.

Units: accuracy *points* (percentage points) per 100 labels, so 0.5 reads "half a point of test
accuracy for the next 100 labels". Per round r (after the first measured one), accuracies as fractions,

    gain_r = 100 * (acc_r - acc_{r-1}) / (labels_r - labels_{r-1}) * 100

and the *expected* gain of the next round is the least-squares slope of accuracy against labels over
the last `window` + 1 measured rounds (same units). With `window=1` that is the last per-round gain;
with equal batches and `window=2` it is (acc_r - acc_{r-2}) / (labels_r - labels_{r-2}), the
label-weighted mean of the last two gains (for 3 equally spaced points the least-squares slope gives
the middle point zero weight). The slope smooths one noisy round without fitting a saturating curve:
a power law acc = a - b * n^-c needs 3 parameters from 4-6 noisy points and extrapolates wildly.
On a concave learning curve the recent slope *over*-states the next round's gain, so the rule errs
toward labelling one round too many, not one too few.

The band. Every statistic here is a linear contrast sum_i w_i * acc_i of accuracies measured on the
*same* test items, so it is resampled as a whole:

- per-item correctness known (`correct`, the active loop): a paired bootstrap over the test items
  (the same resampled items for every round's model). Items are exchangeable given their pattern of
  right/wrong across the rounds involved, so resampling n items is a multinomial draw over at most
  2^rounds patterns: exact, and cheap at any n. Consecutive models agree on most items, so this band
  is far narrower than treating the accuracies as independent.
- only accuracies and item counts known: a normal approximation treating the rounds' accuracies as
  independent binomials (variance sum_i w_i^2 p_i (1 - p_i) / n_i, with p_i = (correct + 1) / (n + 2) so
  a perfect score still has some spread). Ignoring the positive correlation between rounds makes the
  band wider than the paired one: conservative under the stopping rule below.

Either band covers test-set sampling only: a different training seed moves the curve too (the
active report's curve figure shows that spread over seeds).

The stopping rule (`stop_reason`): stop once the *upper* end of the expected gain's band is below
`min_gain`, i.e. even the optimistic reading says the next labels buy less than asked. Stopping on the
point estimate would stop on a noisy dip half the time the true gain sits at the threshold; on the
upper end (a `level`=0.9 band: a 95 % one-sided bound) a small test set simply keeps the loop going,
which is the honest answer when it cannot tell.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence

import numpy as np
import pandas as pd

from kibble import KibbleError

PER_100 = 100.0 * 100.0  # accuracy fraction per label -> accuracy points per 100 labels
GAIN_COLUMNS = ["gain_per_100_labels", "gain_low", "gain_high"]
EXPECTED_COLUMNS = ["expected_gain", "expected_gain_low", "expected_gain_high"]


@dataclass(frozen=True)
class Gain:
    """Accuracy points per 100 labels, its band [low, high] at `level`, and how the band was made."""

    value: float = float("nan")
    low: float = float("nan")
    high: float = float("nan")
    method: str = ""

    def text(self) -> str:
        return "n/a" if self.value != self.value else f"{self.value:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


NO_GAIN = Gain()


def check_settings(min_gain, window, level: float = 0.9) -> tuple[float | None, int, float]:
    """Validated (min_gain, window, level) of `stop.*`; a bad value is one KibbleError line."""
    try:
        min_gain = None if min_gain is None else float(min_gain)
        window_int, level = int(window), float(level)
    except (TypeError, ValueError):
        raise KibbleError(f"stop.min_gain={min_gain!r}, stop.window={window!r}, stop.level={level!r}: "
                          "expected a number (or null), an integer and a number") from None
    if min_gain is not None and not np.isfinite(min_gain):
        raise KibbleError(f"stop.min_gain={min_gain}; give accuracy points per 100 labels (e.g. 0.5) or null")
    if window_int != window or window_int < 1:
        raise KibbleError(f"stop.window={window!r}; it must be an integer >= 1 (rounds of gains averaged)")
    if not 0.0 < level < 1.0:
        raise KibbleError(f"stop.level={level}; it must be in (0, 1), e.g. 0.9")
    return min_gain, window_int, level


def _curve(n_labels, accuracy) -> tuple[np.ndarray, np.ndarray]:
    n = np.asarray(n_labels, dtype=np.float64)
    acc = np.asarray(accuracy, dtype=np.float64)
    if n.ndim != 1 or n.shape != acc.shape:
        raise KibbleError(f"n_labels and accuracy must be equal-length 1-D curves; got shapes {n.shape} and {acc.shape}")
    if len(n) > 1 and not (np.diff(n) > 0).all():
        i = int(np.argmax(~(np.diff(n) > 0)))
        raise KibbleError(f"n_labels must grow from round to round (a gain per label needs new labels); got {n[i]:g} then {n[i + 1]:g}")
    bad = ~np.isnan(acc) & ((acc < 0) | (acc > 1))
    if bad.any():
        raise KibbleError(f"accuracy must be a fraction in [0, 1] (NaN: not measured); got {acc[bad][0]:g}")
    return n, acc


def _correctness(correct, k: int) -> list[np.ndarray | None]:
    if correct is None:
        return [None] * k
    if len(correct) != k:
        raise KibbleError(f"correct has {len(correct)} rounds but the curve has {k}")
    rows, size = [], None
    for c in correct:
        if c is None:
            rows.append(None)
            continue
        a = np.asarray(c)
        if a.ndim != 1 or not np.isin(a, (0, 1)).all():
            raise KibbleError(f"correct must hold one 1-D 0/1 (right/wrong) array per round; got shape {a.shape}")
        if size is not None and len(a) != size:
            raise KibbleError(f"correct arrays must score the same test items; got {size} and {len(a)} items")
        size = len(a)
        rows.append(a.astype(bool))
    return rows


def slope_weights(n_labels) -> np.ndarray:
    """w with w @ accuracy = least-squares slope of accuracy on n_labels, in points per 100 labels."""
    x = np.asarray(n_labels, dtype=np.float64)
    centred = x - x.mean()
    ss = float(centred @ centred)
    if len(x) < 2 or ss == 0:
        raise KibbleError(f"a slope needs at least two different label counts; got {x.tolist()}")
    return centred / ss * PER_100


def contrast(weights, *, correct=None, accuracy=None, n_items=None, level: float = 0.9, n_boot: int = 2000, seed: int = 0) -> Gain:
    """sum_i weights[i] * accuracy_i with a `level` band.

    `correct`: an (m, n) 0/1 matrix, row i the per-item correctness behind accuracy_i, every row on the
    same n items (paired bootstrap, percentile band). Otherwise `accuracy` (m,) and `n_items` (m,)
    (independent-binomial normal approximation). Rows of several seeds can be stacked with weights
    divided by the number of seeds: the mean of their gains, resampled on shared items.
    """
    w = np.asarray(weights, dtype=np.float64)
    lo_q, hi_q = (1.0 - level) / 2.0, (1.0 + level) / 2.0
    if correct is not None:
        c = np.asarray(correct)
        if c.ndim != 2 or c.shape[0] != len(w) or c.shape[1] == 0 or not np.isin(c, (0, 1)).all():
            raise KibbleError(f"correct must be a (rounds, items) 0/1 matrix matching {len(w)} weights; got shape {c.shape}")
        patterns, counts = np.unique(c.astype(bool).T, axis=0, return_counts=True)
        per_item = patterns.astype(np.float64) @ w  # each pattern's contribution to the contrast
        n = int(c.shape[1])
        value = float(counts @ per_item / n)
        draws = np.random.default_rng(seed).multinomial(n, counts / n, size=int(n_boot)) @ per_item / n
        low, high = np.quantile(draws, [lo_q, hi_q])
        return Gain(value, float(min(low, value)), float(max(high, value)), "paired bootstrap over test items")
    if accuracy is None or n_items is None:
        raise KibbleError("a gain's band needs per-item correctness, or accuracies with their numbers of test items")
    p = np.asarray(accuracy, dtype=np.float64)
    n = np.asarray(n_items, dtype=np.float64)
    if p.shape != w.shape or n.shape != w.shape or (n < 1).any():
        raise KibbleError(f"accuracy and n_items must match {len(w)} weights with n_items >= 1; got {p.shape} and {n.tolist()}")
    value = float(w @ p)
    adj = (p * n + 1.0) / (n + 2.0)
    sd = float(np.sqrt(np.sum(w**2 * adj * (1.0 - adj) / n)))
    z = NormalDist().inv_cdf(hi_q)
    return Gain(value, value - z * sd, value + z * sd, "normal approximation, rounds independent")


def _sizes(n_items, k: int) -> np.ndarray | None:
    if n_items is None:
        return None
    sizes = np.asarray(n_items, dtype=np.float64)
    if sizes.ndim > 1 or (sizes.ndim == 1 and len(sizes) != k):
        raise KibbleError(f"n_items must be one count or one per round ({k}); got shape {sizes.shape}")
    return np.broadcast_to(sizes, (k,))


def round_gains(n_labels, accuracy=None, *, correct=None, n_items=None, level: float = 0.9, n_boot: int = 2000, seed: int = 0) -> list[Gain]:
    """One Gain per round (NO_GAIN for the first, and where either round has no accuracy).

    `accuracy` may be omitted when `correct` (one 0/1 array per round, None where unmeasured) is given;
    `n_items` (a count, or one per round) is needed only without `correct`."""
    n, acc, rows, sizes = _inputs(n_labels, accuracy, correct, n_items)
    out = [NO_GAIN]
    for r in range(1, len(n)):
        out.append(_window_gain(n, acc, rows, sizes, r - 1, r, level, n_boot, seed + r))
    return out[: len(n)]


def expected_gain(n_labels, accuracy=None, *, correct=None, n_items=None, window: int = 2, level: float = 0.9,
                  n_boot: int = 2000, seed: int = 0) -> Gain:
    """The next round's expected gain: the slope over the last `window` + 1 rounds (NO_GAIN if any of
    them has no accuracy, or there are fewer)."""
    n, acc, rows, sizes = _inputs(n_labels, accuracy, correct, n_items)
    _, window, level = check_settings(None, window, level)
    if len(n) < window + 1:
        return NO_GAIN
    return _window_gain(n, acc, rows, sizes, len(n) - 1 - window, len(n) - 1, level, n_boot, seed)


def _inputs(n_labels, accuracy, correct, n_items):
    """Validated (n_labels, accuracy, per-round correctness, per-round item counts); accuracy from correctness if absent."""
    if accuracy is None and correct is None:
        raise KibbleError("a gain needs accuracies or per-item correctness")
    rows = _correctness(correct, len(correct) if accuracy is None else len(accuracy))
    if accuracy is None:
        accuracy = [r.mean() if r is not None else np.nan for r in rows]
    n, acc = _curve(n_labels, accuracy)
    return n, acc, rows, _sizes(n_items, len(n))


def _window_gain(n, acc, rows, sizes, first: int, last: int, level, n_boot, seed) -> Gain:
    span = slice(first, last + 1)
    if np.isnan(acc[span]).any():
        return NO_GAIN
    w = slope_weights(n[span])
    if all(r is not None for r in rows[span]):
        return contrast(w, correct=np.stack(rows[span]), level=level, n_boot=n_boot, seed=seed)
    if sizes is None:
        raise KibbleError("a gain's band needs per-item correctness, or n_items (test items per round)")
    return contrast(w, accuracy=acc[span], n_items=sizes[span], level=level)


def stop_reason(expected: Gain, min_gain: float | None, window: int = 2) -> str | None:
    """Why to stop now, or None: the band's upper end is below `min_gain` (never without a band)."""
    if min_gain is None or not expected.high == expected.high:
        return None
    if expected.high < min_gain:
        return (f"expected gain {expected.text()} accuracy points per 100 labels over the last {window} round(s): "
                f"even the upper end is below stop.min_gain={min_gain:g}")
    return None


def pooled_gains(curves: pd.DataFrame, correct: dict, level: float = 0.9, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per (strategy, round): mean n_labels and accuracy over seeds, and the mean over seeds of the
    round's gain with a paired bootstrap band (all seeds' rows resampled on the same test items).

    `curves`: strategy, seed, round, n_labels, test_accuracy; `correct[(strategy, seed, round)]`: that
    model's 0/1 correctness on the test items (missing: the round had no model). Seeds that stopped
    early simply drop out of later rounds (`n_seeds` counts those measured)."""
    missing = [c for c in ("strategy", "seed", "round", "n_labels", "test_accuracy") if c not in curves.columns]
    if missing:
        raise KibbleError(f"pooled_gains needs learning-curve columns; missing {missing}")
    rows = []
    for (name, r), part in curves.groupby(["strategy", "round"], sort=True):
        row = {"strategy": name, "round": int(r), "n_labels": float(part["n_labels"].mean()),
               "accuracy": float(part["test_accuracy"].mean()), "n_seeds": int(part["seed"].nunique())}
        weights, stacked = [], []
        for seed_value in part["seed"]:
            prev = curves[(curves["strategy"] == name) & (curves["seed"] == seed_value) & (curves["round"] == r - 1)]
            now, before = correct.get((name, seed_value, r)), correct.get((name, seed_value, r - 1))
            if len(prev) and now is not None and before is not None:
                labels = float(part.loc[part["seed"] == seed_value, "n_labels"].iloc[0])
                weights.append(slope_weights([float(prev["n_labels"].iloc[0]), labels]))
                stacked += [before, now]
        gain = NO_GAIN
        if weights:
            w = np.concatenate(weights) / len(weights)
            gain = contrast(w, correct=np.stack(_correctness(stacked, len(stacked))), level=level, n_boot=n_boot, seed=seed + int(r))
        rows.append(row | dict(zip(GAIN_COLUMNS, (gain.value, gain.low, gain.high))))
    return pd.DataFrame(rows, columns=["strategy", "round", "n_labels", "accuracy", "n_seeds", *GAIN_COLUMNS])
