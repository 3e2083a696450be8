"""`strategy=active`'s new-label queue with the embedding strategies that read the round's OOF:
atl_uncertainty learns the fold models' errors from the OOF; typiclust / probcover / atl_representative
skip what the train rows already cover."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import import_workspace
from kibble import KibbleError
from kibble.data.classes import ClassList
from kibble.data.manifest import load_manifest
from kibble.paths import Workspace
from kibble.predictions.store import make_frame
from kibble.queue.callback import BuildQueue
from kibble.rounds import RoundContext

WRONG = "3"  # the fold models confuse every 3 with an 8, in the OOF and on the pool alike


@pytest.fixture(scope="module")
def pool_workspace(digits_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("new_label_strategies") / "ws"
    shutil.copytree(digits_workspace, ws, ignore=shutil.ignore_patterns("runs", "multiruns", "cache", "rounds"))
    return import_workspace(ws, ["overwrite=true", "pool.fraction=0.8"])


def round_context(ws: Path, with_embeddings: bool = True) -> RoundContext:
    """OOF (train) and pool predictions of a model that is right, and confident, except on every 3;
    embeddings: a class direction plus noise (what a good backbone gives)."""
    workspace = Workspace(ws)
    classes = ClassList.load(workspace.classes)
    manifest = load_manifest(workspace.manifest, classes.names)
    rng = np.random.default_rng(0)

    def predictions(rows: pd.DataFrame, truth: pd.Series):
        y = np.array([classes.index[t] for t in truth])
        guess = np.where(truth.to_numpy() == WRONG, classes.index["8"], y)
        probs = np.full((len(rows), 10), 0.02, dtype=np.float32)
        probs[np.arange(len(rows)), guess] = 0.82
        emb = np.eye(10)[y] * 3 + rng.normal(size=(len(rows), 10))
        return probs, (emb if with_embeddings else None)

    train = manifest[manifest["split"] == "train"]
    pool = manifest[manifest["split"] == "pool"]
    oof_probs, oof_emb = predictions(train, train["label"])
    oof = make_frame(train["sample_id"].tolist(), oof_probs, train["label"].tolist(), 0, embeddings=oof_emb)
    probs, emb = predictions(pool, pool["true_label"])
    preds = make_frame(pool["sample_id"].tolist(), probs, [None] * len(pool), 0, embeddings=emb)
    preds["split"] = "pool"
    round_dir = workspace.round_dir(0)
    round_dir.mkdir(parents=True, exist_ok=True)
    return RoundContext(workspace, 0, round_dir, manifest, classes, oof, preds)


def test_atl_uncertainty_queues_the_pool_images_the_fold_models_get_wrong(pool_workspace: Path, tmp_path: Path):
    ws = tmp_path / "ws"
    shutil.copytree(pool_workspace, ws)
    ctx = round_context(ws)
    BuildQueue(strategies=["kfold"], budget={"relabel": 0, "new": 30}, new_strategies=["atl_uncertainty", "margin"])(ctx)
    queue = pd.read_csv(ctx.round_dir / "queue.csv", dtype={"sample_id": str})
    truth = ctx.manifest.set_index("sample_id")["true_label"]
    atl = queue[queue["strategy"] == "atl_uncertainty"]
    assert len(atl) == 15 and (truth.loc[atl["sample_id"]] == WRONG).all()  # every pick a 3, all confidently mislabelled by the model
    margin = queue[queue["strategy"] == "margin"]
    assert (truth.loc[margin["sample_id"]] == WRONG).mean() < 0.5  # equal margins everywhere: uncertainty cannot see it


@pytest.mark.parametrize("name", ["typiclust", "probcover", "atl_representative"])
def test_cold_start_and_representative_strategies_fill_the_new_label_budget(pool_workspace: Path, tmp_path: Path, name: str):
    ws = tmp_path / "ws"
    shutil.copytree(pool_workspace, ws)
    ctx = round_context(ws)
    BuildQueue(strategies=["kfold"], budget={"relabel": 0, "new": 10}, new_strategies=[name])(ctx)
    queue = pd.read_csv(ctx.round_dir / "queue.csv", dtype={"sample_id": str})
    assert len(queue) == 10 and (queue["kind"] == "new").all() and (queue["strategy"] == name).all()
    assert queue["suggested_label"].notna().all()  # a model exists: its guess is the pre-annotation
    # the train rows' OOF embeddings are the labelled side: the queue is the strategy's batch given them
    from kibble.predictions.store import stack
    from kibble.strategies.active_registry import run_active

    def batch(labelled):
        out = run_active(name, stack(ctx.predictions), embeddings=stack(ctx.predictions, "embedding"), labelled_embeddings=labelled,
                         batch_size=10, seed=0)
        return set(ctx.predictions["sample_id"].to_numpy()[np.argsort(-out.score)[:10]])

    assert set(queue["sample_id"]) == batch(ctx.embeddings()) != batch(None)


def test_without_oof_embeddings_the_embedding_strategies_say_so(pool_workspace: Path, tmp_path: Path):
    ws = tmp_path / "ws"
    shutil.copytree(pool_workspace, ws)
    ctx = round_context(ws, with_embeddings=False)
    with pytest.raises(KibbleError, match="'atl_uncertainty' needs pool embeddings"):
        BuildQueue(strategies=["kfold"], budget={"relabel": 0, "new": 10}, new_strategies=["atl_uncertainty"])(ctx)
