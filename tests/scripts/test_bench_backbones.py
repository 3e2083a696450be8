"""scripts/bench_backbones.py's rule: the cheapest backbone within 1 % of the best on every dev setting, and the
shipped queue ranking scored as the config builds it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench_backbones as bb  # noqa: E402

from kibble.benchmarks.cleaning_arms import Inputs  # noqa: E402
from kibble.benchmarks.imagewoof_cleaning import DEV_SETTINGS  # noqa: E402


def table(scores: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"setting": s, "seed": seed, "ranking": name, "family": "backbone", "AUPRC": v + 0.001 * seed}
                         for name, values in scores.items() for s, v in zip(DEV_SETTINGS, values) for seed in (0, 1)])


@pytest.mark.parametrize("scores, expected", [
    ({"lite0": [0.955, 0.985, 0.935], "lite1": [0.958, 0.988, 0.938], "lite2": [0.96, 0.99, 0.94]}, "lite0"),  # within 1 %: the cheapest
    ({"lite0": [0.95, 0.98, 0.90], "lite1": [0.955, 0.985, 0.935], "lite2": [0.96, 0.99, 0.94]}, "lite1"),  # lite0 4 % off on one setting
    ({"lite0": [0.90, 0.90, 0.90], "lite1": [0.92, 0.92, 0.92], "lite2": [0.95, 0.95, 0.95]}, "lite2"),  # only the best qualifies
])
def test_pick_is_the_cheapest_within_one_percent_everywhere(scores, expected):
    chosen, worst = bb.pick(table(scores), list(scores))
    assert chosen == expected and worst[chosen] >= bb.WITHIN


def test_pick_skips_a_cheap_backbone_that_was_not_run():
    chosen, _ = bb.pick(table({"lite1": [0.90, 0.90, 0.90], "lite2": [0.95, 0.95, 0.95]}), ["lite1", "lite2"])
    assert chosen == "lite2"


def test_pick_falls_back_to_the_best_worst_case_when_none_is_within_one_percent_everywhere():
    scores = {"lite0": [0.80, 0.80, 0.80], "lite1": [0.96, 0.94, 0.94], "lite2": [0.945, 0.96, 0.96]}  # each ~2 % behind somewhere
    chosen, worst = bb.pick(table(scores), list(scores))
    assert (worst < bb.WITHIN).all() and chosen == "lite2" and worst["lite2"] > worst["lite1"]


def test_shipped_ranking_follows_the_config():
    from kibble.strategies.cleaning import combine

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    probs = rng.dirichlet(np.ones(3), 60)
    emb = rng.normal(size=(60, 4)).astype(np.float32)
    inputs = Inputs(labels, probs, emb)
    combined = {"strategies": ["combine"], "params": {"combine": {"parts": ["normalized_margin", "neighbors"], "weights": [2.0, 1.0]}}}
    want = combine([inputs.strategy("normalized_margin"), inputs.strategy("neighbors")], [2.0, 1.0])
    np.testing.assert_allclose(bb.shipped_ranking(inputs, combined).score, want.score)
    single = bb.shipped_ranking(inputs, {"strategies": ["self_confidence"], "params": None})
    np.testing.assert_allclose(single.score, inputs.strategy("self_confidence").score)
    with pytest.raises(SystemExit, match="mixes"):
        bb.shipped_ranking(inputs, {"strategies": ["kfold", "self_confidence"], "params": None})
