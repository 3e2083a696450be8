"""One round's budget split between relabelling and new labels by expected value (`budget.split=value`).

The model behind the split, stated so that it can be argued with:

- A classifier's accuracy grows with its *effective* number of clean labels, n_eff = n_right - lam * n_wrong,
  where lam (`value.wrong_label_cost`, default 1) is how much one wrong label undoes: at 1 a wrong label
  cancels a right one. The earlier rounds' learning curve (accuracy against training labels, fitted as
  a + b ln n) gives g, the accuracy one more effective label buys now.
- Relabelling item i is worth (1 + lam) * p_i * g: with probability p_i its label is wrong and the reviewer
  corrects it, turning a -lam into a +1. p_i is the item's cleaning score *calibrated on earlier rounds'
  review outcomes*: an isotonic regression of "corrected" (vs "confirmed") on the score of the strategy that
  queued it, per strategy (a strategy without reviewed items of its own gets the overall correction rate).
  Reviews only cover the top of a ranking, so below the lowest reviewed score the fit falls linearly to 0
  at the lowest score that strategy gave any row in those rounds (scores.parquet), instead of keeping the
  lowest reviewed item's rate all the way down: a queue that was all wrong labels must not make every
  row look wrong.
- A new label j is worth w_j * g: a pool image drawn at random adds one label (w = 1); an uncertainty pick
  adds w_j = its score / the pool's mean score of that strategy (an image twice as uncertain as the average
  teaches about twice as much), capped at `value.max_new_worth`. Strategies whose score is not an
  uncertainty (typiclust, kmeans, ...) count w = 1. Annotators' own errors on new labels are ignored.

Both sides scale with g, so *which* items win depends on p, lam and w only; g turns the chosen queue into an
expected accuracy gain, reported beside the split. The budget goes to the highest values on either side
(ties to relabelling: a corrected label also cleans the data set). Before `value.min_reviews` relabel
items have been answered there is nothing to calibrate p on, and the fixed shares (`budget.relabel`,
`budget.new`) are used; the round's metrics.json (`budget_split`) and log say which, and why.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kibble import KibbleError

log = logging.getLogger(__name__)

VALUE_KEYS = ("wrong_label_cost", "min_reviews", "max_new_worth")
DEFAULTS = {"wrong_label_cost": 1.0, "min_reviews": 20, "max_new_worth": 3.0}
UNCERTAINTY_SCORES = ("least_confidence", "margin", "ratio", "entropy")  # scores whose ratio to the pool mean means "more uncertain"
ACCURACY_KEYS = ("test_accuracy", "oof_accuracy_true", "oof_accuracy_given")  # a round's accuracy for the learning curve, best first


def value_settings(budget: Mapping | None) -> dict[str, Any] | None:
    """The value mode's settings when `budget.split=value` (else None); bad settings fail in one line."""
    if not isinstance(budget, Mapping) or budget.get("split", "fixed") == "fixed":
        return None
    if budget.get("split") != "value":
        raise KibbleError(f"budget.split={budget.get('split')!r}; use fixed (the shares as given) or value (split by expected value)")
    total = budget.get("total")
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise KibbleError(f"budget.split=value divides one total between relabelling and new labels; set budget.total to a count (got {total!r})")
    given = dict(budget.get("value") or {})
    unknown = sorted(set(given) - set(VALUE_KEYS))
    if unknown:
        raise KibbleError(f"budget.value has unknown key(s) {unknown}; use {list(VALUE_KEYS)}")
    settings = {**DEFAULTS, **given}
    for key, low in (("wrong_label_cost", 0.0), ("max_new_worth", 0.0)):
        if isinstance(settings[key], bool) or not isinstance(settings[key], (int, float)) or settings[key] < low:
            raise KibbleError(f"budget.value.{key}={settings[key]!r}; give a number >= {low:g}")
    if isinstance(settings["min_reviews"], bool) or not isinstance(settings["min_reviews"], int) or settings["min_reviews"] < 1:
        raise KibbleError(f"budget.value.min_reviews={settings['min_reviews']!r}; give a whole number >= 1")
    return settings


def correction_calibration(strategies, scores, corrected, floors: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Per strategy, P(corrected | score) from reviewed relabel items: an increasing isotonic fit (a higher
    cleaning score never means a smaller chance of a wrong label); key None holds the overall rate.
    floors: per strategy the lowest score it gave any row; below its lowest reviewed score the fit then
    falls linearly to 0 there (one pseudo-item, "not corrected", at the floor)."""
    from sklearn.isotonic import IsotonicRegression

    strategies = np.asarray(strategies, dtype=object)
    scores, corrected = np.asarray(scores, dtype=np.float64), np.asarray(corrected, dtype=np.float64)
    if not (len(strategies) == len(scores) == len(corrected)):
        raise KibbleError(f"calibration: {len(strategies)} strategies, {len(scores)} scores, {len(corrected)} outcomes; one each per reviewed item")
    fits: dict[Any, Any] = {None: float(corrected.mean()) if len(corrected) else float("nan")}
    for name in pd.unique(strategies):
        mine = strategies == name
        x, y = scores[mine], corrected[mine]
        floor = (floors or {}).get(name)
        if floor is not None and np.isfinite(floor) and floor < x.min():
            x, y = np.append(x, floor), np.append(y, 0.0)
        if len(np.unique(x)) < 2:  # one score value: its mean rate is all there is
            fits[name] = float(y.mean())
            continue
        fits[name] = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(x, y)
    return fits


def correction_probability(fits: Mapping[Any, Any], strategies, scores) -> np.ndarray:
    """Each candidate's calibrated chance of a correction (its strategy's fit, else the overall rate)."""
    strategies, scores = np.asarray(strategies, dtype=object), np.asarray(scores, dtype=np.float64)
    p = np.full(len(scores), fits[None], dtype=np.float64)
    for name in pd.unique(strategies):
        fit, mine = fits.get(name), strategies == name
        if fit is not None:
            p[mine] = fit if isinstance(fit, float) else fit.predict(scores[mine])
    return p


def new_label_worth(strategies, scores, pool_mean: Mapping[str, float], cap: float) -> np.ndarray:
    """w_j: a new label's worth in labels (score / the pool's mean score for uncertainty strategies, else 1)."""
    strategies, scores = np.asarray(strategies, dtype=object), np.asarray(scores, dtype=np.float64)
    w = np.full(len(scores), min(1.0, float(cap)))
    for name in pd.unique(strategies):
        mean = pool_mean.get(name)
        if name in UNCERTAINTY_SCORES and mean is not None and mean > 0:
            mine = strategies == name
            w[mine] = np.minimum(scores[mine] / mean, cap)
    return w


def learning_slope(n_labels, accuracy) -> float | None:
    """Accuracy gained by one more label at the latest label count, from acc = a + b ln n over earlier rounds
    (least squares); None with fewer than two distinct label counts. A falling curve gives 0, not a negative gain."""
    n, acc = np.asarray(n_labels, dtype=np.float64), np.asarray(accuracy, dtype=np.float64)
    keep = (n > 0) & np.isfinite(acc)
    n, acc = n[keep], acc[keep]
    if len(np.unique(n)) < 2:
        return None
    b = np.polyfit(np.log(n), acc, 1)[0]
    return float(max(b, 0.0) / n.max())


def choose_split(relabel_values, new_values, total: int) -> tuple[int, int]:
    """(relabel items, new items): the `total` highest values over both candidate lists (each sorted best
    first, as the queues rank them), ties to relabelling. A short list leaves its share to the other."""
    relabel_values, new_values = np.asarray(relabel_values, dtype=np.float64), np.asarray(new_values, dtype=np.float64)
    values = np.concatenate([relabel_values, new_values])
    side = np.concatenate([np.zeros(len(relabel_values), dtype=bool), np.ones(len(new_values), dtype=bool)])
    top = np.lexsort((side, -values))[: int(total)]  # by value, relabel first among equals
    n_new = int(side[top].sum())
    return len(top) - n_new, n_new


@dataclass(frozen=True)
class ValueSplit:
    relabel: int
    new: int
    info: dict[str, Any]


def split_by_value(relabel: pd.DataFrame, new: pd.DataFrame, total: int, settings: Mapping[str, Any], outcomes: pd.DataFrame,
                   pool_mean: Mapping[str, float], curve: pd.DataFrame, floors: Mapping[str, float] | None = None) -> ValueSplit:
    """The split for this round's candidates (`relabel`, `new`: queue rows with `strategy` and `score`).
    outcomes: earlier reviewed relabel items (strategy, score, corrected); curve: earlier rounds' (n_labels, accuracy);
    floors: each strategy's lowest score in those rounds (see correction_calibration)."""
    if not len(outcomes):
        raise KibbleError("split_by_value: no reviewed relabel items to calibrate on; use the fixed shares")
    lam = float(settings["wrong_label_cost"])
    fits = correction_calibration(outcomes["strategy"], outcomes["score"], outcomes["corrected"], floors)
    p = correction_probability(fits, relabel["strategy"], relabel["score"])
    w = new_label_worth(new["strategy"], new["score"], pool_mean, float(settings["max_new_worth"]))
    relabel_value, new_value = (1 + lam) * p, w
    # each list in value order (a queue's own rank interleaves strategies); the split takes its top items
    n_relabel, n_new = choose_split(np.sort(relabel_value)[::-1], np.sort(new_value)[::-1], total)
    g = learning_slope(curve["n_labels"], curve["accuracy"]) if len(curve) else None
    kept_p, kept_w = np.sort(p)[::-1][:n_relabel], np.sort(w)[::-1][:n_new]
    info = {
        "mode": "value", "relabel": n_relabel, "new": n_new, "wrong_label_cost": lam, "reviews_calibrated_on": int(len(outcomes)),
        "past_correction_rate": float(fits[None]),
        "relabel_p_corrected_mean": float(kept_p.mean()) if n_relabel else None,
        "relabel_p_corrected_last": float(kept_p[-1]) if n_relabel else None,
        "new_worth_mean": float(kept_w.mean()) if n_new else None,
        "gain_per_label": g,
        "expected_gain": None if g is None else float(g * ((1 + lam) * kept_p.sum() + kept_w.sum())),
    }
    info["why"] = explain(info)
    return ValueSplit(n_relabel, n_new, info)


def explain(info: Mapping[str, Any]) -> str:
    """One sentence a user can check: what each side was worth where the split fell."""
    lam = info["wrong_label_cost"]
    text = (f"split by value: {info['relabel']} relabel + {info['new']} new. Past reviews corrected "
            f"{info['past_correction_rate']:.0%} of {info['reviews_calibrated_on']} relabel items; ")
    if info["relabel"]:
        text += (f"the queued relabel items are wrong with calibrated p = {info['relabel_p_corrected_mean']:.2f} on average "
                 f"(the last {info['relabel_p_corrected_last']:.2f}, worth {(1 + lam) * info['relabel_p_corrected_last']:.2f} new labels "
                 f"at wrong_label_cost={lam:g}); ")
    else:
        text += f"no relabel item reached the worth of a new label (p x {1 + lam:g} < the new items' worth); "
    text += (f"a queued new label is worth {info['new_worth_mean']:.2f} labels on average." if info["new"] else "no new label was worth more.")
    if info["gain_per_label"] is not None:
        text += f" Learning curve: +{100 * info['gain_per_label']:.3f} accuracy points per label now; expected gain {100 * info['expected_gain']:.2f} points."
    return text


def past_outcomes(round_dirs: list[Path], events: pd.DataFrame) -> pd.DataFrame:
    """Earlier rounds' relabel queue items that a human confirmed or corrected: (strategy, score, corrected).

    Queue rows are matched to answers by queue_id (the id every answer from a kibble queue carries back),
    else by round and sample_id (a reviews file without queue ids); the last answer wins. Gold rows (gold.csv)
    are left out: they copy a real row's strategy and score but were picked for being known, not for the score."""
    from kibble.annotation.gold import load_gold
    from kibble.queue.builder import HUMAN_SOURCES

    columns = ["strategy", "score", "corrected"]
    if events is None or events.empty:
        return pd.DataFrame(columns=columns)
    answers = events[events["source"].isin(HUMAN_SOURCES) & events["verdict"].isin(["confirmed", "corrected"])]
    by_id = answers[answers["queue_id"].notna()].drop_duplicates("queue_id", keep="last").set_index("queue_id")["verdict"]
    plain = answers[answers["queue_id"].isna()]
    by_sample = plain.assign(key=plain["round"].astype(str) + "/" + plain["sample_id"].astype(str)).drop_duplicates("key", keep="last")
    by_sample = by_sample.set_index("key")["verdict"]
    parts = []
    for round_dir in round_dirs:
        path = round_dir / "queue.csv"
        if not path.is_file():
            continue
        queue = pd.read_csv(path, usecols=lambda c: c in ("queue_id", "round", "sample_id", "strategy", "score", "kind"),
                            dtype={"queue_id": str, "sample_id": str, "strategy": str})
        if "kind" in queue.columns:
            queue = queue[queue["kind"].fillna("relabel") == "relabel"]
        gold = load_gold([round_dir])
        if len(gold):
            queue = queue[~queue["queue_id"].isin(gold["queue_id"].astype(str))]
        verdict = queue["queue_id"].map(by_id)
        if len(by_sample) and "round" in queue.columns:
            verdict = verdict.fillna((queue["round"].astype(str) + "/" + queue["sample_id"]).map(by_sample))
        keep = verdict.notna().to_numpy()
        parts.append(pd.DataFrame({"strategy": queue["strategy"].to_numpy(dtype=object)[keep], "score": queue["score"].to_numpy(dtype=np.float64)[keep],
                                   "corrected": (verdict.to_numpy(dtype=object)[keep] == "corrected").astype(np.float64)}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def past_curve(round_dirs: list[Path]) -> pd.DataFrame:
    """(n_labels, accuracy) of earlier rounds from their metrics.json: training rows and the best accuracy
    the round recorded (test, else OOF vs the truth, else OOF vs the given labels; one kind for all rounds)."""
    metrics = []
    for round_dir in round_dirs:
        path = round_dir / "metrics.json"
        if path.is_file():
            metrics.append(json.loads(path.read_text()))
    for key in ACCURACY_KEYS:
        rows = [(m["n_oof"], m[key]) for m in metrics if key in m and "n_oof" in m]
        if len(rows) == len(metrics) and rows:
            return pd.DataFrame(rows, columns=["n_labels", "accuracy"]).assign(source=key)
    return pd.DataFrame(columns=["n_labels", "accuracy", "source"])


def past_score_floors(round_dirs: list[Path]) -> dict[str, float]:
    """Per strategy, the lowest score it gave any row in the earlier rounds (their scores.parquet)."""
    import pyarrow.parquet as pq

    floors: dict[str, float] = {}
    for round_dir in round_dirs:
        path = round_dir / "scores.parquet"
        if not path.is_file():
            continue
        columns = [c for c in pq.read_schema(path).names if c.endswith("_score")]
        for column, values in pd.read_parquet(path, columns=columns).items():
            name, low = column[: -len("_score")], float(np.nanmin(values.to_numpy(dtype=np.float64))) if len(values) else np.inf
            floors[name] = min(floors.get(name, np.inf), low)
    return floors
