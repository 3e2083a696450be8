"""Every round's queue reports what it found when the manifest knows the true labels (issue 17, item 5)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from kibble.data.classes import ClassList
from kibble.paths import Workspace
from kibble.queue.callback import BuildQueue
from kibble.rounds import RoundContext

CLASSES = ["a", "b", "c"]


def _ctx(tmp_path, with_truth: bool):
    rng = np.random.default_rng(0)
    n = 150
    truth = np.arange(n) % 3
    given = truth.copy()
    wrong = np.arange(n) < 30
    given[wrong] = (truth[wrong] + 1) % 3
    probs = np.full((n, 3), 0.05)
    probs[np.arange(n), truth] = 0.9  # the model sees through the 30 wrong labels
    probs = (probs + 0.01 * rng.random((n, 3))).astype(np.float32)
    probs /= probs.sum(1, keepdims=True)
    ids = [f"s{i:03d}" for i in range(n)]
    oof = pd.DataFrame({"sample_id": ids, "fold": 0, "given_label": [CLASSES[i] for i in given], "probs": list(probs)})
    manifest = pd.DataFrame({"sample_id": ids, "path": ids, "label": [CLASSES[i] for i in given], "split": "train"})
    if with_truth:
        manifest["true_label"] = [CLASSES[i] for i in truth]
        manifest.loc[140:, "true_label"] = None  # some rows without a known truth are left out
    ws = Workspace(tmp_path / "ws")
    ws.round_dir(0).mkdir(parents=True)
    return RoundContext(ws, 0, ws.round_dir(0), manifest, ClassList.from_names(CLASSES), oof)


def test_queue_reports_precision_recall_and_strategy_auprc_with_truth(tmp_path):
    ctx = _ctx(tmp_path, with_truth=True)
    result = BuildQueue(strategies=["kfold", "self_confidence"], budget=40)(ctx)
    truth = json.loads((ctx.round_dir / "metrics.json").read_text())["truth"]
    assert truth["n_with_true_label"] == 140 and truth["noisy_in_train"] == 30
    assert truth["queue_recall"] == 1.0 and abs(truth["queue_precision"] - 30 / 40) < 1e-9
    assert set(truth["strategies"]) == {"kfold", "self_confidence"} and truth["strategies"]["kfold"]["auprc"] > 0.99
    assert result["truth"]["queue_precision"] == truth["queue_precision"]


def test_no_truth_no_report(tmp_path):
    ctx = _ctx(tmp_path, with_truth=False)
    BuildQueue(strategies=["kfold"], budget=10)(ctx)
    assert "truth" not in json.loads((ctx.round_dir / "metrics.json").read_text())
