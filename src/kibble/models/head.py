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


def feature_stats(matrix: torch.Tensor, rows: torch.Tensor | None = None, chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of `matrix[rows]` (all rows when None): see feature_stats_of_sets."""
    return feature_stats_of_sets(matrix, [torch.arange(len(matrix)) if rows is None else torch.as_tensor(rows)], chunk)[0]


def feature_stats_of_sets(matrix: torch.Tensor, row_sets: list[torch.Tensor], chunk: int = 2048) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(mean, std) of `matrix[rows]` for each of `row_sets` (the fit rows of K folds; each row counted once per
    set) in two passes over the matrix, whatever K.

    Why: K folds' fit sets overlap almost entirely, and gathering each set's rows out of a 10^6 x 1,280 matrix
    cost ~9 s per fold. Rows are grouped by which sets hold them (at most 2^K groups, a few dozen in practice);
    pass one sums each group, pass two sums each group's squared deviations from its own mean, and a set's
    statistics combine its groups' (Chan et al.'s pairwise update), so no variance is lost to cancellation
    however far the data sit from zero. Chunks of 2,048 rows keep the temporaries in cache (two passes over
    10^6 x 1,280: about 3 s).

    Each feature's spread is floored at a tenth of the mean spread: a feature that barely varies over a
    small fit set (a seed set of a few images per class) would otherwise blow up on new images.
    """
    n_rows, width = matrix.shape
    membership = torch.zeros(n_rows, dtype=torch.int64)
    for k, rows in enumerate(row_sets):
        membership[torch.as_tensor(rows, dtype=torch.long)] |= 1 << k
    signatures, group_of = torch.unique(membership, return_inverse=True)
    counts = torch.bincount(group_of, minlength=len(signatures)).double()
    sums = torch.zeros(len(signatures), width, dtype=torch.float64)
    for start in range(0, n_rows, chunk):
        sums += torch.zeros(len(signatures), width).index_add_(0, group_of[start:start + chunk], matrix[start:start + chunk].float()).double()
    means = sums / counts.clamp_min(1)[:, None]
    means32 = means.float()
    squares = torch.zeros_like(sums)
    for start in range(0, n_rows, chunk):
        groups = group_of[start:start + chunk]
        part = matrix[start:start + chunk].float() - means32[groups]
        squares += torch.zeros(len(signatures), width).index_add_(0, groups, part * part).double()
    squares -= counts[:, None] * (means32.double() - means) ** 2  # deviations were taken from the float32 means
    out = []
    for k in range(len(row_sets)):
        chosen = (signatures >> k) & 1 == 1
        n = float(counts[chosen].sum())
        mean = (sums[chosen].sum(0) / n) if n else torch.zeros(width, dtype=torch.float64)
        spread = (squares[chosen] + counts[chosen][:, None] * (means[chosen] - mean) ** 2).sum(0)
        std = (spread.clamp_min(0) / (n - 1)).sqrt() if n > 1 else torch.ones(width, dtype=torch.float64)
        floor = max(1e-6, 0.1 * float(torch.nan_to_num(std, nan=0.0).mean()))
        out.append((mean.float(), torch.nan_to_num(std, nan=1.0).clamp_min(floor).float()))
    return out
