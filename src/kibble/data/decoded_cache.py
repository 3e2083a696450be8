"""A decoded image cache: every image decoded and resized once, then read as uint8 from memory maps.

Why: decoding a JPEG costs about as much CPU as the augmentation that follows it, and a GPU
fine-tune decodes every image every epoch. Decoding once per workspace and image size leaves
the CPU only the crop/flip/jitter of each epoch (docs/benchmarks.md, "Input pipeline").

Geometry: the shorter side is resized to `side = floor(size / crop_pct)` (256 for 224 px at
timm's 0.875) and the aspect ratio is KEPT. Measured with scripts/bench_input.py
(docs/benchmarks.md): reading an image from the map is a view, so the loader's rate is set by the
crop/flip/jitter that remain, which cost about the same from a square or a 4:3 image (the bench
times both); what differs is what the augmentation sees, so the shape follows the cold path:
- Eval: SmallestMaxSize(side) becomes a no-op and the centre crop sees the pixels the cold path
  sees (the bench reports the mean difference of eval images from both paths).
- Train: RandomResizedCrop samples its 35-100 % areas and 3:4-4:3 ratios from the whole picture,
  as it does on the original file; a square centre crop would remove the outer eighths of a 4:3
  photo from every crop of every epoch.
- Size: side^2 * aspect * 3 bytes: 192 KiB per square image at 256 px, about 5 GB for Stanford
  Dogs' 20,580 photos (4:3 or squarer), several times the JPEGs; a page-cache-sized working set
  on a GPU box, and the price of not decoding. Memory maps share the pages between workers.
Shrinking uses cv2.INTER_AREA (OpenCV's choice for decimation; no aliasing) after JPEG draft
decoding at the largest DCT scale that keeps the shorter side >= side; enlarging uses bilinear,
as the cold path's albumentations resize does.

Layout: `<cache_dir>/v1-side<side>/` holds `shard-<uuid>.npy` (flat uint8, images back to back),
`index.parquet` (path, size, mtime_ns -> shard, offset, height, width) and `meta.json`. Entries are
keyed by the image file (resolved path + byte size + mtime), so a replaced image is decoded
again and several workspaces over the same files share one cache. A build writes a shard
(atomically) every `chunk_images` images and then the index, so an interrupted build resumes
with what it finished. A file lock serialises builders (DDP ranks, parallel folds): the first
builds, the others find the entries done.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import cv2
import numpy as np
import pandas as pd
import torch
from filelock import FileLock
from torch.utils.data import DataLoader, Dataset

from kibble import KibbleError
from kibble.data.images import read_rgb
from kibble.io import atomic_path, atomic_write_json, atomic_write_parquet

log = logging.getLogger(__name__)

VERSION = 1
INDEX_COLUMNS = ["path", "size", "mtime_ns", "shard", "offset", "height", "width"]


def fit_shorter_side(image: np.ndarray, side: int) -> np.ndarray:
    """Resize so the shorter side is `side`, keeping the aspect ratio (area filter when shrinking)."""
    h, w = image.shape[:2]
    if min(h, w) == side:
        return np.ascontiguousarray(image)
    scale = side / min(h, w)
    size = (max(side, round(w * scale)), max(side, round(h * scale)))  # cv2 wants (width, height)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def decode_for_cache(path: str | Path, side: int) -> np.ndarray:
    """What the cache stores for one file: upright RGB, shorter side = `side`."""
    return fit_shorter_side(read_rgb(path, min_side=side), side)


def file_keys(paths: Sequence[str | Path]) -> pd.DataFrame:
    """(path, size, mtime_ns) of each file; a missing file is a one-line error naming it."""
    rows = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            raise KibbleError(f"{p}: image file is missing; fix the manifest path or use on_bad_image=skip") from None
        rows.append((str(Path(p).resolve()), st.st_size, st.st_mtime_ns))
    return pd.DataFrame(rows, columns=["path", "size", "mtime_ns"]).astype({"size": "int64", "mtime_ns": "int64"})


@dataclass
class DecodedImages:
    """Images of one row set, read from the cache's shards: `images[i]` is an HxWx3 uint8 array.

    Picklable without the data (workers re-open the memory maps themselves); arrays come from
    copy-on-write maps, so transforms may write into them without touching the file.
    """

    shard_paths: list[str]
    shard: np.ndarray
    offset: np.ndarray
    height: np.ndarray
    width: np.ndarray
    _maps: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.shard)

    def __getitem__(self, i: int) -> np.ndarray:
        s = int(self.shard[i])
        flat = self._maps.get(s)
        if flat is None:
            flat = self._maps[s] = np.load(self.shard_paths[s], mmap_mode="c")
        h, w, start = int(self.height[i]), int(self.width[i]), int(self.offset[i])
        return np.asarray(flat[start : start + h * w * 3]).reshape(h, w, 3)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": {}}


class _Decode(Dataset):
    """Decodes files for the build; errors come back as values so the message stays one line."""

    def __init__(self, paths: list[str], side: int):
        self.paths, self.side = paths, side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return torch.from_numpy(decode_for_cache(self.paths[i], self.side)), None
        except KibbleError as err:
            return None, str(err)


def _identity(item):
    return item


class DecodedCache:
    """The cache for one stored side length under `root` (see the module docstring)."""

    def __init__(self, root: str | Path, side: int, workers: int = 0, chunk_images: int = 512, progress: bool = True):
        if int(side) < 1:
            raise KibbleError(f"decoded cache side={side}; the image size must be a positive number of pixels")
        self.side = int(side)
        self.dir = Path(root).expanduser().resolve() / f"v{VERSION}-side{self.side}"
        self.workers = int(workers)
        self.chunk_images = max(1, int(chunk_images))
        self.progress = progress
        self.decoded = 0  # images decoded by the last images_for() call

    @property
    def index_path(self) -> Path:
        return self.dir / "index.parquet"

    def read_index(self) -> pd.DataFrame:
        if self.index_path.is_file():
            return pd.read_parquet(self.index_path)
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in INDEX_COLUMNS}).astype({"path": "object", "shard": "object"})

    def images_for(self, paths: Sequence[str | Path]) -> DecodedImages:
        """The cached images of `paths` (in order), decoding the files the cache lacks or holds stale."""
        keys = file_keys(paths)
        self.dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.dir / ".lock")):
            index = self.read_index()
            missing = keys.merge(index, on=["path", "size", "mtime_ns"], how="left", indicator=True)
            todo = keys[(missing["_merge"] == "left_only").to_numpy()].drop_duplicates("path")
            self.decoded = len(todo)
            if len(todo):
                index = self._build(todo, index)
                log.info("decoded cache %s: decoded %d of %d images (%d already cached)", self.dir, len(todo), len(keys), len(keys) - len(todo))
        found = keys.merge(index, on=["path", "size", "mtime_ns"], how="left")
        shards = sorted(found["shard"].unique())
        local = {s: i for i, s in enumerate(shards)}
        return DecodedImages(
            shard_paths=[str(self.dir / s) for s in shards],
            shard=found["shard"].map(local).to_numpy(np.int32),
            offset=found["offset"].to_numpy(np.int64),
            height=found["height"].to_numpy(np.int32),
            width=found["width"].to_numpy(np.int32),
        )

    # --- building ----------------------------------------------------------------------------
    def _build(self, todo: pd.DataFrame, index: pd.DataFrame) -> pd.DataFrame:
        atomic_write_json(self.dir / "meta.json", {"version": VERSION, "side": self.side, "geometry": "shorter side = side, aspect kept",
                                                   "resize": "JPEG draft, then cv2 INTER_AREA to shrink / INTER_LINEAR to enlarge"})
        index = index[~index["path"].isin(set(todo["path"]))]  # stale entries of replaced files
        self._drop_unused_shards(index)
        chunk: list[tuple[int, np.ndarray]] = []
        for i, image in self._decoded(todo["path"].tolist()):
            chunk.append((i, image))
            if len(chunk) == self.chunk_images:
                index, chunk = self._flush(chunk, todo, index), []
        if chunk:
            index = self._flush(chunk, todo, index)
        return index

    def _decoded(self, paths: list[str]) -> Iterator[tuple[int, np.ndarray]]:
        loader = DataLoader(_Decode(paths, self.side), batch_size=None, num_workers=self.workers, collate_fn=_identity)
        items: Iterable = enumerate(loader)
        if self.progress and len(paths) >= 100:
            from rich.progress import track

            items = track(items, total=len(paths), description=f"decoding {len(paths)} images into the cache")
        for i, (image, error) in items:
            if error is not None:
                raise KibbleError(error)
            yield i, np.array(image.numpy())  # a private copy: frees the worker's shared-memory handle

    def _flush(self, chunk: list[tuple[int, np.ndarray]], todo: pd.DataFrame, index: pd.DataFrame) -> pd.DataFrame:
        """One shard file, then the index that points into it: a crash between them leaves an unused shard.
        Shard names are never reused, so a reader holding an older index never maps the wrong bytes."""
        shard = f"shard-{uuid.uuid4().hex[:16]}.npy"
        sizes = np.array([image.size for _, image in chunk], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        with atomic_path(self.dir / shard) as tmp:
            with open(tmp, "wb") as fh:
                np.lib.format.write_array(fh, np.concatenate([image.reshape(-1) for _, image in chunk]), allow_pickle=False)
        entries = todo.iloc[[i for i, _ in chunk]].assign(
            shard=shard, offset=offsets, height=[im.shape[0] for _, im in chunk], width=[im.shape[1] for _, im in chunk]
        )
        index = pd.concat([index, entries[INDEX_COLUMNS]], ignore_index=True) if len(index) else entries[INDEX_COLUMNS].reset_index(drop=True)
        atomic_write_parquet(self.index_path, index)
        return index

    def _drop_unused_shards(self, index: pd.DataFrame) -> None:
        """Delete shards no index entry points to (an interrupted flush, or every image in it replaced)."""
        used = set(index["shard"])
        for p in self.dir.glob("shard-*.npy"):
            if p.name not in used:
                p.unlink()
