"""Transform presets (albumentations), sized and normalised from timm's data config.

Small and explicit like torchvision's references/classification/presets.py: train = random
resized crop + flip + light colour jitter; eval = resize shorter side + centre crop.
"""

from __future__ import annotations

import math
from typing import Any

import albumentations as A
import numpy as np
import torch


class ToTensor:
    """HxWxC float array -> CxHxW float tensor (albumentations' ToTensorV2 without the dependency churn)."""

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()


def _size(data_config: dict[str, Any]) -> int:
    return int(data_config["input_size"][-1])


def train_preset(data_config: dict[str, Any], scale: tuple[float, float] = (0.35, 1.0), hflip: float = 0.5, jitter: float = 0.2) -> A.Compose:
    size = _size(data_config)
    steps: list[A.BasicTransform] = [A.RandomResizedCrop(size=(size, size), scale=tuple(scale))]
    if hflip > 0:
        steps.append(A.HorizontalFlip(p=hflip))
    if jitter > 0:
        steps.append(A.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=0.0, p=0.8))
    steps.append(A.Normalize(mean=data_config["mean"], std=data_config["std"], max_pixel_value=255.0))
    return A.Compose(steps)


def eval_preset(data_config: dict[str, Any]) -> A.Compose:
    size = _size(data_config)
    crop_pct = float(data_config.get("crop_pct", 0.875) or 1.0)
    resize = int(math.floor(size / crop_pct))
    return A.Compose(
        [
            A.SmallestMaxSize(max_size=resize),
            A.CenterCrop(height=size, width=size),
            A.Normalize(mean=data_config["mean"], std=data_config["std"], max_pixel_value=255.0),
        ]
    )


def build_transform(data_config: dict[str, Any], train: bool, **train_kwargs: Any):
    """A callable uint8 HxWx3 array -> normalised CxHxW tensor."""
    pipeline = train_preset(data_config, **train_kwargs) if train else eval_preset(data_config)
    to_tensor = ToTensor()

    def apply(image: np.ndarray) -> torch.Tensor:
        return to_tensor(pipeline(image=image)["image"])

    apply.pipeline = pipeline  # type: ignore[attr-defined]
    return apply


def transform_key(data_config: dict[str, Any]) -> str:
    """What the eval transform depends on, for cache keys."""
    return f"{tuple(data_config['input_size'])}|{tuple(data_config['mean'])}|{tuple(data_config['std'])}|{data_config.get('crop_pct')}"
