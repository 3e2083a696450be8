"""A checkpoint written by `kibble train` reloads (load_from_checkpoint) into the same predictions,
for the full fine-tune and the features-mode head, without the original pretrained file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from helpers import TINY_TRAIN, compose_config
from kibble.models.classifier import ImageClassifier
from kibble.models.head import FeatureClassifier
from kibble.training.build import best_checkpoint, build_data_and_model, build_trainer, load_classifier, predict_rows, restore_best


def fit(cfg):
    """What `kibble train` does up to checkpoint selection; returns (dm, model, best checkpoint path)."""
    dm, model = build_data_and_model(cfg)
    trainer = build_trainer(cfg, cfg.paths.output_dir, has_val=len(dm.val_rows) > 0)  # as kibble train does
    trainer.fit(model, datamodule=dm)
    path = best_checkpoint(trainer)
    assert path and Path(path).is_file()
    restore_best(trainer, model)
    return dm, model.eval(), path


def test_image_classifier_reload_reproduces_predictions(fresh_digits_workspace: Path, tmp_path: Path):
    cfg = compose_config(
        "train",
        [f"workspace={fresh_digits_workspace}", "model=small", "data=digits", *TINY_TRAIN, "++trainer.limit_train_batches=3"],
        output_dir=tmp_path / "run",
    )
    dm, model, path = fit(cfg)
    rows = dm.test_rows.iloc[:100]
    before = predict_rows(model, dm, rows)

    reloaded = ImageClassifier.load_from_checkpoint(path, map_location="cpu").eval()
    assert reloaded.hparams.pretrained == "none"  # the checkpoint holds the weights
    assert reloaded.hparams.class_names == dm.class_names and reloaded.hparams.backbone == "resnet10t"
    after = predict_rows(reloaded, dm, rows)
    np.testing.assert_array_equal(before["probs"], after["probs"])
    np.testing.assert_array_equal(before["logits"], after["logits"])
    assert before["probs"].shape == (100, 10)

    generic = load_classifier(path)  # what `kibble predict` uses picks the right class
    assert isinstance(generic, ImageClassifier) and not generic.training


def test_feature_classifier_reload_reproduces_predictions(fresh_digits_workspace: Path, effnet_weights: Path, digits_feature_cache: Path, tmp_path: Path):
    shutil.copytree(digits_feature_cache, fresh_digits_workspace / "cache")  # embeddings computed once per session
    cfg = compose_config(
        "train",
        [
            f"workspace={fresh_digits_workspace}",
            "model=features_lite0",
            f"paths.effnet_lite0={effnet_weights}",
            "embedder.input_size=32",
            "embedder.num_workers=0",
            *TINY_TRAIN,
        ],
        output_dir=tmp_path / "run",
    )
    dm, model, path = fit(cfg)
    # training used the workspace's cache, keyed by backbone + weights + transform (no second entry)
    assert len(list((fresh_digits_workspace / "cache" / "features").glob("tf_efficientnet_lite0-*/features.npy"))) == 1
    rows = dm.test_rows
    before = predict_rows(model, dm, rows)

    assert isinstance(load_classifier(path), FeatureClassifier)
    reloaded = FeatureClassifier.load_from_checkpoint(path, map_location="cpu").eval()  # plain values: weights_only loads it
    assert reloaded.hparams.embedder["pretrained"] == str(effnet_weights)
    assert reloaded.hparams.embedder["input_size"] == 32
    assert torch.equal(reloaded.feature_mean, model.feature_mean) and torch.equal(reloaded.feature_std, model.feature_std)
    after = predict_rows(reloaded, dm, rows)
    np.testing.assert_array_equal(before["probs"], after["probs"])
    assert after["probs"].shape == (len(rows), 10)
