"""A round's pending features-mode folds in one fit (kibble.training.fold_heads), written as fold files.

When it applies (`together_settings`): features mode with the linear head (`model.hidden=0`), one
process on one device, early stopping and checkpoint selection on val/acc or val/loss (or none), and
`cv.heads_together` not false. Otherwise, or for a fold that resumes from its own checkpoint, the
folds train one by one (kibble.training.kfold). The inner splits, the standardisation and the
hyper-parameters are the per-fold path's; only the batching of the arithmetic differs.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from kibble.training.build import build_trainer, embedder_kwargs, features_mode
from kibble.training.cost import FoldCost
from kibble.training.distributed import distributed_ready, rank_zero_logger
from kibble.training.fold_heads import FoldHeads, HeadBatches, HeadData, head_logits
from kibble.values import positions

log = rank_zero_logger(__name__)

MONITOR_MODES = {"val/acc": "max", "val/loss": "min"}


def together_settings(cfg: DictConfig) -> dict[str, Any] | None:
    """FoldHeads' selection settings (monitor, patience, min_delta, select_best) when this config's folds
    can train together, else None (the folds train one by one)."""
    model = cfg.get("model") or {}
    trainer = cfg.get("trainer") or {}
    if not features_mode(cfg) or str(cfg.cv.get("heads_together", True)).lower() in ("false", "0", "no"):
        return None
    if not str(model.get("_target_", "")).endswith("FeatureClassifier") or int(model.get("hidden") or 0):
        return None
    if distributed_ready() or str(trainer.get("devices", 1)) not in ("1", "auto") or int(trainer.get("num_nodes", 1) or 1) != 1:
        return None
    if str(trainer.get("devices", 1)) == "auto" and torch.cuda.device_count() > 1:
        return None
    if trainer.get("gradient_clip_val"):  # a global-norm clip would couple the heads
        return None
    callbacks = cfg.get("callbacks") or {}
    stopping, checkpoint = callbacks.get("early_stopping"), callbacks.get("model_checkpoint")
    monitors = {c.get("monitor") for c in (stopping, checkpoint) if c is not None}
    if len(monitors) > 1 or not monitors <= set(MONITOR_MODES):
        return None
    for c in (stopping, checkpoint):
        if c is not None and c.get("mode", "min") != MONITOR_MODES[c.get("monitor")]:
            return None
    return {
        "monitor": next(iter(monitors), "val/acc"),
        "patience": int(stopping.get("patience", 3)) if stopping is not None else None,
        "min_delta": float(stopping.get("min_delta", 0.0)) if stopping is not None else 0.0,
        "select_best": checkpoint is not None,
    }


class EpochProgress(L.Callback):
    """One progress display over the epochs of the heads' shared fit (kibble.progress)."""

    def __init__(self, label: str, enabled: bool):
        self.label, self.enabled, self.bar = label, enabled, None

    def on_train_start(self, trainer, pl_module) -> None:
        from kibble.progress import Progress

        # plain lines every KIBBLE_PROGRESS_SECONDS, not every epoch: a round's heads often fit in a second, and
        # `make demo` printed 15 lines a round for them; a slow fit (10^6 rows) still reports as it goes
        self.bar = Progress(self.label, int(trainer.max_epochs or 0) or None, "epochs", enabled=self.enabled, logger=log)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.bar is not None:
            running = int((~pl_module.stopped).sum())
            acc = trainer.callback_metrics.get("val/acc")
            self.bar.advance(note=f"{running} heads training" + (f", mean inner-val acc {float(acc):.4f}" if acc is not None else ""))

    def on_train_end(self, trainer, pl_module) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_exception(self, trainer, pl_module, exception) -> None:
        if self.bar is not None:
            self.bar.close(ok=False)
            self.bar = None


def _head_data(kround, feature_ids: np.ndarray, ks: list[int]) -> tuple[list[HeadData], list[tuple[int, int]]]:
    """Folds `ks`' fit and inner-val rows exactly as each fold's own FeatureDataModule setup splits them, and
    their standardisation statistics (one pass over the matrix for all of them)."""
    from kibble.models.head import feature_stats_of_sets

    dm, codes = kround._dm, kround.classes.codes
    splits = []
    for k in ks:
        dm.configure(None, kround.folds.loc[kround.folds["fold"] != k, "sample_id"].tolist())
        dm.setup("fit")
        splits.append((dm.fit_rows, dm.val_rows))
    fits = [torch.as_tensor(_feature_rows(fit, feature_ids)) for fit, _ in splits]
    stats = feature_stats_of_sets(dm.matrix, fits)
    heads = [HeadData(fit_pos, torch.as_tensor(codes(fit["label"])), torch.as_tensor(_feature_rows(val, feature_ids)),
                      torch.as_tensor(codes(val["label"])), mean, std)
             for fit_pos, (fit, val), (mean, std) in zip(fits, splits, stats)]
    return heads, [(len(fit), len(val)) for fit, val in splits]


def _feature_rows(rows, feature_ids: np.ndarray) -> np.ndarray:
    """Each row's position in the feature matrix; a row without an embedding is the one-fold path's error."""
    from kibble import KibbleError

    found = positions(rows["sample_id"], feature_ids)
    if (found < 0).any():
        missing = rows["sample_id"].iloc[int(np.flatnonzero(found < 0)[0])]
        raise KibbleError(f"feature cache has no embedding for sample {missing!r}; re-run to refresh the cache")
    return found


def _save_fold_checkpoint(path: Path, cfg: DictConfig, dm, head: HeadData, weight: torch.Tensor, bias: torch.Tensor, epochs: int, step: int) -> None:
    """fold_K/checkpoints/best.ckpt as a fold trained alone leaves it: a FeatureClassifier checkpoint
    that `kibble predict ckpt_path=...` (load_classifier) reloads."""
    from kibble.io import atomic_path

    model = hydra.utils.instantiate(
        cfg.model, _convert_="all", num_classes=weight.shape[1], class_names=list(dm.class_names), in_features=weight.shape[0],
        embedder=embedder_kwargs(cfg),
    )
    model.feature_mean.copy_(head.mean)
    model.feature_std.copy_(head.std)
    linear = model.head[-1]
    linear.weight.data.copy_(weight.T)
    linear.bias.data.copy_(bias)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams), "epoch": epochs - 1, "global_step": step,
                    "pytorch-lightning_version": L.__version__}, tmp)


def train_folds_together(kround, ks: list[int], show_progress: bool) -> dict[int, dict]:
    """Train folds `ks` of `kround` (a KFoldRound in features mode) as one FoldHeads fit; write each fold's
    stores and checkpoint; return {fold: meta}."""
    cfg, dm = kround.cfg, kround._dm
    for k in ks:
        kround.start_fold(k)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    cost = FoldCost()
    feature_ids = np.empty(len(dm.features), dtype=object)
    feature_ids[list(dm.features.values())] = list(dm.features)
    heads, sizes = _head_data(kround, feature_ids, ks)
    folds_label = ", ".join(str(k + 1) for k in ks)
    module, trainer = fit_heads(cfg, dm.matrix, heads, len(dm.class_names), dm.batch_size, dm.eval_batch_size, kround.round_dir / "heads_together",
                                f"k-fold round {kround.round_index}: folds {folds_label} together", show_progress)
    steps = int(trainer.global_step)
    cost.fitted(trainer, n_images=sum(min(steps * dm.batch_size, n_fit * max(int(trainer.current_epoch), 1)) for n_fit, _ in sizes))
    save_embeddings = bool(cfg.cv.get("save_embeddings", False))
    predict_splits = list(cfg.cv.get("predict_splits", []))
    others = kround._readable(kround.manifest[kround.manifest["split"].isin(predict_splits)])
    others_pos = _feature_rows(others, feature_ids)
    chosen = [module.head(i) for i in range(len(ks))]  # each head's selected (weight, bias)
    outputs = {}
    for i, k in enumerate(ks):
        weight, bias = chosen[i]
        held = kround.train_rows[kround.train_rows["sample_id"].isin(kround.folds.loc[kround.folds["fold"] == k, "sample_id"])]
        held_pos = _feature_rows(held, feature_ids)
        outputs[k] = [held, _predict(dm.matrix, held_pos, heads[i], weight, bias, save_embeddings),
                      _predict(dm.matrix, others_pos, heads[i], weight, bias, save_embeddings)]
    cost.predicted(trainer, n_images=sum(len(out[0]) + len(others) for out in outputs.values()))
    shared = cost.summary()
    metas = {}
    for i, k in enumerate(ks):
        weight, bias = chosen[i]
        epochs = module.epochs_of(i)
        if cfg.cv.get("keep_checkpoints", True):
            _save_fold_checkpoint(kround.fold_dir(k) / "checkpoints" / "best.ckpt", cfg, dm, heads[i], weight, bias, epochs, steps)
        facts = {
            "n_fit": sizes[i][0], "n_inner_val": sizes[i][1], "epochs": max(int(trainer.current_epoch), 1), "best_epoch": epochs,
            "global_step": steps, "resumed_from_step": None, "trained_with_folds": list(ks), **_share(shared, len(ks)),
        }
        held, out, out_others = outputs[k]
        metas[k] = kround.write_fold(k, held, others, out, out_others, facts)
    return metas


def fit_heads(cfg: DictConfig, matrix: torch.Tensor, heads: list[HeadData], num_classes: int, batch_size: int, eval_batch_size: int,
              out_dir: Path, label: str, show_progress: bool = True) -> tuple[FoldHeads, L.Trainer]:
    """One Lightning fit of `heads` over `matrix` with the config's head (`model`), trainer and selection
    settings; the module holds each head's chosen weights (FoldHeads.head)."""
    model_cfg = cfg.model
    module = FoldHeads(
        len(heads), int(matrix.shape[1]), int(num_classes),
        dropout=float(model_cfg.get("dropout", 0.0)), label_smoothing=float(model_cfg.get("label_smoothing", 0.0)),
        optimizer=hydra.utils.instantiate(model_cfg.optimizer) if model_cfg.get("optimizer") else None,
        scheduler=hydra.utils.instantiate(model_cfg.scheduler) if model_cfg.get("scheduler") else None, **together_settings(cfg),
    )
    module.seed_dropout(int(cfg.seed))
    train = DataLoader(HeadBatches(matrix, heads, batch_size, train=True, seed=int(cfg.seed)), batch_size=None)
    has_val = any(len(h.val) for h in heads)  # a head without inner-val rows keeps its last weights; the others select
    val = DataLoader(HeadBatches(matrix, heads, eval_batch_size, train=False), batch_size=None) if has_val else None
    trainer = build_trainer(cfg, out_dir, with_logger=bool(cfg.get("logger")), extra_callbacks=[EpochProgress(label, show_progress)],
                            config_callbacks=False, enable_progress_bar=False, enable_checkpointing=False)
    # Confident heads drive most softmax outputs below float32's normal range; on x86 CPUs arithmetic on
    # those subnormals is ~50x slower (a 1,280 x 120 head's step: 2.6 s instead of 0.05 s). Flushed to
    # zero they change no loss or gradient beyond 1e-38.
    flushed = torch.set_flush_denormal(True)
    try:
        with warnings.catch_warnings():  # the batches are made in this process (no workers): the length is exact
            warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
            warnings.filterwarnings("ignore", message=r"You defined a `validation_step` but have no `val_dataloader`")  # no inner split
            trainer.fit(module, train_dataloaders=train, val_dataloaders=val)
    finally:
        if flushed:
            torch.set_flush_denormal(False)
    return module, trainer


def _predict(matrix: torch.Tensor, rows: np.ndarray, head: HeadData, weight: torch.Tensor, bias: torch.Tensor, embeddings: bool) -> dict[str, np.ndarray]:
    logits = head_logits(matrix, rows, head, weight, bias)
    out = {"logits": logits, "probs": torch.from_numpy(logits).softmax(-1).numpy()}
    if embeddings:  # a features head's pre-logit embedding is its input (FeatureClassifier.embed_and_classify)
        out["embedding"] = matrix[torch.as_tensor(rows)].numpy()
    return out


def _share(cost: dict, n_heads: int) -> dict:
    """One fold's share of the shared fit: its seconds are the fit's divided among the heads (what a fold
    costs, e.g. for precision cleaning's time estimate); rates and memory are the fit's."""
    share = dict(cost)
    for key in ("seconds", "fit_seconds", "predict_seconds"):
        if share.get(key) is not None:
            share[key] = round(float(share[key]) / n_heads, 2)
    return share
