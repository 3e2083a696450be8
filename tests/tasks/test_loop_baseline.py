"""`kibble loop baseline=random` end to end on noisy digits: the random arm spends the main arm's budget in
its own copy (W/baselines/random/), never in W's label history; both arms and per-step wall times reported.

Same smallest setup as tests/tasks/test_loop.py (features mode, session feature cache, 3 folds, 2 rounds).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from helpers import import_workspace
from kibble.config import compose_config
from kibble.io import read_json
from kibble.paths import Workspace
from kibble.tasks import kfold, loop
from test_loop import ROUNDS, loop_overrides

STEPS = ("kfold", "queue", "annotate", "merge")


@pytest.fixture(scope="module")
def baseline_loop(digits_workspace: Path, effnet_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("loop_baseline")
    images = Workspace(digits_workspace).data_root.resolve()
    ws = import_workspace(root / "ws", ["inject_noise.rate=0.2", f"source.root={images}"])
    overrides = [*loop_overrides(ws, effnet_weights, tmp_path_factory.getbasetemp() / "kibble_feature_cache"), "baseline=random"]
    imported = pd.read_parquet(Workspace(ws).label_events)
    result = loop.run(compose_config("loop", overrides, output_dir=root / "out"))
    return {"ws": Workspace(ws), "arm": Workspace(ws / "baselines" / "random"), "result": result, "overrides": overrides, "imported": imported}


def _queue(round_dir: Path) -> pd.DataFrame:
    return pd.read_csv(round_dir / "queue.csv", dtype={"sample_id": str})


def _text(events: pd.DataFrame) -> pd.DataFrame:
    """Label events as text: the values, whatever string dtype a rewrite of the file gave a column."""
    return events.astype(object).where(events.notna(), "").astype(str).reset_index(drop=True)


def _simulated(ws: Workspace, r: int) -> set[str]:
    events = pd.read_parquet(ws.label_events)
    return set(events.loc[(events["source"] == "simulated") & (events["round"] == r), "sample_id"].astype(str))


@pytest.mark.slow
def test_random_arm_same_budget_own_history(baseline_loop: dict):
    ws, arm = baseline_loop["ws"], baseline_loop["arm"]
    assert ws.current_round() == arm.current_round() == ROUNDS
    state = arm.read_state()
    assert state["baseline"] == {"of": str(ws.root), "strategy": "random", "from_round": 0}
    assert arm.data_root.resolve() == ws.data_root.resolve()  # the images stay where they are
    for r in range(ROUNDS):
        main_q, arm_q = _queue(ws.round_dir(r)), _queue(arm.round_dir(r))
        assert len(arm_q) == len(main_q) > 0, f"round {r}: the random queue does not spend the main arm's budget"
        assert set(arm_q["strategy"]) == {"random"} and arm_q["queue_id"].str.startswith(f"r{r:03d}-").all()
        assert set(arm_q["sample_id"]) != set(main_q["sample_id"])
        # the real queue code path: same files, truth summary of the `random` strategy
        assert {"queue.labelstudio.json", "scores.parquet", "reviews.csv", "oof.parquet"} <= {p.name for p in arm.round_dir(r).iterdir()}
        arm_metrics = read_json(arm.round_dir(r) / "metrics.json")
        assert set(arm_metrics["strategies"]) == {"random"} and set(arm_metrics["truth"]["strategies"]) == {"random"}
        # each arm's answers went to its own label history only
        assert _simulated(ws, r) == set(main_q["sample_id"])
        assert _simulated(arm, r) == set(arm_q["sample_id"])
        main_metrics = read_json(ws.round_dir(r) / "metrics.json")
        assert main_metrics["baselines"]["random"]["queue_size"] == len(arm_q)
    # W's history: the import's events, then the main arm's answers, nothing else
    events = pd.read_parquet(ws.label_events)
    imported = baseline_loop["imported"]
    pd.testing.assert_frame_equal(_text(events.iloc[: len(imported)]), _text(imported))
    assert len(events) == len(imported) + sum(len(_queue(ws.round_dir(r))) for r in range(ROUNDS))


@pytest.mark.slow
def test_summary_shows_both_arms_and_wall_times(baseline_loop: dict):
    ws, arm = baseline_loop["ws"], baseline_loop["arm"]
    summary = pd.read_csv(ws.root / "loop_summary.csv")
    arm_summary = pd.read_csv(arm.root / "loop_summary.csv")
    assert summary["round"].tolist() == arm_summary["round"].tolist() == list(range(ROUNDS))
    assert (summary["random_queue_size"] == summary["queue_size"]).all()
    for col in ("queue_precision", "wrong_before", "wrong_after", "labels_fixed", "oof_accuracy_true", "wall_s"):
        assert summary[f"random_{col}"].tolist() == pytest.approx(arm_summary[col].tolist()), col
    assert summary.loc[0, "wrong_before"] == summary.loc[0, "random_wrong_before"] > 0  # the same starting labels
    # 20 % noise: the strategy's queue is mostly wrong labels, a random one mostly right ones
    assert summary.loc[0, "queue_precision"] > summary.loc[0, "random_queue_precision"]
    assert summary["labels_fixed"].sum() > summary["random_labels_fixed"].sum()
    assert [r["round"] for r in baseline_loop["result"]["rounds"]] == list(range(ROUNDS))
    for frame in (summary, arm_summary):
        for step in STEPS:
            assert (frame[f"wall_s_{step}"] > 0).all(), step
        assert (frame["wall_s"] >= frame[[f"wall_s_{s}" for s in STEPS]].sum(axis=1) - 1e-6).all()
    for w in (ws, arm):
        for r in range(ROUNDS):
            wall = read_json(w.round_dir(r) / "metrics.json")["wall_s"]
            assert set(wall) == {*STEPS, "total"} and all(wall[k] > 0 for k in wall), wall
    assert "random_queue_precision" in (ws.round_dir(ROUNDS - 1) / "report.html").read_text()


@pytest.mark.slow
def test_finished_baseline_loop_does_nothing_new(baseline_loop: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    ws = baseline_loop["ws"]
    events = pd.read_parquet(ws.label_events)
    arm_events = pd.read_parquet(baseline_loop["arm"].label_events)
    monkeypatch.setattr(kfold, "run", lambda cfg: pytest.fail("a finished loop ran k-fold again"))
    result = loop.run(compose_config("loop", baseline_loop["overrides"], output_dir=tmp_path / "again"))
    assert [r["round"] for r in result["rounds"]] == list(range(ROUNDS))
    assert result["rounds"][0]["random_queue_size"] == result["rounds"][0]["queue_size"]
    pd.testing.assert_frame_equal(_text(pd.read_parquet(ws.label_events)), _text(events))
    pd.testing.assert_frame_equal(_text(pd.read_parquet(baseline_loop["arm"].label_events)), _text(arm_events))
