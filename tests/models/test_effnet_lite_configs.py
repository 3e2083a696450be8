"""`model=effnet_lite0|1|2` (fine-tune) and `model=features_lite0|features_lite1|features_lite2` (features mode;
plain `model=features` is lite1):
each picks its backbone and its converted offline weights (paths.effnet_liteN), features mode embeds at the
variant's native resolution with mean = std = 0.5, and every backbone / resolution gets its own feature cache."""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import pytest
import torch

from helpers import TINY_TRAIN, compose_config, import_workspace
from kibble.data.features import Embedder
from kibble.tasks import kfold, train

NATIVE = {"lite0": 224, "lite1": 240, "lite2": 260}
FEATURES_MODEL = {"lite0": "features_lite0", "lite1": "features_lite1", "lite2": "features_lite2"}


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_finetune_config_picks_the_variant_and_its_offline_weights(variant: str, tmp_path: Path):
    cfg = compose_config("train", [f"workspace={tmp_path / 'ws'}", f"model=effnet_{variant}"], output_dir=tmp_path / "out")
    assert cfg.model._target_ == "kibble.models.classifier.ImageClassifier"
    assert cfg.model.backbone == f"tf_efficientnet_{variant}"
    assert cfg.model.pretrained == cfg.paths[f"effnet_{variant}"]
    assert Path(cfg.model.pretrained).name == f"tf_efficientnet_{variant}.pth"
    assert cfg.model.input_size is None  # timm's native size of the variant
    assert cfg.embedder is None


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_features_config_embeds_at_native_size_with_half_normalisation(variant: str, effnet_lite_weights, tmp_path: Path):
    weights = effnet_lite_weights(variant)
    cfg = compose_config("kfold", [f"workspace={tmp_path / 'ws'}", f"model={FEATURES_MODEL[variant]}", f"paths.effnet_{variant}={weights}"],
                         output_dir=tmp_path / "out")
    assert cfg.model._target_ == "kibble.models.head.FeatureClassifier"
    assert cfg.data._target_ == "kibble.data.datamodule.FeatureDataModule"
    assert cfg.embedder.backbone == f"tf_efficientnet_{variant}" and cfg.embedder.pretrained == str(weights)
    embedder = hydra.utils.instantiate(cfg.embedder)
    size = NATIVE[variant]
    assert embedder.data_config["input_size"] == (3, size, size)
    assert embedder.data_config["mean"] == embedder.data_config["std"] == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("model, variant", [("features", "lite1"), ("features_lite1", "lite1"), ("features_lite0", "lite0")])
def test_features_defaults_to_lite1_and_features_lite0_picks_lite0(model: str, variant: str, tmp_path: Path):
    cfg = compose_config("kfold", [f"workspace={tmp_path / 'ws'}", f"model={model}"], output_dir=tmp_path / "out")
    assert cfg.embedder.backbone == f"tf_efficientnet_{variant}"
    assert cfg.embedder.pretrained == cfg.paths[f"effnet_{variant}"]
    assert Path(cfg.embedder.pretrained).name == f"tf_efficientnet_{variant}.pth"


def test_feature_cache_key_differs_per_backbone_and_resolution(effnet_lite_weights):
    def key(variant: str, size: int | None = None) -> str:
        return Embedder(f"tf_efficientnet_{variant}", str(effnet_lite_weights(variant)), input_size=size).cache_key("/images")

    keys = {(v, s): key(v, s) for v in NATIVE for s in (None, 260)}
    assert keys[("lite2", None)] == keys[("lite2", 260)]  # 260 px is lite2's native size
    assert len(set(keys.values())) == len(keys) - 1  # everything else is its own cache
    assert all(k.startswith(f"tf_efficientnet_{v}-") for (v, _), k in keys.items())


@pytest.fixture
def dogs_workspace(stanford_dogs_tree, tmp_path: Path) -> Path:
    """3 breeds x 10 noise images (enough that each fold keeps an inner validation row for early stopping)."""
    return import_workspace(tmp_path / "dogs", ["source=stanford_dogs", f"source.root={stanford_dogs_tree(per_breed=10)}"])


def test_kfold_in_features_mode_with_lite2(dogs_workspace: Path, effnet_lite_weights, tmp_path: Path):
    """`kibble kfold model=features_lite2`: 1280-d lite2 embeddings cached under lite2's key, an OOF row per train image
    (32 px here to stay fast; the default is lite2's native 260 px)."""
    cache = tmp_path / "cache"
    cfg = compose_config("kfold", [
        f"workspace={dogs_workspace}", "model=features_lite2", f"paths.effnet_lite2={effnet_lite_weights('lite2')}",
        "embedder.input_size=32", "embedder.num_workers=0", f"paths.cache_dir={cache}", "cv.n_folds=2", "cv.progress=false",
        "trainer.max_epochs=1", "logger=none", "round_callbacks.report=null",
    ], output_dir=tmp_path / "kfold")
    result = kfold.run(cfg)
    folders = list((cache / "features").iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("tf_efficientnet_lite2-")
    matrix = np.load(folders[0] / "features.npy")
    assert matrix.shape == (30, 1280) and np.isfinite(matrix).all()  # every image of the workspace, embedded once
    oof = pd.read_parquet(result["oof"])
    train = pd.read_parquet(dogs_workspace / "manifest.parquet").query("split == 'train'")
    assert sorted(oof["sample_id"]) == sorted(train["sample_id"])


def test_finetune_with_lite1_starts_from_the_offline_weights(dogs_workspace: Path, effnet_lite_weights, tmp_path: Path):
    weights = effnet_lite_weights("lite1")
    cfg = compose_config("train", [
        f"workspace={dogs_workspace}", "model=effnet_lite1", f"paths.effnet_lite1={weights}",
        "model.input_size=32", "data.batch_size=4", *TINY_TRAIN,
    ], output_dir=tmp_path / "train")
    model = hydra.utils.instantiate(cfg.model, num_classes=3)
    converted = torch.load(weights, map_location="cpu", weights_only=True)
    assert torch.equal(model.model.state_dict()["conv_stem.weight"], converted["conv_stem.weight"])
    assert model.model.get_classifier().out_features == 3  # a fresh head for our classes
    result = train.run(cfg)
    assert result["n_train"] > 0 and Path(result["best_checkpoint"]).is_file()
