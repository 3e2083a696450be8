"""A torch Dataset over manifest rows: reads the image, applies the transform, yields (x, y, index)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from kibble.data.images import read_rgb
from kibble.data.manifest import resolve_image_path


class ManifestDataset(Dataset):
    """Rows of a manifest; y = class index of `label` (or -1 for unlabeled rows)."""

    def __init__(self, rows: pd.DataFrame, data_root: str | Path, class_names: list[str], transform: Callable):
        self.rows = rows.reset_index(drop=True)
        self.paths = [resolve_image_path(p, data_root) for p in self.rows["path"]]
        index = {c: i for i, c in enumerate(class_names)}
        self.targets = np.array([index.get(l, -1) if l is not None else -1 for l in self.rows["label"]], dtype=np.int64)
        self.sample_ids = self.rows["sample_id"].tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        image = read_rgb(self.paths[i])
        return self.transform(image), torch.tensor(self.targets[i]), torch.tensor(i)
