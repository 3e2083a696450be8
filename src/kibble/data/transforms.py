"""Transform presets (albumentations), sized and normalised from timm's data config.

Small and explicit like torchvision's references/classification/presets.py: train = random
resized crop + flip + light colour jitter; eval = resize shorter side + centre crop.

Every step before normalisation works on uint8 (cv2 and albumentations are fastest there), and
the pixel-value maths can leave the CPU: with normalize=False a transform yields uint8 CxHxW
tensors and `DeviceTransform` turns a batch into normalised floats on the device (a quarter of the
bytes to copy and pin, no float maths on the CPU); with jitter_on_device the colour jitter (a
third of the CPU's per-image work once images come from the decoded cache) moves there too.
The CPU keeps the geometry (crop, flip), which shrinks the data before it travels.
Tensors are CxHxW views of the HxWxC arrays; `kibble.data.dataset.collate_channels_last` packs
them with one plain copy into an NCHW batch in channels-last memory, the layout convolutions
prefer on GPUs.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import albumentations as A
import numpy as np
import torch


JITTER_P = 0.8  # share of images that get colour jitter
GRAY = (0.299, 0.587, 0.114)  # OpenCV's RGB -> gray weights, which albumentations' ColorJitter uses


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
    data_config: dict[str, Any],
    scale: tuple[float, float] = (0.35, 1.0),
    hflip: float = 0.5,
    jitter: float = 0.2,
    normalize: bool = True,
    jitter_on_device: bool = False,
) -> A.Compose:
    """jitter_on_device leaves the colour jitter out (DeviceTransform applies it to the batch)."""
    size = _size(data_config)
    steps: list[A.BasicTransform] = [A.RandomResizedCrop(size=(size, size), scale=tuple(scale))]
    if hflip > 0:
        steps.append(A.HorizontalFlip(p=hflip))
    if jitter > 0 and not jitter_on_device:
        steps.append(A.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=0.0, p=JITTER_P))
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


def jitter_batch(x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor, saturation: torch.Tensor, order: Sequence[int]) -> torch.Tensor:
    """albumentations' (= torchvision's) ColorJitter on a float NCHW batch in [0, 255], one factor per image.

    brightness scales the pixels; contrast blends with the image's mean grey; saturation blends
    with each pixel's grey; clipped to [0, 255] after each step, applied in `order` (0, 1, 2).
    """
    gray = torch.tensor(GRAY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    for step in order:
        f = (brightness, contrast, saturation)[step].to(x.dtype).view(-1, 1, 1, 1)
        if step == 0:
            x = x * f
        elif step == 1:
            x = x * f + (x * gray).sum(1, keepdim=True).mean((2, 3), keepdim=True) * (1 - f)
        else:
            x = x * f + (x * gray).sum(1, keepdim=True) * (1 - f)
        x = x.clamp_(0.0, 255.0)
    return x


class DeviceTransform:
    """What data.normalize_on_device moves to the device: uint8 NCHW batch -> [colour jitter, when
    training] -> (x / 255 - mean) / std in float32, as A.Normalize does per image.

    The jitter draws factors per image like A.ColorJitter (uniform in [1 - jitter, 1 + jitter],
    applied to JITTER_P of the images) from torch's generator on the batch's device (seeded by
    Lightning's seed_everything); one random order of the three steps per batch instead of per image.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], jitter: float = 0.0):
        self.mean = torch.tensor([255.0 * m for m in mean], dtype=torch.float32).view(1, -1, 1, 1)
        self.inv_std = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32).view(1, -1, 1, 1)
        self.jitter = float(jitter)
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, x: torch.Tensor, train: bool = False) -> torch.Tensor:
        if x.dtype != torch.uint8:
            return x  # already normalised (features, or a dataset that normalised on the CPU)
        if x.device not in self._on:
            self._on[x.device] = (self.mean.to(x.device), self.inv_std.to(x.device))
        mean, inv_std = self._on[x.device]
        x = x.float()
        if train and self.jitter > 0:
            n = x.shape[0]
            factors = torch.empty(3, n, device=x.device).uniform_(max(0.0, 1 - self.jitter), 1 + self.jitter)
            factors = torch.where(torch.rand(n, device=x.device) < JITTER_P, factors, 1.0)  # no host sync
            x = jitter_batch(x, *factors, order=torch.randperm(3).tolist())
        return x.sub_(mean).mul_(inv_std)


def transform_key(data_config: dict[str, Any]) -> str:
    """What the eval transform depends on, for cache keys."""
    return f"{tuple(data_config['input_size'])}|{tuple(data_config['mean'])}|{tuple(data_config['std'])}|{data_config.get('crop_pct')}"
