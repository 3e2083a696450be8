"""Transform presets (albumentations), sized and normalised from timm's data config.

Small and explicit like torchvision's references/classification/presets.py: train = random
resized crop + flip + light colour jitter; eval = resize shorter side + centre crop.

Every step before normalisation works on uint8 (cv2 and albumentations are fastest there), and
normalisation can leave the CPU: with normalize=False a transform yields uint8 CxHxW tensors and
`normalize_batch` turns a batch into normalised floats on the device (a quarter of the bytes to
copy and pin, and the float maths on the GPU). Tensors are CxHxW views of the HxWxC arrays: the
DataLoader's collate makes the one copy that packs them into an NCHW batch.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import albumentations as A
import numpy as np
import torch


class ToTensor:
    """HxWxC array -> CxHxW tensor of the same dtype (a view; collate packs it into a contiguous batch)."""

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(image).permute(2, 0, 1)


def _size(data_config: dict[str, Any]) -> int:
    return int(data_config["input_size"][-1])


def resize_side(data_config: dict[str, Any]) -> int:
    """Shorter side before the eval centre crop: floor(size / crop_pct), as timm does (256 for 224 at 0.875)."""
    crop_pct = float(data_config.get("crop_pct", 0.875) or 1.0)
    return int(math.floor(_size(data_config) / crop_pct))


def _normalize(data_config: dict[str, Any]) -> A.Normalize:
    return A.Normalize(mean=data_config["mean"], std=data_config["std"], max_pixel_value=255.0)


def train_preset(
    data_config: dict[str, Any], scale: tuple[float, float] = (0.35, 1.0), hflip: float = 0.5, jitter: float = 0.2, normalize: bool = True
) -> A.Compose:
    size = _size(data_config)
    steps: list[A.BasicTransform] = [A.RandomResizedCrop(size=(size, size), scale=tuple(scale))]
    if hflip > 0:
        steps.append(A.HorizontalFlip(p=hflip))
    if jitter > 0:
        steps.append(A.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=0.0, p=0.8))
    if normalize:
        steps.append(_normalize(data_config))
    return A.Compose(steps)


def eval_preset(data_config: dict[str, Any], normalize: bool = True) -> A.Compose:
    size = _size(data_config)
    steps: list[A.BasicTransform] = [A.SmallestMaxSize(max_size=resize_side(data_config)), A.CenterCrop(height=size, width=size)]
    if normalize:
        steps.append(_normalize(data_config))
    return A.Compose(steps)


def build_transform(data_config: dict[str, Any], train: bool, normalize: bool = True, **train_kwargs: Any):
    """A callable uint8 HxWx3 array -> CxHxW tensor: normalised float32, or uint8 with normalize=False."""
    pipeline = train_preset(data_config, normalize=normalize, **train_kwargs) if train else eval_preset(data_config, normalize=normalize)
    to_tensor = ToTensor()

    def apply(image: np.ndarray) -> torch.Tensor:
        return to_tensor(pipeline(image=image)["image"])

    apply.pipeline = pipeline  # type: ignore[attr-defined]
    return apply


class BatchNormalizer:
    """uint8 NCHW batch -> (x / 255 - mean) / std in float32 on the batch's device; what A.Normalize does per image."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor([255.0 * m for m in mean], dtype=torch.float32).view(1, -1, 1, 1)
        self.inv_std = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32).view(1, -1, 1, 1)
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8:
            return x  # already normalised (features, or a dataset that normalised on the CPU)
        if x.device not in self._on:
            self._on[x.device] = (self.mean.to(x.device), self.inv_std.to(x.device))
        mean, inv_std = self._on[x.device]
        return x.float().sub_(mean).mul_(inv_std)


def transform_key(data_config: dict[str, Any]) -> str:
    """What the eval transform depends on, for cache keys."""
    return f"{tuple(data_config['input_size'])}|{tuple(data_config['mean'])}|{tuple(data_config['std'])}|{data_config.get('crop_pct')}"
