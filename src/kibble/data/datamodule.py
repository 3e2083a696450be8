"""LightningDataModules over a workspace manifest: images (full fine-tune) or cached features.

Which rows train, which form the inner validation split and which get predicted is decided here
once, so `kibble train` and every k-fold fold share one code path. The loaders are sized to feed a
GPU by default (`num_workers: auto`, pinned memory on CUDA, persistent workers); images can come
from the decoded cache and batches can stay uint8 until the device normalises them.

Images that went bad since the import follow `on_bad_image`: `skip` leaves them out of every row set
this module hands out (`usable`; one scan per process) with a count, `fail` stops at the first one
with one line (kibble.data.images). Train rows without a label and classes without a train image
are said once, as warnings: training goes on, but not on what the user may think.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset, TensorDataset

from kibble import KibbleError
from kibble.data.classes import ClassList
from kibble.data.dataset import ManifestDataset, collate_channels_last, seed_worker
from kibble.data.images import DEFAULT_MAX_PIXELS, scan_images, set_max_image_pixels, skipped_line
from kibble.data.manifest import classes_without_train, load_manifest, resolve_image_path
from kibble.data.transforms import DeviceTransform, build_transform, resize_side
from kibble.paths import Workspace
from kibble.training.distributed import rank_zero_logger

log = rank_zero_logger(__name__)


def trainable_rows(manifest: pd.DataFrame) -> pd.Series:
    """Train rows with a label that a review has not put out of scope."""
    mask = (manifest["split"] == "train") & manifest["label"].notna()
    if "excluded" in manifest.columns:
        mask &= ~manifest["excluded"].fillna(False).astype(bool)
    return mask


def warn_training_gaps(manifest: pd.DataFrame, class_names: list[str], source: str | Path) -> None:
    """One warning line each for train rows without a label (not trained on) and classes no train row has."""
    unlabelled = manifest[(manifest["split"] == "train") & manifest["label"].isna()]
    if len(unlabelled):
        log.warning("%s: %d train row(s) have no label (e.g. sample_id %r) and are not trained on; label them "
                    "(kibble merge) or move them to split pool", source, len(unlabelled), str(unlabelled["sample_id"].iloc[0]))
    empty = classes_without_train(manifest, class_names)
    if empty:
        log.warning("%s: %d class(es) have no train images: %s%s; the model cannot learn them", source, len(empty), empty[:5],
                    " ..." if len(empty) > 5 else "")


def drop_unreadable(rows: pd.DataFrame, data_root: str | Path, policy: str = "fail", verify: bool = False,
                    said: set[str] = frozenset()) -> tuple[pd.DataFrame, dict[str, str]]:
    """(rows without unreadable images, {sample_id: reason}) under on_bad_image=skip, with one warning line
    (none for sample_ids in `said`); `fail` returns the rows as they are, unless `verify` checks them first
    (then the first bad image raises). The scan is remembered per process: the folds of a round pay once."""
    if not verify and policy == "fail" or not len(rows):
        return rows, {}
    paths = [resolve_image_path(p, data_root) for p in rows["path"]]
    bad = scan_images(paths, policy, progress=True, prefix="data.")
    skipped = {str(rows.iloc[i]["sample_id"]): reason for i, reason in bad.items()}
    if set(skipped) - set(said):
        log.warning(skipped_line({str(paths[i]): reason for i, reason in bad.items()}))
    return (rows.drop(rows.index[list(bad)]) if bad else rows), skipped


def inner_split(rows: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified inner validation split of the training rows (never the held-out fold)."""
    if fraction <= 0 or len(rows) < 10:
        return rows, rows.iloc[:0]
    counts = rows["label"].value_counts()
    stratify = rows["label"] if counts.min() >= 2 and int(fraction * len(rows)) >= len(counts) else None
    fit, val = train_test_split(rows, test_size=fraction, random_state=seed, stratify=stratify)
    return fit.sort_index(), val.sort_index()


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask a scheduler like SLURM sets), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def resolve_num_workers(value: int | str | None, processes: int = 1) -> int:
    """`auto`: one core per process for the training loop, the rest (at most 8) decode; an int as given."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return max(0, min(8, available_cpus() // max(1, int(processes)) - 1))
    try:
        workers = int(value)
    except (TypeError, ValueError):
        workers = -1
    if workers < 0 or isinstance(value, float) and value != workers:
        raise KibbleError(f"data.num_workers={value!r}; use auto or a whole number >= 0 (0 loads in the training process)")
    return workers


def _flag(name: str, value: bool | str | None) -> bool | None:
    """A boolean config value, or None for `auto`."""
    if value is None or isinstance(value, str) and value.strip().lower() == "auto":
        return None
    if isinstance(value, bool):
        return value
    raise KibbleError(f"data.{name}={value!r}; use true, false or auto")


class ManifestDataModule(L.LightningDataModule):
    def __init__(
        self,
        workspace: str,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int | str = "auto",
        inner_val_fraction: float = 0.1,
        seed: int = 0,
        on_bad_image: str = "fail",
        verify_images: bool = False,
        max_image_pixels: int | None = DEFAULT_MAX_PIXELS,
        augment: dict[str, Any] | None = None,
        pin_memory: bool | str = "auto",
        persistent_workers: bool = True,
        prefetch_factor: int | None = None,
        decoded_cache: bool = False,
        decoded_cache_dir: str | None = None,
        normalize_on_device: bool = False,
        drop_last: bool = False,
    ):
        super().__init__()
        self.workspace = Workspace(workspace).require()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        resolve_num_workers(num_workers)  # a bad value fails here, not in the first loader
        self.num_workers = num_workers
        self.inner_val_fraction = inner_val_fraction
        self.seed = seed
        self.on_bad_image = on_bad_image
        self.verify_images = verify_images
        set_max_image_pixels(max_image_pixels)  # every reader in this process (loaders, embedder, decoded cache)
        self.augment = dict(augment or {})
        self.pin_memory = _flag("pin_memory", pin_memory)
        self.persistent_workers = bool(persistent_workers)
        if prefetch_factor is not None and int(prefetch_factor) < 1:
            raise KibbleError(f"data.prefetch_factor={prefetch_factor!r}; use a number >= 1 (batches each worker loads ahead) or null")
        self.prefetch_factor = None if prefetch_factor is None else int(prefetch_factor)
        self.decoded_cache = bool(decoded_cache)
        self.decoded_cache_dir = decoded_cache_dir
        self.normalize_on_device = bool(normalize_on_device)
        self.drop_last = bool(drop_last)
        if self.augment.get("jitter_on_device") and not self.normalize_on_device:
            raise KibbleError("data.augment.jitter_on_device=true needs data.normalize_on_device=true (the device jitters uint8 batches)")
        self._device_transform: DeviceTransform | None = None
        self.classes = ClassList.load(self.workspace.classes)
        self.manifest = load_manifest(self.workspace.manifest, self.classes.names)
        warn_training_gaps(self.manifest, self.classes.names, self.workspace.manifest)
        self.data_config: dict[str, Any] | None = None
        self.fit_ids: Sequence[str] | None = None
        self.predict_rows = self.manifest.iloc[:0]
        self.test_split: str | None = None
        self.skipped: dict[str, str] = {}

    # --- what to use -------------------------------------------------------------------------
    def configure(self, data_config: dict[str, Any] | None = None, fit_ids: Sequence[str] | None = None) -> "ManifestDataModule":
        """Set the model's data config and, for a fold, which sample_ids may be trained on."""
        self.data_config = data_config
        jitter = float(self.augment.get("jitter") or 0.0) if self.augment.get("jitter_on_device") else 0.0
        self._device_transform = DeviceTransform(data_config["mean"], data_config["std"], jitter) if data_config else None
        self.fit_ids = None if fit_ids is None else list(fit_ids)
        return self

    def set_predict(self, rows: pd.DataFrame) -> None:
        self.predict_rows = rows.reset_index(drop=True)

    @property
    def class_names(self) -> list[str]:
        return self.classes.names

    def training_rows(self) -> pd.DataFrame:
        rows = self.manifest[trainable_rows(self.manifest)]
        if self.fit_ids is not None:
            rows = rows[rows["sample_id"].isin(set(self.fit_ids))]
        if rows.empty:
            raise KibbleError(f"{self.workspace.manifest}: no labelled train rows to fit on")
        return rows

    def split_rows(self, split: str) -> pd.DataFrame:
        return self.manifest[(self.manifest["split"] == split) & self.manifest["label"].notna()]

    def default_test_split(self) -> str | None:
        for split in ("test", "val"):
            if len(self.split_rows(split)):
                return split
        return None

    def setup(self, stage: str | None = None) -> None:
        rows = self.training_rows()
        rows = self._drop_bad(rows)
        self.fit_rows, self.val_rows = inner_split(rows, self.inner_val_fraction, self.seed)
        self.test_split = self.default_test_split()
        self.test_rows = self._drop_bad(self.split_rows(self.test_split)) if self.test_split else self.manifest.iloc[:0]

    def _drop_bad(self, rows: pd.DataFrame) -> pd.DataFrame:
        return self.usable(rows)

    def usable(self, rows: pd.DataFrame) -> pd.DataFrame:
        """`rows` without the images that cannot be read under on_bad_image=skip (recorded in `skipped`)."""
        rows, skipped = drop_unreadable(rows, self.workspace.data_root, self.on_bad_image, self.verify_images, set(self.skipped))
        self.skipped.update(skipped)
        return rows

    # --- loaders -----------------------------------------------------------------------------
    def _processes(self) -> int:
        """Training processes on this machine sharing its CPUs (DDP ranks), when a Trainer is attached."""
        trainer = getattr(self, "trainer", None)
        return int(getattr(trainer, "num_devices", 1) or 1) if trainer is not None else 1

    @property
    def workers(self) -> int:
        return resolve_num_workers(self.num_workers, self._processes())

    def _pin(self) -> bool:
        if self.pin_memory is not None:
            return self.pin_memory
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            from lightning.pytorch.accelerators import CUDAAccelerator

            return isinstance(trainer.accelerator, CUDAAccelerator)
        return torch.cuda.is_available()

    def _decoded_images(self, rows: pd.DataFrame):
        from kibble.data.decoded_cache import DecodedCache

        root = Path(self.decoded_cache_dir) if self.decoded_cache_dir else self.workspace.cache / "decoded"
        cache = DecodedCache(root, resize_side(self.data_config), workers=self.workers)
        return cache.images_for([resolve_image_path(p, self.workspace.data_root) for p in rows["path"]])

    # --- datasets ----------------------------------------------------------------------------
    def make_dataset(self, rows: pd.DataFrame, train: bool) -> Dataset:
        if self.data_config is None:
            raise RuntimeError("call configure(data_config=model.data_config()) before using the datamodule")
        transform = build_transform(self.data_config, train=train, normalize=not self.normalize_on_device, **(self.augment if train else {}))
        images = self._decoded_images(rows) if self.decoded_cache and len(rows) else None
        return ManifestDataset(rows, self.workspace.data_root, self.class_names, transform, images=images, option_prefix="data.")

    def _loader(self, rows: pd.DataFrame, train: bool, shuffle: bool, keep_workers: bool, drop_last: bool = False) -> DataLoader:
        workers = self.workers
        extra: dict[str, Any] = {}
        if workers > 0:
            extra = {"persistent_workers": self.persistent_workers and keep_workers, "worker_init_fn": seed_worker}
            if self.prefetch_factor is not None:
                extra["prefetch_factor"] = self.prefetch_factor
        return DataLoader(
            self.make_dataset(rows, train),
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=shuffle,
            num_workers=workers,
            pin_memory=self._pin(),
            drop_last=drop_last,
            collate_fn=collate_channels_last,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
            **extra,
        )

    def train_dataloader(self) -> DataLoader:
        # drop_last: every train batch full, so training sees one input shape (cuDNN autotunes each new shape: 20-30 s
        # on an H200, docs/benchmarks.md "GPU check"; evaluation keeps its partial batches); never when a process's
        # share of the rows is less than a batch (DDP splits them across ranks)
        world = int(getattr(self.trainer, "world_size", 1) or 1) if self.trainer is not None else 1
        drop = self.drop_last and len(self.fit_rows) // world >= self.batch_size
        return self._loader(self.fit_rows, train=True, shuffle=True, keep_workers=True, drop_last=drop)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_rows, train=False, shuffle=False, keep_workers=True) if len(self.val_rows) else []

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_rows, train=False, shuffle=False, keep_workers=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_rows, train=False, shuffle=False, keep_workers=False)

    @property
    def device_transform(self) -> DeviceTransform | None:
        """What on_after_batch_transfer applies to x (None unless normalize_on_device), for loops outside Lightning:
        `x = dm.device_transform(x.to(device), train=True)`."""
        return self._device_transform if self.normalize_on_device else None

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """normalize_on_device: the uint8 batch becomes normalised float32 here, on the device
        (colour-jittered first when training with augment.jitter_on_device)."""
        if self.normalize_on_device and self._device_transform is not None and isinstance(batch, (list, tuple)) and torch.is_tensor(batch[0]):
            trainer = getattr(self, "trainer", None)
            batch = [self._device_transform(batch[0], train=bool(trainer is not None and trainer.training)), *batch[1:]]
        return batch


class FeatureDataModule(ManifestDataModule):
    """Same rows, but each sample is its cached embedding (see kibble.data.features)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.features: dict[str, int] = {}
        self.matrix: torch.Tensor | None = None

    def attach_features(self, sample_ids: list[str], matrix: np.ndarray) -> "FeatureDataModule":
        self.features = {sid: i for i, sid in enumerate(sample_ids)}
        self.matrix = torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32))
        return self

    def fit_matrix(self) -> torch.Tensor:
        return self.matrix[[self.features[s] for s in self.fit_rows["sample_id"]]]

    def make_dataset(self, rows: pd.DataFrame, train: bool) -> Dataset:
        if self.matrix is None:
            raise RuntimeError("attach_features(...) before using a FeatureDataModule")
        missing = [s for s in rows["sample_id"] if s not in self.features]
        if missing:
            raise KibbleError(f"feature cache has no embedding for sample {missing[0]!r}; re-run to refresh the cache")
        idx = torch.tensor([self.features[s] for s in rows["sample_id"]], dtype=torch.long)
        index = {c: i for i, c in enumerate(self.class_names)}
        y = torch.tensor([index.get(l, -1) if l is not None else -1 for l in rows["label"]], dtype=torch.long)
        return TensorDataset(self.matrix[idx], y, torch.arange(len(rows)))
