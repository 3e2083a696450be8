"""`kibble loop` end to end on noisy digits (features mode), and `kibble queue` standalone on its rounds.

The workspace points at the session digits workspace's images and the session feature cache (the
same key as tests/tasks/test_kfold.py), so effnet-lite0 embeds the images once per session.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import import_workspace
from kibble.config import compose_config
from kibble.data.classes import ClassList
from kibble.io import read_json
from kibble.paths import Workspace
from kibble.predictions.store import read_store
from kibble.tasks import kfold, loop
from kibble.tasks import queue as queue_task

ROUNDS = 2
METRIC_KEYS = ["round", "n_train", "queue_size", "queue_precision", "queue_recall", "noise_remaining", "oof_accuracy_given", "oof_accuracy_true"]


def loop_overrides(ws: Path, weights: Path, cache: Path) -> list[str]:
    return [
        f"workspace={ws}", "model=features_lite0", f"paths.effnet_lite0={weights}", "embedder.input_size=96", "embedder.num_workers=0",
        f"paths.cache_dir={cache}", "trainer.max_epochs=15", "logger=none", "cv=kfold3", "cv.progress=false", f"rounds={ROUNDS}",
    ]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file() and "cache" not in p.parts}


@pytest.fixture(scope="module")
def noisy_loop(digits_workspace: Path, effnet_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Digits with 20 % of the train labels flipped, cleaned by ROUNDS loop rounds."""
    root = tmp_path_factory.mktemp("loop")
    images = Workspace(digits_workspace).data_root.resolve()
    ws = import_workspace(root / "ws", ["inject_noise.rate=0.2", f"source.root={images}"])
    overrides = loop_overrides(ws, effnet_weights, tmp_path_factory.getbasetemp() / "kibble_feature_cache")
    result = loop.run(compose_config("loop", overrides, output_dir=root / "out"))
    return {"ws": ws, "result": result, "overrides": overrides, "root": root}


@pytest.mark.slow
def test_loop_cleans_noisy_digits(noisy_loop: dict):
    ws = Workspace(noisy_loop["ws"])
    summary = pd.read_csv(ws.root / "loop_summary.csv")
    assert summary["round"].tolist() == list(range(ROUNDS))
    assert ws.current_round() == ROUNDS
    assert summary.loc[0, "noise_before"] == pytest.approx(0.2, abs=0.01)
    noise = [summary.loc[0, "noise_before"], *summary["noise_remaining"]]
    assert all(b < a for a, b in zip(noise, noise[1:])), f"noise does not fall round over round: {noise}"
    # each round starts where the previous one ended
    np.testing.assert_allclose(summary["noise_before"].iloc[1:], summary["noise_remaining"].iloc[:-1])
    # the last value is the manifest's actual state
    manifest = pd.read_parquet(ws.manifest)
    train = manifest[manifest["split"] == "train"]
    assert summary["noise_remaining"].iloc[-1] == pytest.approx(float((train["label"] != train["true_label"]).mean()), abs=1e-9)

    for r in range(ROUNDS):
        round_dir = ws.round_dir(r)
        metrics = read_json(round_dir / "metrics.json")
        missing = [k for k in METRIC_KEYS if k not in metrics]
        assert not missing, f"rounds/{r:03d}/metrics.json lacks {missing}"
        assert metrics["round"] == r
        queue = pd.read_csv(round_dir / "queue.csv", dtype={"sample_id": str})
        assert metrics["queue_size"] == len(queue) > 0
        assert metrics["n_train"] == len(read_store(round_dir / "oof.parquet")[0])
        assert 0.5 <= metrics["queue_precision"] <= 1.0  # most of the queue really is mislabelled
        assert 0.0 < metrics["queue_recall"] <= 1.0
        assert metrics["noise_remaining"] == pytest.approx(summary.loc[r, "noise_remaining"])
        wall = metrics["wall_s"]  # seconds per step and in all, also in loop_summary.csv
        assert set(wall) == {"kfold", "queue", "annotate", "merge", "total"} and all(v > 0 for v in wall.values()), wall
        assert summary.loc[r, "wall_s"] == pytest.approx(wall["total"]) and summary.loc[r, "wall_s_queue"] == pytest.approx(wall["queue"])
        assert metrics["wrong_before"] - metrics["wrong_after"] == metrics["labels_fixed"] > 0
        assert metrics["oof_accuracy_true"] > metrics["oof_accuracy_given"]  # the model sees through the noise
        shipped = list(compose_config("loop", []).strategy.strategies)  # conf/strategy/default.yaml, chosen by the benchmark
        assert set(metrics["strategies"]) == set(shipped)
        for name, values in metrics["strategies"].items():
            for key in ("precision_at_budget", "recall_at_budget", "auprc"):
                assert 0.0 <= values[key] <= 1.0, (r, name, key, values[key])
        # a ranking well above chance (random ranking: AUPRC = the noise rate)
        assert metrics["strategies"][shipped[0]]["auprc"] > 2 * summary.loc[r, "noise_before"]
    # the simulated answers reached the label history
    events = pd.read_parquet(ws.label_events)
    assert set(events.loc[events["source"] == "simulated", "round"]) == set(range(ROUNDS))


@pytest.mark.slow
def test_finished_loop_does_nothing_new(noisy_loop: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    ws = Workspace(noisy_loop["ws"])
    before = snapshot(ws.root)
    calls = []
    monkeypatch.setattr(kfold, "run", lambda cfg: calls.append(cfg) or pytest.fail("a finished loop ran k-fold again"))
    result = loop.run(compose_config("loop", noisy_loop["overrides"], output_dir=tmp_path / "again"))
    assert calls == []
    assert [r["round"] for r in result["rounds"]] == list(range(ROUNDS))
    assert snapshot(ws.root) == before


@pytest.mark.slow
def test_queue_rebuilt_standalone(noisy_loop: dict, tmp_path: Path):
    ws = Workspace(shutil.copytree(noisy_loop["ws"], tmp_path / "ws", ignore=shutil.ignore_patterns("cache", "runs", "multiruns")))
    round_dir = ws.round_dir(0)
    for name in ("queue.csv", "queue.labelstudio.json", "labeling_config.xml"):
        (round_dir / name).unlink()
    cfg = compose_config("queue", [f"workspace={ws.root}", "round=0", "strategy=all", "strategy.budget=50"], output_dir=tmp_path / "out")
    result = queue_task.run(cfg)
    assert result["queue_size"] == 50
    queue = pd.read_csv(round_dir / "queue.csv", dtype={"sample_id": str})
    oof = pd.read_parquet(round_dir / "oof.parquet")
    assert len(queue) == 50 and queue["sample_id"].is_unique and queue["sample_id"].isin(oof["sample_id"]).all()
    assert queue["rank"].tolist() == list(range(1, 51)) and (queue["round"] == 0).all()
    assert set(queue["strategy"]) <= {"kfold", "self_confidence", "normalized_margin", "entropy", "precision", "confident_learning"}
    assert len(set(queue["strategy"])) >= 2  # the budget is shared
    # strategy=all trains precision models (mode=train) with the round's saved model config
    scores = pd.read_parquet(round_dir / "scores.parquet")
    assert scores["precision_flagged"].any() and any((round_dir / "precision").glob("without_*"))
    tasks = json.loads((round_dir / "queue.labelstudio.json").read_text())
    assert [t["data"]["sample_id"] for t in tasks] == queue["sample_id"].tolist()
    assert all(t["data"]["image"] for t in tasks)
    names = ClassList.load(ws.classes).names
    for task in tasks:
        for pred in task.get("predictions", []):
            for item in pred["result"]:
                assert item["type"] == "choices" and set(item["value"]["choices"]) <= set(names)
    xml = (round_dir / "labeling_config.xml").read_text()
    assert "<Choices" in xml and all(f'value="{n}"' in xml or f'alias="{n}"' in xml for n in names)  # the id: value, or alias beside a display name
