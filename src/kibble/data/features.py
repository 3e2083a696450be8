"""Features mode: embed every image once with a frozen pretrained backbone, cached on disk.

The cache key is backbone + weights + eval transform, so folds and rounds reuse it; new images
(e.g. a pool added later) are embedded incrementally.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from kibble.data.dataset import ManifestDataset
from kibble.data.transforms import build_transform, transform_key
from kibble.io import atomic_path, atomic_write_json, atomic_write_parquet, read_json
from kibble.models.backbone import create_backbone, data_config_for

log = logging.getLogger(__name__)


def _weights_id(pretrained: str | None) -> str:
    if pretrained in (None, "none", "hub"):
        return str(pretrained)
    path = Path(str(pretrained)).expanduser()
    if path.is_file():
        stat = path.stat()
        return f"{path.name}:{stat.st_size}"
    return str(pretrained)


class Embedder:
    """Frozen timm backbone (num_classes=0 -> pooled features) with its eval transform."""

    def __init__(self, backbone: str, pretrained: str | None = "none", input_size: int | None = None, batch_size: int = 64, num_workers: int = 0):
        self.backbone = backbone
        self.pretrained = pretrained
        self.input_size = input_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self._model: torch.nn.Module | None = None

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._model = create_backbone(self.backbone, num_classes=0, pretrained=self.pretrained).eval()
        return self._model

    @property
    def data_config(self) -> dict[str, Any]:
        return data_config_for(self.model, self.input_size)

    def cache_key(self, root_id: str = "") -> str:
        """Backbone + weights + eval transform + image root: what an embedding depends on.

        root_id is the workspace's recorded data_root: relative for images inside the workspace (so a
        copied workspace keeps its cache), absolute for shared image folders.
        """
        raw = f"{self.backbone}|{_weights_id(self.pretrained)}|{transform_key(self.data_config)}|{root_id}"
        return f"{self.backbone}-{hashlib.sha256(raw.encode()).hexdigest()[:12]}"

    @torch.no_grad()
    def embed(self, rows: pd.DataFrame, data_root: str | Path, progress: bool = True) -> np.ndarray:
        dataset = ManifestDataset(rows, data_root, [], build_transform(self.data_config, train=False))
        loader = DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers)
        out = []
        iterator = loader
        if progress:
            from rich.progress import track

            iterator = track(loader, description=f"embedding {len(rows)} images ({self.backbone})")
        for x, _, _ in iterator:
            out.append(self.model(x).float().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.num_features), dtype=np.float32)

    def features_for(self, rows: pd.DataFrame, data_root: str | Path, cache_dir: str | Path, root_id: str | None = None) -> tuple[list[str], np.ndarray]:
        """Embeddings for `rows` (by sample_id), computing only those missing from the cache."""
        folder = Path(cache_dir) / self.cache_key(str(Path(data_root).resolve()) if root_id is None else root_id)
        ids_file, matrix_file = folder / "sample_ids.parquet", folder / "features.npy"
        cached_ids: list[str] = []
        matrix = None
        if ids_file.is_file() and matrix_file.is_file():
            cached_ids = pd.read_parquet(ids_file)["sample_id"].tolist()
            matrix = np.load(matrix_file)
            if len(cached_ids) != len(matrix):
                log.warning("feature cache %s is inconsistent; rebuilding it", folder)
                cached_ids, matrix = [], None
        known = set(cached_ids)
        todo = rows[~rows["sample_id"].isin(known)].drop_duplicates("sample_id")
        if len(todo):
            import time

            started = time.perf_counter()
            fresh = self.embed(todo, data_root)
            seconds = time.perf_counter() - started
            matrix = fresh if matrix is None else np.concatenate([matrix, fresh])
            cached_ids = cached_ids + todo["sample_id"].tolist()
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(matrix_file) as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, matrix)
            atomic_write_parquet(ids_file, pd.DataFrame({"sample_id": cached_ids}))
            meta_path = folder / "meta.json"
            history = read_json(meta_path).get("embedding_runs", []) if meta_path.is_file() else []
            history.append({"images": int(len(todo)), "seconds": round(seconds, 2)})
            atomic_write_json(meta_path, {
                "backbone": self.backbone, "pretrained": str(self.pretrained),
                "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in self.data_config.items()},
                "embedding_runs": history,  # how long embedding took (benchmarks report it)
            })
            log.info("feature cache %s: embedded %d new images (%d total)", folder.name, len(todo), len(cached_ids))
        position = {s: i for i, s in enumerate(cached_ids)}
        wanted = rows["sample_id"].tolist()
        return wanted, matrix[[position[s] for s in wanted]]
