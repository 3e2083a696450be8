"""Benchmark arms: every family's repertoire runs on one OOF, and a kibble arm's config rebuilds the same ranking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kibble.benchmarks.cleaning_arms import CLEANLAB, KIBBLE, Inputs, all_arms, kibble_arms, queue_ranking, score_arms
from kibble.data.classes import ClassList
from kibble.paths import Workspace
from kibble.queue.callback import BuildQueue
from kibble.rounds import RoundContext
from kibble.strategies.base import StrategyOutput


def _oof(n=400, k=4, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    emb = 3 * np.eye(k)[truth] + rng.standard_normal((n, k))
    labels = truth.copy()
    flip = rng.random(n) < 0.2
    labels[flip] = (truth[flip] + rng.integers(1, k, flip.sum())) % k
    p = np.exp(2 * emb)
    return labels, p / p.sum(1, keepdims=True), emb, labels != truth


def test_every_arm_runs_and_beats_random():
    labels, probs, emb, noisy = _oof()
    rows = pd.DataFrame(score_arms(all_arms(), Inputs(labels, probs, emb), noisy)).set_index("ranking")
    assert rows["family"].value_counts()[CLEANLAB] >= 20  # the full cleanlab repertoire
    assert rows.loc["random", "AUPRC"] < 0.35
    for name in ("normalized_margin", "cleanlab get_label_quality_scores(self_confidence)", "cleanlab Datalab label issues (OOF pred_probs)"):
        assert rows.loc[name, "AUPRC"] > 0.6
    same = rows.loc["self_confidence", "AUPRC"], rows.loc["cleanlab get_label_quality_scores(self_confidence)", "AUPRC"]
    assert same[0] == pytest.approx(same[1])  # the same score, so the same ranking


def test_queue_ranking_follows_build_queue_order():
    a = StrategyOutput(np.array([0.9, 0.1, 0.5, 0.2]), np.zeros(4, int), np.array([True, False, True, False]))
    b = StrategyOutput(np.array([0.0, 0.8, 0.1, 0.3]), np.zeros(4, int), np.array([False, True, False, True]))
    out = queue_ranking({"a": a, "b": b})
    assert out.flagged.all()
    assert list(np.argsort(-out.score)) == [0, 1, 2, 3]  # a's best, b's best, a's next, b's next


@pytest.mark.parametrize("arm", [a for a in kibble_arms() if a.config["strategies"][0] in ("combine", "normalized_margin")], ids=lambda a: a.name)
def test_kibble_arm_config_rebuilds_its_ranking_in_the_queue(arm, tmp_path):
    labels, probs, emb, _ = _oof(n=120)
    names = ["a", "b", "c", "d"]
    ids = [f"s{i:03d}" for i in range(len(labels))]
    given = [names[i] for i in labels]
    oof = pd.DataFrame({"sample_id": ids, "fold": 0, "given_label": given, "probs": list(probs.astype(np.float32)),
                        "embedding": list(emb.astype(np.float32))})
    manifest = pd.DataFrame({"sample_id": ids, "path": ids, "label": given, "split": "train"})
    ws = Workspace(tmp_path / "ws")
    ws.round_dir(0).mkdir(parents=True)
    ctx = RoundContext(ws, 0, ws.round_dir(0), manifest, ClassList.from_names(names), oof)
    cfg = arm.config
    outputs = BuildQueue(strategies=cfg["strategies"], quotas=cfg["quotas"], params=cfg["params"]).score(ctx)
    expected = arm.run(Inputs(labels, probs.astype(np.float32).astype(np.float64), emb.astype(np.float32)))
    np.testing.assert_allclose(outputs[cfg["strategies"][0]].score, expected.score, rtol=1e-5)
    assert arm.family == KIBBLE
