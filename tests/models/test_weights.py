"""Local pretrained weights: the effnet-lite0 package's 296 tensors map onto timm's by position."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from sklearn.datasets import load_sample_image

from kibble import KibbleError
from kibble.data.transforms import build_transform
from kibble.models.backbone import create_backbone, data_config_for
from kibble.models.weights import TIMM_NAME, convert_by_position, packaged_effnet_lite0

PALACE, MONASTERY, DAISY = 698, 663, 985  # ImageNet-1k class indices


def test_296_tensors_map_by_position(effnet_weights: Path):
    source = torch.load(packaged_effnet_lite0(), map_location="cpu", weights_only=True)
    converted = torch.load(effnet_weights, map_location="cpu", weights_only=True)
    target = timm.create_model(TIMM_NAME).state_dict()
    assert len(source) == len(target) == 296  # both include 49 BatchNorm step counters
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    target_keys = [k for k in target if not k.endswith("num_batches_tracked")]
    assert len(src) == len(converted) == 247  # the weights and statistics, renamed in order
    assert list(converted) == target_keys
    for (_, a), b in zip(src, converted.values()):
        assert torch.equal(a, b)  # same tensors, same order, timm's names


def test_imagenet_head_predicts_sensibly(effnet_weights: Path):
    model = timm.create_model(TIMM_NAME, pretrained=True, pretrained_cfg_overlay=dict(file=str(effnet_weights))).eval()
    config = data_config_for(model)
    assert config["mean"] == (0.5, 0.5, 0.5) and config["input_size"] == (3, 224, 224)
    transform = build_transform(config, train=False)
    batch = torch.stack([transform(load_sample_image("china.jpg")), transform(load_sample_image("flower.jpg"))])
    with torch.no_grad():
        probs = model(batch).softmax(-1)
    assert probs.shape == (2, 1000)
    assert int(probs[0].argmax()) in (PALACE, MONASTERY)  # sklearn's sample photo of a Chinese temple
    assert int(probs[1].argmax()) == DAISY


def test_local_file_as_pretrained_backbone(effnet_weights: Path):
    """`model.pretrained=<file>`: backbone weights from the file, a fresh head for our classes."""
    model = create_backbone(TIMM_NAME, num_classes=7, pretrained=str(effnet_weights))
    converted = torch.load(effnet_weights, map_location="cpu", weights_only=True)
    assert torch.equal(model.state_dict()["conv_stem.weight"], converted["conv_stem.weight"])
    assert model.get_classifier().out_features == 7


def test_missing_weights_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(KibbleError, match="weights file not found; use none, hub, or a path"):
        create_backbone("test_resnet", num_classes=3, pretrained=str(tmp_path / "nope.pth"))


def test_convert_by_position_checks_count_and_shapes():
    model = timm.create_model("test_resnet", num_classes=4)
    state = model.state_dict()
    renamed = {f"t{i}": v for i, (k, v) in enumerate(state.items()) if not k.endswith("num_batches_tracked")}
    assert list(convert_by_position(renamed, model)) == [k for k in state if not k.endswith("num_batches_tracked")]
    with pytest.raises(KibbleError, match="expects"):
        convert_by_position(dict(list(renamed.items())[:-1]), model)
    first = next(iter(renamed))
    bad = {**renamed, first: torch.zeros(1)}
    with pytest.raises(KibbleError, match="shape mismatch"):
        convert_by_position(bad, model)
