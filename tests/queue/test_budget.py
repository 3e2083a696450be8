"""One round budget split between relabelling and new labels; kind=new queues end to end through merge."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kibble import KibbleError
from kibble.data.classes import ClassList
from kibble.data.manifest import load_manifest
from kibble.paths import Workspace
from kibble.predictions.store import make_frame
from kibble.annotation.annotator import SimulatedAnnotator
from kibble.queue.budget import BudgetSplit, split_budget
from kibble.queue.callback import BuildQueue
from kibble.rounds import RoundContext
from kibble.labels.merge import merge_reviews


def test_split_budget_forms():
    assert split_budget(30, n_train=100, n_pool=50) == BudgetSplit(30, 0)               # a number: relabel only
    assert split_budget(0.1, n_train=100, n_pool=50) == BudgetSplit(10, 0)
    assert split_budget({"relabel": 5, "new": 20}, 100, 50) == BudgetSplit(5, 20)
    assert split_budget({"relabel": 0.1, "new": 0.5}, 100, 50) == BudgetSplit(10, 25)   # fractions of train / pool
    assert split_budget({"total": 40, "relabel": 0.25, "new": 0.75}, 100, 50) == BudgetSplit(10, 30)
    assert split_budget({"total": 40, "new": 1.0}, 100, 50).total == 40
    assert split_budget({"new": 50}, 100, 50) == BudgetSplit(0, 50)


@pytest.mark.parametrize("budget, message", [
    ({"relabel": 5, "new": 51}, "budget.new=51 is larger than the pool \\(50 unlabeled images\\)"),
    ({"total": 100, "new": 0.8}, "budget.new=80 is larger than the pool"),
    ({"total": 10, "relabel": 0.6, "new": 0.6}, "must sum to at most 1"),
    ({"total": 10, "relabel": 6, "new": 6}, "exceeds budget.total=10"),
    ({"relabel": 5, "neww": 3}, "unknown key\\(s\\) \\['neww'\\]"),
    ({"new": -1}, "budget.new=-1"),
])
def test_split_budget_bad_input(budget, message):
    with pytest.raises(KibbleError, match=message) as err:
        split_budget(budget, n_train=100, n_pool=50)
    assert "\n" not in str(err.value)


def round_context(ws: Path) -> RoundContext:
    """A round as `kibble kfold` hands it to callbacks, with seeded random OOF and pool probabilities."""
    workspace = Workspace(ws)
    classes = ClassList.load(workspace.classes)
    manifest = load_manifest(workspace.manifest, classes.names)
    rng = np.random.default_rng(0)
    train = manifest[manifest["split"] == "train"]
    others = manifest[manifest["split"].isin(["test", "pool"])]
    oof = make_frame(train["sample_id"].tolist(), rng.dirichlet(np.ones(10), len(train)).astype(np.float32), train["label"].tolist(), 0)
    preds = make_frame(others["sample_id"].tolist(), rng.dirichlet(np.ones(10) * 0.5, len(others)).astype(np.float32), others["label"].tolist(), 0)
    preds["split"] = others["split"].to_numpy()
    round_dir = workspace.round_dir(0)
    round_dir.mkdir(parents=True, exist_ok=True)
    return RoundContext(workspace, 0, round_dir, manifest, classes, oof, preds)


def test_one_budget_relabel_and_new_through_merge(pool_workspace: Path, tmp_path: Path):
    ws = tmp_path / "ws"
    shutil.copytree(pool_workspace, ws)
    ctx = round_context(ws)
    n_pool = int((ctx.manifest["split"] == "pool").sum())
    result = BuildQueue(strategies=["kfold", "self_confidence"], budget={"total": 30, "relabel": 0.2, "new": 0.8},
                        new_strategies=["margin", "entropy"])(ctx)
    assert result["queue_size"] == 30 and result["queue_new"] == 24 and result["queue_budget"] == 6
    queue = pd.read_csv(ctx.round_dir / "queue.csv", dtype={"sample_id": str, "given_label": str, "suggested_label": str})
    assert queue["kind"].value_counts().to_dict() == {"new": 24, "relabel": 6}
    assert queue["rank"].tolist() == list(range(1, 31)) and queue["queue_id"].is_unique
    new = queue[queue["kind"] == "new"]
    manifest = ctx.manifest.set_index("sample_id")
    assert (manifest.loc[new["sample_id"], "split"] == "pool").all() and new["given_label"].isna().all()
    assert set(new["strategy"]) == {"margin", "entropy"}
    # the model's guess is the argmax of the pool prediction, shown to Label Studio as a pre-annotation
    preds = ctx.predictions.set_index("sample_id")
    guess = [str(int(np.argmax(preds.loc[s, "probs"]))) for s in new["sample_id"]]
    assert new["suggested_label"].tolist() == guess
    tasks = json.loads((ctx.round_dir / "queue.labelstudio.json").read_text())
    new_tasks = [t for t in tasks if t["data"]["kind"] == "new"]
    assert len(new_tasks) == 24 and all(t["predictions"][0]["result"][0]["value"]["choices"] for t in new_tasks)
    # the simulated annotator labels them; merging moves the pool rows into train with their true label
    reviews = SimulatedAnnotator(seed=0).review(queue, ctx.manifest, ctx.classes.names)
    summary = merge_reviews(ws, reviews, source="simulated", round_index=0)
    assert summary["n_pool_labelled"] == 24
    after = pd.read_parquet(Path(ws) / "manifest.parquet").set_index("sample_id")
    moved = after.loc[new["sample_id"]]
    assert (moved["split"] == "train").all() and (moved["label"] == moved["true_label"]).all()
    assert int((after["split"] == "pool").sum()) == n_pool - 24
    assert after.loc[after["split"] == "pool", "label"].isna().all()


def test_budget_larger_than_the_pool_is_refused_before_writing(pool_workspace: Path, tmp_path: Path):
    ws = tmp_path / "ws"
    shutil.copytree(pool_workspace, ws)
    ctx = round_context(ws)
    n_pool = int((ctx.manifest["split"] == "pool").sum())
    with pytest.raises(KibbleError, match=f"budget.new={n_pool + 1} is larger than the pool \\({n_pool} unlabeled images\\)"):
        BuildQueue(budget={"relabel": 5, "new": n_pool + 1})(ctx)
    assert not (ctx.round_dir / "queue.csv").exists()
    with pytest.raises(KibbleError, match="unknown active-learning strategy 'marginn'"):
        BuildQueue(budget={"new": 5}, new_strategies=["marginn"])(ctx)
