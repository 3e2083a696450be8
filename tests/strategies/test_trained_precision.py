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
        f"workspace={ws.root}", "model=features_lite0", f"paths.effnet_lite0={effnet_weights}", "embedder.input_size=32",
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


def test_cap_and_expected_cost_are_stated_before_training(tmp_path, caplog):
    """max_classes caps the models (lowest precision first) and the cost estimate comes from the folds' fit time."""
    import json
    import logging

    import numpy as np
    from omegaconf import OmegaConf

    from kibble.data.classes import ClassList
    from kibble.rounds import RoundContext
    from kibble.strategies.trained import expected_fit_seconds, trained_precision

    ws = Workspace(tmp_path / "ws")
    round_dir = ws.round_dir(0)
    round_dir.mkdir(parents=True)
    (round_dir / "metrics.json").write_text(json.dumps({"fold_costs": [{"fit_seconds": 10.0}, {"fit_seconds": 20.0}]}))
    assert expected_fit_seconds(round_dir) == 15.0
    n = 90
    labels = np.arange(n) % 3
    probs = np.full((n, 3), 0.1)
    probs[np.arange(n), (labels + 1) % 3] = 0.8  # every class has OOF precision 0
    ids = [f"s{i}" for i in range(n)]
    oof = pd.DataFrame({"sample_id": ids, "fold": 0, "given_label": [str(v) for v in labels], "probs": list(probs.astype(np.float32))})
    manifest = pd.DataFrame({"sample_id": ids, "path": ids, "label": [str(v) for v in labels], "split": "train"})
    cfg = OmegaConf.create({"model": {}, "trainer": {}, "seed": 0})
    ctx = RoundContext(ws, 0, round_dir, manifest, ClassList.from_names(["0", "1", "2"]), oof, cfg=cfg)
    with caplog.at_level(logging.INFO, logger="kibble.strategies.trained"):
        out = trained_precision(ctx, max_classes=0)
    assert not out.flagged.any()
    assert "3 low-precision classes, training for the 0 lowest" in caplog.text
