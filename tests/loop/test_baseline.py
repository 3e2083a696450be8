"""The random-queue baseline arm's pieces without training: the `random` strategy, the arm's copy of W,
the budget it takes from the main queue, its round config, the side-by-side summary and the curves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kibble import KibbleError
from kibble.config import compose_config
from kibble.loop.baseline import (baseline_round_config, check_baseline, main_queue_budget, open_baseline, side_by_side)
from kibble.loop.clean_round import StepClock
from kibble.paths import Workspace
from kibble.queue.builder import build_queue
from kibble.report.plots import loop_curves_figure
from kibble.strategies.registry import run_strategy


def _probs(n: int = 50, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return np.arange(n) % k, rng.dirichlet(np.ones(k), size=n)


def test_random_strategy_is_a_seeded_uniform_queue():
    labels, probs = _probs()
    a, b, c = (run_strategy("random", labels, probs, seed=s) for s in (3, 3, 4))
    np.testing.assert_array_equal(a.score, b.score)
    assert not np.array_equal(a.score, c.score)
    assert a.flagged.all() and (a.suggested == probs.argmax(1)).all()  # the model's guess, as beside any queued image
    np.testing.assert_array_equal(run_strategy("random", labels, probs, validated=True, seed=3).score, a.score)
    ids = [f"s{i:03d}" for i in range(len(labels))]
    queue = build_queue(ids, [str(x) for x in labels], {"random": a}, ["0", "1", "2"], 10, suppress={"s000", "s001"})
    assert len(queue) == 10 and not {"s000", "s001"} & set(queue["sample_id"]) and set(queue["strategy"]) == {"random"}
    # uniform: over many seeds every row is picked about budget / N of the time
    counts = np.zeros(len(labels))
    for seed in range(400):
        counts[np.argsort(-run_strategy("random", labels, probs, seed=seed).score)[:10]] += 1
    assert counts.min() > 40 and counts.max() < 125  # expected 80 each


def test_check_baseline():
    assert check_baseline(None) is None and check_baseline("random") == "random"
    with pytest.raises(KibbleError, match="random"):
        check_baseline("margin")


def _workspace(root: Path, data_root: str) -> Workspace:
    root.mkdir(parents=True)
    pd.DataFrame({"sample_id": ["a"], "label": ["x"]}).to_parquet(root / "manifest.parquet")
    pd.DataFrame({"sample_id": ["a"], "source": ["import"]}).to_parquet(root / "label_events.parquet")
    (root / "classes.yaml").write_text("names: [x]\n")
    (root / "policy.yaml").write_text("vote: majority\n")
    (root / "loop_summary.csv").write_text("round\n0\n")
    (root / "state.json").write_text(json.dumps({"round": 2, "data_root": data_root, "other": 1}))
    (root / "rounds" / "000").mkdir(parents=True)
    return Workspace(root)


@pytest.mark.parametrize("data_root", ["images", "ABS"])
def test_open_baseline_copies_the_label_state_once(tmp_path: Path, data_root: str):
    images = tmp_path / "shared_images"
    ws = _workspace(tmp_path / "ws", str(images) if data_root == "ABS" else data_root)
    before = {p.name: p.read_bytes() for p in ws.root.iterdir() if p.is_file()}
    arm = open_baseline(ws, "random")
    assert arm.root == ws.root / "baselines" / "random"
    assert {p.name for p in arm.root.iterdir()} == {"manifest.parquet", "label_events.parquet", "classes.yaml", "policy.yaml", "state.json"}
    state = arm.read_state()
    assert state["round"] == 2 and state["other"] == 1
    assert state["baseline"] == {"of": str(ws.root), "strategy": "random", "from_round": 2}
    assert arm.data_root.resolve() == ws.data_root.resolve()
    assert arm.feature_root_id == ws.feature_root_id == (str(images) if data_root == "ABS" else "images")  # W's feature-cache entry
    assert Path(state["data_root"]).is_absolute() == (data_root == "ABS")  # a relative root stays relative: W moves as one
    assert not list((ws.root / "baselines").glob(".*"))  # no staging folder left
    assert {p.name: p.read_bytes() for p in ws.root.iterdir() if p.is_file()} == before  # W untouched
    # a second run reuses the arm as it stands
    arm.update_state(round=3)
    assert open_baseline(ws, "random").current_round() == 3
    (ws.root / "baselines" / "other").mkdir()
    (ws.root / "baselines" / "other" / "x.txt").write_text("")
    with pytest.raises(KibbleError, match="no manifest"):
        open_baseline(ws, "other")


def test_main_queue_budget_leaves_gold_out(tmp_path: Path):
    round_dir = tmp_path / "rounds" / "000"
    round_dir.mkdir(parents=True)
    pd.DataFrame({"sample_id": ["a", "b", "c", "d", "e"], "given_label": "x", "suggested_label": "y",
                  "kind": ["relabel", "relabel", "relabel", "new", "relabel"]}).to_csv(round_dir / "queue.csv", index=False)
    pd.DataFrame({"queue_id": ["q"], "round": [0], "sample_id": ["e"], "gold_label": ["x"], "origin": ["expert"]}).to_csv(round_dir / "gold.csv", index=False)
    assert main_queue_budget(round_dir) == {"relabel": 3, "new": 1}
    with pytest.raises(KibbleError, match="no queue"):
        main_queue_budget(tmp_path / "rounds" / "001")


def test_baseline_round_config(tmp_path: Path):
    cfg = compose_config("loop", [f"workspace={tmp_path / 'ws'}", "seed=5", "strategy.quotas={combine: 1.0}"], output_dir=tmp_path / "out")
    arm = Workspace(tmp_path / "ws" / "baselines" / "random")
    out = baseline_round_config(cfg, arm, "random", {"relabel": 7, "new": 0}, 2)
    queue = out.round_callbacks.queue
    assert list(queue.strategies) == ["random"] and queue.budget == 7 and queue.quotas is None
    assert dict(queue.params) == {"random": {"seed": 7}}
    assert out.workspace == str(arm.root) and out.data.workspace == str(arm.root)
    assert out.paths.cache_dir == str(tmp_path / "ws" / "cache")  # W's feature cache
    assert cfg.workspace == str(tmp_path / "ws") and list(cfg.round_callbacks.queue.strategies) == ["combine"]  # the main config as it was
    with_new = baseline_round_config(cfg, arm, "random", {"relabel": 7, "new": 3}, 0).round_callbacks.queue
    assert dict(with_new.budget) == {"relabel": 7, "new": 3} and list(with_new.new_strategies) == ["random"]


def test_side_by_side_and_curves():
    rows = [{"round": r, "queue_size": 10, "queue_precision": 0.9, "noise_remaining": 0.1 / (r + 1), "random_queue_precision": -1.0} for r in range(3)]
    arm = [{"round": r, "queue_size": 10, "queue_precision": 0.2, "noise_remaining": 0.18, "wall_s": 1.5, "n_train": 9} for r in range(2)]
    table = side_by_side(rows, arm, "random")
    assert table["random_queue_precision"].tolist()[:2] == [0.2, 0.2] and np.isnan(table["random_queue_precision"].iloc[2])
    assert "random_n_train" not in table and table["random_wall_s"].iloc[0] == 1.5
    assert side_by_side(rows, [], "random").columns.tolist() == ["round", "queue_size", "queue_precision", "noise_remaining"]
    fig = loop_curves_figure(table)
    assert [len(ax.get_lines()) for ax in fig.axes] == [2, 2]  # each curve beside its random arm's


def test_step_clock():
    clock = StepClock()
    clock.lap("kfold")
    clock.lap("merge")
    wall = clock.result()
    assert list(wall) == ["kfold", "queue", "annotate", "merge", "total"] and wall["queue"] == 0.0
    assert wall["total"] >= wall["kfold"] + wall["merge"] - 1e-3
