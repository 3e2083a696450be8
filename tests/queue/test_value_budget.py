"""budget.split=value: relabel vs new labels by expected value, calibrated on earlier rounds' reviews."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kibble import KibbleError
from kibble.annotation.annotator import SimulatedAnnotator
from kibble.data.classes import ClassList
from kibble.data.manifest import load_manifest
from kibble.labels.merge import merge_reviews
from kibble.paths import Workspace
from kibble.predictions.store import make_frame
from kibble.queue.budget import BudgetSplit, split_budget
from kibble.queue.callback import BuildQueue
from kibble.queue.value_budget import (choose_split, correction_calibration, correction_probability, learning_slope, new_label_worth,
                                       split_by_value, value_settings)
from kibble.rounds import RoundContext, update_round_metrics


def test_choose_split_takes_the_best_values_on_either_side_ties_to_relabelling():
    assert choose_split([2.0, 1.5, 0.2], [1.2, 1.0, 0.9], 4) == (2, 2)
    assert choose_split([1.0, 1.0], [1.0, 1.0], 3) == (2, 1)  # equal worth: relabelling first
    assert choose_split([0.1], [1.0, 0.9, 0.8], 3) == (0, 3)
    assert choose_split([2.0, 2.0], [0.1], 5) == (2, 1)  # short lists: everything there is
    assert choose_split([], [], 5) == (0, 0)


def test_calibration_is_increasing_per_strategy_with_the_overall_rate_as_fallback():
    rng = np.random.default_rng(0)
    score = rng.uniform(0, 1, 400)
    corrected = (rng.uniform(0, 1, 400) < score).astype(float)  # P(wrong label) = the score, by construction
    fits = correction_calibration(["self_confidence"] * 400, score, corrected)
    grid = np.linspace(0, 1, 11)
    p = correction_probability(fits, ["self_confidence"] * 11, grid)
    assert (np.diff(p) >= 0).all() and p[0] < 0.2 and p[-1] > 0.8
    other = correction_probability(fits, ["neighbors"] * 3, [0.0, 0.5, 1.0])  # no reviews of its own: the overall rate
    assert np.allclose(other, corrected.mean())
    one = correction_calibration(["kfold"] * 3, [1.0, 1.0, 1.0], [1.0, 0.0, 1.0])  # a single score value: its mean rate
    assert correction_probability(one, ["kfold"], [0.3])[0] == pytest.approx(2 / 3)


def test_new_label_worth_and_learning_slope():
    w = new_label_worth(["margin", "margin", "typiclust"], [0.5, 0.05, 7.0], {"margin": 0.1, "typiclust": 0.5}, cap=3.0)
    assert w.tolist() == [3.0, 0.5, 1.0]  # 5x the pool mean capped at 3; half the mean; not an uncertainty: 1
    assert new_label_worth(["margin", "typiclust"], [0.5, 7.0], {"margin": 0.1}, cap=0.5).tolist() == [0.5, 0.5]  # the cap binds all
    n = np.array([100, 200, 400, 800])
    assert learning_slope(n, 0.5 + 0.1 * np.log(n)) == pytest.approx(0.1 / 800)
    assert learning_slope([100, 200], [0.9, 0.8]) == 0.0  # a falling curve buys nothing, not a negative gain
    assert learning_slope([100, 100], [0.8, 0.9]) is None


@pytest.mark.parametrize("budget, message", [
    ({"split": "valu", "total": 10}, "budget.split='valu'; use fixed"),
    ({"split": "value", "relabel": 5, "new": 5}, "set budget.total to a count"),
    ({"split": "value", "total": 10, "value": {"min_review": 3}}, r"unknown key\(s\) \['min_review'\]"),
    ({"split": "value", "total": 10, "value": {"wrong_label_cost": -1}}, "wrong_label_cost=-1"),
])
def test_value_settings_bad_input(budget, message):
    with pytest.raises(KibbleError, match=message):
        value_settings(budget)
    with pytest.raises(KibbleError, match=message):
        BuildQueue(budget=budget)  # before the round trains


def test_value_mode_falls_back_to_half_and_half_and_split_by_value_explains_itself():
    assert value_settings({"relabel": 5}) is None and value_settings({"total": 4, "split": "fixed"}) is None
    assert split_budget({"total": 40, "split": "value"}, 100, 50) == BudgetSplit(20, 20)
    # counts (conf/strategy/active.yaml's relabel: 0.05, new: 100) are not shares of the total: half and half
    assert split_budget({"total": 200, "relabel": 0.05, "new": 100, "split": "value"}, 1000, 5000) == BudgetSplit(100, 100)
    assert split_budget({"total": 300, "relabel": 0.2, "new": 0.8, "split": "value"}, 1000, 5000) == BudgetSplit(60, 240)
    # a drained pool: new labels only as many as it holds, the rest relabelling (no error)
    assert split_budget({"total": 200, "split": "value"}, 1000, 50) == BudgetSplit(150, 50)
    assert split_budget({"total": 200, "split": "value"}, 1000, 0) == BudgetSplit(200, 0)
    outcomes = pd.DataFrame({"strategy": ["self_confidence"] * 4, "score": [0.1, 0.2, 0.8, 0.9], "corrected": [0.0, 0.0, 1.0, 1.0]})
    relabel = pd.DataFrame({"strategy": ["self_confidence"] * 3, "score": [0.95, 0.85, 0.15]})
    new = pd.DataFrame({"strategy": ["margin"] * 3, "score": [0.3, 0.2, 0.1]})
    curve = pd.DataFrame({"n_labels": [100, 200], "accuracy": [0.80, 0.85]})
    chosen = split_by_value(relabel, new, 4, {"wrong_label_cost": 1.0, "max_new_worth": 3.0}, outcomes, {"margin": 0.2}, curve)
    assert (chosen.relabel, chosen.new) == (2, 2)  # two wrong labels (worth 2 each), then the two most uncertain new images (1.5, 1)
    assert chosen.info["expected_gain"] == pytest.approx(0.05 / np.log(2) / 200 * (2 + 2 + 1.5 + 1.0))
    assert chosen.info["why"].startswith("split by value: 2 relabel + 2 new. Past reviews corrected 50% of 4 relabel items;")


def noisy_round(ws: Path, round_index: int, rng: np.random.Generator) -> RoundContext:
    """A round of the workspace as it stands: wrong train labels get a low probability on their given label."""
    workspace = Workspace(ws)
    classes = ClassList.load(workspace.classes)
    manifest = load_manifest(workspace.manifest, classes.names)
    train = manifest[manifest["split"] == "train"]
    given = train["label"].map(classes.index).to_numpy()
    wrong = (train["label"] != train["true_label"]).to_numpy()
    p_given = np.where(wrong, rng.uniform(0.02, 0.5, len(train)), rng.uniform(0.3, 0.99, len(train)))
    truth = train["true_label"].map(classes.index).to_numpy()
    other = np.where(wrong, truth, (given + 1) % 10)
    probs = np.zeros((len(train), 10))
    probs[np.arange(len(train)), given] = p_given
    probs[np.arange(len(train)), other] += 1 - p_given
    oof = make_frame(train["sample_id"].tolist(), probs.astype(np.float32), train["label"].tolist(), 0)
    pool = manifest[manifest["split"] == "pool"]
    preds = make_frame(pool["sample_id"].tolist(), rng.dirichlet(np.ones(10) * 0.5, len(pool)).astype(np.float32), [None] * len(pool), 0)
    preds["split"] = "pool"
    round_dir = workspace.round_dir(round_index)
    round_dir.mkdir(parents=True, exist_ok=True)
    update_round_metrics(round_dir, {"n_oof": len(train), "oof_accuracy_given": 0.80 + 0.01 * round_index})  # as OOFSummary records it
    return RoundContext(workspace, round_index, round_dir, manifest, classes, oof, preds)


def test_a_value_split_gives_relabelling_what_past_reviews_say_it_is_worth(pool_workspace: Path, tmp_path: Path):
    ws = tmp_path / "ws"
    shutil.copytree(pool_workspace, ws)
    manifest = pd.read_parquet(ws / "manifest.parquet")
    train = manifest.index[manifest["split"] == "train"][:60]  # 60 wrong labels among the train rows
    manifest.loc[train, "true_label"] = manifest.loc[train, "label"]
    manifest.loc[train, "label"] = ((manifest.loc[train, "label"].astype(int) + 3) % 10).astype(str)
    manifest.to_parquet(ws / "manifest.parquet")
    rng, annotator = np.random.default_rng(0), SimulatedAnnotator(seed=0)
    budget = {"total": 40, "split": "value", "relabel": 0.5, "new": 0.5, "value": {"min_reviews": 10}}
    queue_step = BuildQueue(strategies=["self_confidence"], budget=budget, new_strategies=["margin"], data_issues={"checks": []})

    ctx = noisy_round(ws, 0, rng)
    first = queue_step(ctx)["budget_split"]
    assert first["mode"] == "fixed" and (first["relabel"], first["new"]) == (20, 20)
    assert "0 answered relabel items, fewer than value.min_reviews=10" in first["why"]
    queue = pd.read_csv(ctx.round_dir / "queue.csv", dtype=str)
    merge_reviews(ws, annotator.review(queue, ctx.manifest, ctx.classes.names), source="simulated", round_index=0)

    ctx = noisy_round(ws, 1, rng)
    second = queue_step(ctx)["budget_split"]
    metrics = json.loads((ctx.round_dir / "metrics.json").read_text())
    assert metrics["budget_split"] == second and second["mode"] == "value" and second["reviews_calibrated_on"] == 20
    queue = pd.read_csv(ctx.round_dir / "queue.csv", dtype=str)
    kinds = queue["kind"].value_counts().to_dict()
    assert second["relabel"] + second["new"] == 40 and kinds == {k: v for k, v in (("relabel", second["relabel"]), ("new", second["new"])) if v}
    # 40+ wrong labels left, each worth ~2 new labels once calibrated: relabelling takes most of the budget, and what it queues is wrong
    assert second["relabel"] >= 25, second
    relabel = ctx.manifest.set_index("sample_id").loc[queue.loc[queue["kind"] == "relabel", "sample_id"]]
    assert (relabel["label"] != relabel["true_label"]).mean() >= 0.5  # 5x the share of wrong labels left (~13 %)
    merge_reviews(ws, annotator.review(queue, ctx.manifest, ctx.classes.names), source="simulated", round_index=1)

    # every label fixed by hand: the calibrated chance of a wrong label is small everywhere, so new labels win
    manifest = pd.read_parquet(ws / "manifest.parquet")
    manifest["label"] = manifest["label"].where(manifest["split"] != "train", manifest["true_label"])
    manifest.to_parquet(ws / "manifest.parquet")
    ctx = noisy_round(ws, 2, rng)
    third = queue_step(ctx)["budget_split"]
    assert third["mode"] == "value" and third["new"] >= 30, third
    assert third["gain_per_label"] > 0 and "Learning curve: +" in third["why"]  # rounds 0 and 1 recorded (n_oof, accuracy)
    from kibble.report.round import summary_sections

    body = summary_sections(Workspace(ws), ctx.round_dir, ctx.classes)[0].body
    assert f"Budget split: split by value: {third['relabel']} relabel + {third['new']} new." in body


def test_past_outcomes_match_answers_by_queue_id_else_by_round_and_sample(tmp_path: Path):
    from kibble.queue.value_budget import past_outcomes

    round_dir = tmp_path / "000"
    round_dir.mkdir()
    pd.DataFrame({"queue_id": ["q-a", "q-b", "q-c", "q-d", "q-e"], "round": 0, "sample_id": ["a", "b", "c", "d", "e"],
                  "score": [0.9, 0.8, 0.7, 0.6, 0.5], "strategy": "self_confidence",
                  "kind": ["relabel", "relabel", "relabel", "new", "relabel"]}).to_csv(round_dir / "queue.csv", index=False)
    events = pd.DataFrame({
        "sample_id": ["a", "a", "b", "c", "d", "e"], "queue_id": ["q-a", "q-a", None, "q-c", "q-d", "q-e"],
        "verdict": ["confirmed", "corrected", "corrected", "ambiguous", "corrected", "confirmed"],
        "source": ["simulated", "simulated", "review", "review", "review", "import"], "round": [0, 0, 0, 0, 0, 0]})
    out = past_outcomes([round_dir, tmp_path / "001"], events)
    # a: its last answer; b: no queue id, matched by round + sample; c: ambiguous; d: a new label; e: not a human answer
    assert out.to_dict("list") == {"strategy": ["self_confidence"] * 2, "score": [0.9, 0.8], "corrected": [1.0, 1.0]}
    # a gold row copies a real row's strategy and score; it was queued for being known, so it does not calibrate
    pd.DataFrame({"queue_id": ["q-b"], "round": [0], "sample_id": ["b"], "gold_label": ["x"], "origin": ["list"]}).to_csv(round_dir / "gold.csv", index=False)
    assert past_outcomes([round_dir], events)["score"].tolist() == [0.9]
