"""timm backbones from plain values: pretrained from the hub, from a local file, or none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch

from kibble import KibbleError


def create_backbone(name: str, num_classes: int, pretrained: str | None = "none", drop_rate: float = 0.0, **kwargs: Any) -> torch.nn.Module:
    """`pretrained`: "none" (random init), "hub" (timm's default source), or a path to local weights.

    Local weights go through timm's own loader (`pretrained_cfg_overlay=dict(file=...)`) with
    num_classes=-1 so the classifier is always re-initialised for our classes.
    """
    pretrained = "none" if pretrained in (None, False, "", "none", "None") else str(pretrained)
    try:
        if pretrained == "none":
            return timm.create_model(name, pretrained=False, num_classes=num_classes, drop_rate=drop_rate, **kwargs)
        if pretrained in ("hub", "true", "True"):
            return timm.create_model(name, pretrained=True, num_classes=num_classes, drop_rate=drop_rate, **kwargs)
    except RuntimeError as err:
        raise KibbleError(f"model {name!r}: {err}") from None
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise KibbleError(
            f"model.pretrained={pretrained}: weights file not found; use none, hub, or a path "
            "(`make weights` / scripts/convert_effnet_lite.py writes them for tf_efficientnet_lite0/1/2)"
        )
    overlay = dict(file=str(path.resolve()), num_classes=-1)
    return timm.create_model(
        name, pretrained=True, pretrained_cfg_overlay=overlay, num_classes=num_classes, drop_rate=drop_rate, **kwargs
    )


def data_config_for(model: torch.nn.Module, input_size: int | None = None) -> dict[str, Any]:
    """timm's resolved data config (input size, mean, std, crop) for this model; size optionally overridden."""
    config = dict(timm.data.resolve_model_data_config(model))
    if input_size:
        config["input_size"] = (3, int(input_size), int(input_size))
    return config


def set_backbone_trainable(model: torch.nn.Module, trainable: bool) -> None:
    """Freeze or unfreeze everything but the classifier."""
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    head_params = {id(p) for p in classifier.parameters()} if isinstance(classifier, torch.nn.Module) else set()
    for p in model.parameters():
        if id(p) not in head_params:
            p.requires_grad_(trainable)
