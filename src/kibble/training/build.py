"""Build the datamodule, model and Trainer from a composed config; checkpoint helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import hydra
import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from kibble.data.datamodule import FeatureDataModule, ManifestDataModule
from kibble.predictions.writer import ArrayPredictionWriter
from kibble.training.distributed import rank_zero_logger

log = rank_zero_logger(__name__)


def features_mode(cfg: DictConfig) -> bool:
    return cfg.get("embedder") is not None


def attach_features(cfg: DictConfig, dm: FeatureDataModule) -> int:
    """Embed (or read from cache) every manifest row once (but unreadable images under on_bad_image=skip);
    return the feature width."""
    embedder = hydra.utils.instantiate(cfg.embedder)
    rows = dm.usable(dm.manifest)
    cache_dir = (cfg.get("paths") or {}).get("cache_dir") or dm.workspace.cache
    ids, matrix = embedder.features_for(rows, dm.workspace.data_root, Path(cache_dir) / "features", root_id=dm.workspace.feature_root_id)
    dm.attach_features(ids, matrix)
    return int(matrix.shape[1])


def embedder_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """The embedder's plain kwargs, kept in a features head's checkpoint (no _target_: instantiate would
    build an Embedder into the hparams)."""
    embedder = OmegaConf.to_container(cfg.embedder, resolve=True)
    return {k: v for k, v in embedder.items() if k != "_target_"}


def build_data_and_model(cfg: DictConfig, fit_ids: Sequence[str] | None = None, dm: ManifestDataModule | None = None) -> tuple[ManifestDataModule, L.LightningModule]:
    """Instantiate data + model; the model gets num_classes (and feature width) from the workspace."""
    dm = dm or hydra.utils.instantiate(cfg.data)
    extra: dict[str, Any] = {"num_classes": len(dm.class_names), "class_names": list(dm.class_names)}
    if features_mode(cfg):
        if not isinstance(dm, FeatureDataModule):
            raise ValueError("features mode needs data._target_=kibble.data.datamodule.FeatureDataModule (use model=features)")
        if dm.matrix is None:
            attach_features(cfg, dm)
        extra["in_features"] = int(dm.matrix.shape[1])
        extra["embedder"] = embedder_kwargs(cfg)
        model = hydra.utils.instantiate(cfg.model, _convert_="all", **extra)
        dm.configure(None, fit_ids)
        dm.setup("fit")
        model.set_feature_stats(dm.fit_matrix())
    else:
        model = hydra.utils.instantiate(cfg.model, _convert_="all", **extra)
        dm.configure(model.data_config(), fit_ids)
        dm.setup("fit")
    return dm, model


def build_trainer(cfg: DictConfig, out_dir: str | Path, with_logger: bool = True, extra_callbacks: Sequence[Any] = (),
                  config_callbacks: bool = True, has_val: bool = True, **overrides: Any) -> L.Trainer:
    """Trainer with the configured callbacks (unless config_callbacks=False) plus `extra_callbacks`;
    checkpoints and logs go under out_dir.

    has_val=False (data.inner_val_fraction=0: every row is trained on): callbacks that watch a val/ metric
    would fail on its absence, so early stopping is left out and the checkpoint keeps the last epoch."""
    out_dir = Path(out_dir)
    callbacks = list(extra_callbacks)
    for name, cb_cfg in ((cfg.get("callbacks") or {}) if config_callbacks else {}).items():
        if cb_cfg is None or "_target_" not in cb_cfg:
            continue
        kwargs = {}
        if cb_cfg._target_.endswith("ProgressBar") and overrides.get("enable_progress_bar") is False:
            continue
        watches_val = str(cb_cfg.get("monitor") or "").startswith("val/")
        if not has_val and watches_val and cb_cfg._target_.endswith("EarlyStopping"):
            log.info("no inner validation rows: %s left out (training runs to trainer.max_epochs)", name)
            continue
        if not has_val and watches_val and cb_cfg._target_.endswith("ModelCheckpoint"):
            kwargs.update(monitor=None, save_top_k=1)  # the last epoch's weights (Lightning allows no other top-k without a metric)
        if cb_cfg._target_.endswith("ModelCheckpoint") and cb_cfg.get("dirpath") is None:
            kwargs["dirpath"] = str(out_dir / "checkpoints")
        callbacks.append(hydra.utils.instantiate(cb_cfg, **kwargs))
    loggers = []
    if with_logger:
        for name, lg_cfg in (cfg.get("logger") or {}).items():
            if lg_cfg is not None and "_target_" in lg_cfg:
                loggers.append(hydra.utils.instantiate(lg_cfg, save_dir=str(out_dir)))
    if torch.cuda.is_available():  # fp32 matmuls outside autocast may use TF32 (Lightning's advice on Ampere+)
        torch.set_float32_matmul_precision("high")
    if cfg.trainer.get("sync_batchnorm") and cfg.trainer.get("accelerator") == "cpu" and "sync_batchnorm" not in overrides:
        # torch's SyncBatchNorm needs GPU modules; DDP on CPU (gloo) trains with per-process batch norm
        log.info("trainer.sync_batchnorm ignored on CPU")
        overrides["sync_batchnorm"] = False
    return hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, default_root_dir=str(out_dir), **overrides)


def best_checkpoint(trainer: L.Trainer) -> str | None:
    for cb in trainer.callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.best_model_path:
            return cb.best_model_path
    return None


def restore_best(trainer: L.Trainer, model: L.LightningModule) -> L.LightningModule:
    """Load the best checkpoint's weights into `model` in place (checkpoint selection on the inner val).

    Under DDP every rank calls this; the barrier makes sure rank 0 has finished writing the file.
    """
    from kibble.training.distributed import barrier

    barrier("best checkpoint on disk")
    path = best_checkpoint(trainer)
    if path and Path(path).is_file():
        state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
        model.load_state_dict(state)
    return model


def predict_trainer_kwargs(trainer_cfg: DictConfig | None) -> dict[str, Any]:
    """Trainer settings for prediction: the run's own accelerator/precision, and its DDP layout when the
    ranks are already up (each rank predicts a shard), else one device (a single process never spawns)."""
    from kibble.training.distributed import distributed_ready, world_size

    trainer_cfg = trainer_cfg or {}
    kwargs: dict[str, Any] = {
        "accelerator": trainer_cfg.get("accelerator", "cpu"),
        "precision": trainer_cfg.get("precision", "32-true"),
        "devices": 1,
    }
    if distributed_ready() and world_size() > 1:
        kwargs.update(
            strategy=trainer_cfg.get("strategy", "ddp"), devices=trainer_cfg.get("devices", "auto"),
            num_nodes=trainer_cfg.get("num_nodes", 1), use_distributed_sampler=True,
        )
    return kwargs


class PredictProgress(L.Callback):
    """Progress of a prediction (kibble.progress), in images, on global rank 0 only: a folder of
    images to predict (kibble predict, kibble monitor) or a fold's held-out rows can take minutes."""

    def __init__(self, n_rows: int, label: str = "predicting"):
        self.n_rows, self.label = int(n_rows), label
        self.bar = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from kibble.progress import Progress

        shard = -(-self.n_rows // max(int(trainer.world_size), 1))  # the sampler pads the shards to one size
        self.bar = Progress(self.label, shard, "images", enabled=trainer.is_global_zero, logger=log)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.bar is not None:
            probs = outputs.get("probs") if isinstance(outputs, dict) else None
            self.bar.advance(len(probs) if probs is not None else 1)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if self.bar is not None:
            self.bar.close(ok=False)
            self.bar = None


def predict_rows(model: L.LightningModule, dm: ManifestDataModule, rows: pd.DataFrame, trainer_cfg: DictConfig | None = None, gather: str = "all") -> dict[str, np.ndarray]:
    """probs/logits (and embeddings) for `rows`, in row order.

    Under DDP every rank must call this: each predicts its shard and the shards are gathered in row
    order on every rank (gather="all") or on rank 0 only (gather="zero"; the others get empty arrays).
    """
    k = len(dm.class_names)
    if len(rows) == 0:
        return {"probs": np.zeros((0, k), np.float32), "logits": np.zeros((0, k), np.float32)}
    writer = ArrayPredictionWriter()
    trainer = L.Trainer(logger=False, callbacks=[writer, PredictProgress(len(rows))], enable_progress_bar=False, enable_model_summary=False, **predict_trainer_kwargs(trainer_cfg))
    dm.set_predict(rows)
    trainer.predict(model, datamodule=dm, return_predictions=False)
    return writer.result(n_rows=len(rows), gather=gather)


def load_classifier(path: str | Path) -> L.LightningModule:
    """Reload either module type from a checkpoint file."""
    from kibble import KibbleError
    from kibble.models.classifier import ImageClassifier
    from kibble.models.head import FeatureClassifier

    path = Path(path)
    if not path.is_file():
        raise KibbleError(f"ckpt_path={path}: checkpoint not found")
    hparams = torch.load(path, map_location="cpu", weights_only=False).get("hyper_parameters", {})
    cls = FeatureClassifier if "in_features" in hparams else ImageClassifier
    return cls.load_from_checkpoint(path, map_location="cpu", weights_only=False).eval()
