"""A torch Dataset over manifest rows: reads the image, applies the transform, yields (x, y, index).

The image comes from the file (decoded now) or from the decoded cache (kibble.data.decoded_cache),
whichever the datamodule hands in; the transform does not know the difference. A file that cannot
be read raises kibble.data.images.BadImageError: one line naming it, even from a loader worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, default_collate, get_worker_info

from kibble.data.images import max_image_pixels, read_rgb
from kibble.data.manifest import resolve_image_path


class ManifestDataset(Dataset):
    """Rows of a manifest; y = class index of `label` (or -1 for unlabeled rows).

    images: optional row-aligned source of HxWx3 uint8 arrays (e.g. `DecodedImages`); None
    decodes each file with `read_rgb`, under this process's pixel limit (kept here, so workers
    started by spawn apply it too). option_prefix: where the caller's config holds `on_bad_image`
    and `max_image_pixels` (`data.` for train/kfold), for the advice in a bad image's error line.
    """

    def __init__(
        self, rows: pd.DataFrame, data_root: str | Path, class_names: list[str], transform: Callable, images: Sequence[np.ndarray] | None = None,
        option_prefix: str = "",
    ):
        self.rows = rows.reset_index(drop=True)
        self.paths = [resolve_image_path(p, data_root) for p in self.rows["path"]]
        index = {c: i for i, c in enumerate(class_names)}
        self.targets = np.array([index.get(l, -1) if l is not None else -1 for l in self.rows["label"]], dtype=np.int64)
        self.sample_ids = self.rows["sample_id"].tolist()
        self.transform = transform
        if images is not None and len(images) != len(self.rows):
            raise ValueError(f"images has {len(images)} entries for {len(self.rows)} rows")
        self.images = images
        self.max_pixels = max_image_pixels()
        self.option_prefix = option_prefix

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        if self.images is not None:
            image = self.images[i]
        else:
            image = read_rgb(self.paths[i], max_pixels=self.max_pixels, prefix=self.option_prefix)
        return self.transform(image), int(self.targets[i]), i  # ints: collate makes one tensor per batch

    def reseed(self, seed: int) -> None:
        """Give the augmentation pipeline its own random stream (see `seed_worker`)."""
        pipeline = getattr(self.transform, "pipeline", None)
        if pipeline is not None and hasattr(pipeline, "set_random_seed"):
            pipeline.set_random_seed(seed)


def collate_channels_last(batch: list) -> list:
    """(x, y, index) samples -> [x NCHW, y, index], x packed in channels-last memory.

    The transforms return CxHxW views of HxWxC arrays: stacking them as HxWxC is one plain copy
    (default_collate would transpose every image while copying), and convolutions on GPUs prefer
    channels-last anyway. default_collate does the stacking, so worker batches still land in
    shared memory.
    """
    xs, ys, index = zip(*batch)
    if torch.is_tensor(xs[0]) and xs[0].dim() == 3:
        x = default_collate([t.permute(1, 2, 0) for t in xs]).permute(0, 3, 1, 2)
    else:
        x = default_collate(list(xs))
    return [x, default_collate(list(ys)), default_collate(list(index))]


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: a fresh augmentation stream per worker, epoch and rank.

    albumentations' Compose keeps its own generator, created once in the main process; forked
    workers would all copy it, so worker k and worker j produce the same crops and flips, and
    (without persistent workers) every epoch repeats the last. torch gives each worker a seed that
    differs per worker and per epoch (drawn from the loader's generator); we pass it on, mixed
    with the DDP rank so ranks do not mirror each other either. cv2 runs one thread per worker:
    the workers already fill the cores.
    """
    import cv2

    cv2.setNumThreads(1)
    info = get_worker_info()
    rank = torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0
    seed = (torch.initial_seed() + 1_000_003 * rank) % 2**32
    dataset = info.dataset if info is not None else None
    if hasattr(dataset, "reseed"):
        dataset.reseed(seed)
