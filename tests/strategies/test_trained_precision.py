"""Precision cleaning with training: a model that never saw class A tells which A-labelled images are B."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from kibble.data.manifest import load_manifest, save_manifest
from kibble.paths import Workspace
from kibble.tasks import kfold


@pytest.mark.slow
def test_trained_precision_surfaces_b_images_labelled_a(fresh_digits_workspace, digits_feature_cache, effnet_weights, compose):
    ws = Workspace(fresh_digits_workspace)
    shutil.copytree(digits_feature_cache, ws.cache, dirs_exist_ok=True)
    manifest = load_manifest(ws.manifest)
    eights = manifest.index[(manifest["split"] == "train") & (manifest["label"] == "8")][:25]
    planted = set(manifest.loc[eights, "sample_id"])
    manifest.loc[eights, "label"] = "3"  # 25 eights mislabelled as three
    save_manifest(manifest, ws.manifest)

    cfg = compose("kfold", [
        f"workspace={ws.root}", "model=features", f"paths.effnet_lite0={effnet_weights}", "embedder.input_size=32",
        "embedder.num_workers=0", "cv=kfold3", "trainer.max_epochs=15", "cv.progress=false",
        "strategy.strategies=[precision]", "+strategy.params.precision.mode=train",
        "+strategy.params.precision.classes=['3']", "strategy.budget=25",
    ])
    kfold.run(cfg)

    scores = pd.read_parquet(ws.round_dir(0) / "scores.parquet")
    labelled_three = set(manifest.loc[(manifest["split"] == "train") & (manifest["label"] == "3"), "sample_id"])
    flagged = set(scores.loc[scores["precision_flagged"], "sample_id"])
    assert flagged == labelled_three  # exactly the images labelled A are scored
    queue = pd.read_csv(ws.round_dir(0) / "queue.csv", dtype=str)
    hits = queue["sample_id"].isin(planted)
    chance = len(planted) / len(labelled_three)  # ~0.18: a random pick among the images labelled "3"
    assert hits.mean() >= max(0.5, 2.5 * chance), f"only {hits.sum()} of the top 25 are planted eights"
    assert (queue.loc[hits, "suggested_label"] == "8").mean() >= 0.8
    # the model trained without "3" left its files apart from the folds
    assert (ws.round_dir(0) / "precision" / "without_3").is_dir()
