"""Features mode: a head over cached frozen-backbone embeddings, trained through the same Lightning path."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from kibble.models.base import ClassifierBase


class FeatureClassifier(ClassifierBase):
    """Linear (hidden=0) or one-hidden-layer MLP head; inputs are standardised by stored statistics.

    `embedder` (plain kwargs of kibble.data.features.Embedder) is kept in the checkpoint so
    `kibble predict` can embed new images the same way before applying the head.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: int = 0,
        dropout: float = 0.0,
        label_smoothing: float = 0.0,
        class_names: list[str] | None = None,
        embedder: dict | None = None,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler"], logger=False)
        self.register_buffer("feature_mean", torch.zeros(in_features))
        self.register_buffer("feature_std", torch.ones(in_features))
        if hidden:
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes))
        else:
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_classes))
        self.setup_common(num_classes, optimizer, scheduler, label_smoothing)

    def set_feature_stats(self, features: torch.Tensor) -> None:
        """Standardise with the training rows' statistics (part of the checkpoint); see feature_stats."""
        mean, std = feature_stats(features)
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((x - self.feature_mean) / self.feature_std)


def feature_stats(matrix: torch.Tensor, rows: torch.Tensor | None = None, chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of `matrix[rows]` (all rows when None), accumulated in float64 over chunks of rows,
    so 10^6 fit rows of a fold are never copied out of the matrix at once.

    Each feature's spread is floored at a tenth of the mean spread: a feature that barely varies over
    a small fit set (a seed set of a few images per class) would otherwise blow up on new images.
    """
    n = int(len(matrix) if rows is None else len(rows))
    total = torch.zeros(matrix.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, n, chunk):
        part = matrix[start:start + chunk] if rows is None else matrix[rows[start:start + chunk]]
        part = part.double()
        total += part.sum(0)
        squares += (part * part).sum(0)
    mean = total / max(n, 1)
    if n > 1:
        std = ((squares - n * mean * mean).clamp_min(0) / (n - 1)).sqrt()
    else:
        std = torch.ones_like(mean)
    floor = max(1e-6, 0.1 * float(torch.nan_to_num(std, nan=0.0).mean()))
    return mean.float(), torch.nan_to_num(std, nan=1.0).clamp_min(floor).float()
