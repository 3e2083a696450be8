"""The k-fold engine: fold assignment, one fold's training and prediction, OOF assembly.

Resumable (complete folds are skipped), parallel (one fold per job through a Hydra launcher;
folds meet only through the store) and fast in features mode. `kibble kfold` (tasks/kfold.py)
is a thin entry point over `run_round`.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from kibble import KibbleError
from kibble.data.classes import ClassList
from kibble.data.datamodule import trainable_rows
from kibble.data.folds import assign_folds
from kibble.data.manifest import load_manifest, rows_fingerprint
from kibble.io import atomic_write_json, atomic_write_parquet, read_json
from kibble.paths import Workspace
from kibble.predictions.oof import assemble_oof, check_fold_meta, ensemble_mean
from kibble.predictions.store import make_frame, read_store, sidecar_path, write_store
from kibble.rounds import RoundContext
from kibble.training.build import attach_features, build_data_and_model, build_trainer, features_mode, predict_rows, restore_best

log = logging.getLogger(__name__)


def round_fingerprint(train_rows: pd.DataFrame) -> str:
    """What the OOF depends on: the trainable samples and their current labels."""
    return rows_fingerprint(train_rows)


def config_hash(cfg: DictConfig) -> str:
    """Hash of everything that shapes a fold's predictions (not where it runs or which fold)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    parts = {k: resolved.get(k) for k in ("model", "data", "embedder", "seed")}
    parts["trainer"] = {k: v for k, v in (resolved.get("trainer") or {}).items() if k in ("max_epochs", "min_epochs", "precision", "limit_train_batches")}
    parts["data"] = {k: v for k, v in (parts["data"] or {}).items() if k not in ("workspace", "num_workers", "eval_batch_size")}
    parts["cv"] = {k: v for k, v in (resolved.get("cv") or {}).items() if k not in ("fold", "assemble_only", "progress", "keep_checkpoints")}
    text = OmegaConf.to_yaml(OmegaConf.create(parts))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prepare_round(round_dir: Path, round_index: int, train_rows: pd.DataFrame, classes: ClassList, cv: DictConfig, seed: int) -> pd.DataFrame:
    """Assign folds once per round (folds.parquet + round.json); later runs check nothing changed."""
    fingerprint = round_fingerprint(train_rows)
    info_path, folds_path = round_dir / "round.json", round_dir / "folds.parquet"
    if info_path.is_file() and folds_path.is_file():
        info = read_json(info_path)
        if info["manifest_fingerprint"] != fingerprint:
            raise KibbleError(
                f"{round_dir}: the manifest changed since this round's folds were assigned "
                f"(labels or train samples differ); run the next round (round={round_index + 1}) or delete {round_dir}"
            )
        if info["class_names"] != classes.names:
            raise KibbleError(f"{round_dir}: classes.yaml changed since this round started; delete {round_dir} or use a new workspace")
        if int(info["n_folds"]) != int(cv.n_folds):
            raise KibbleError(f"{round_dir}: round was started with {info['n_folds']} folds, not cv.n_folds={cv.n_folds}")
        return pd.read_parquet(folds_path)
    folds = assign_folds(train_rows, int(cv.n_folds), int(cv.get("seed", seed)))
    atomic_write_parquet(folds_path, folds)
    atomic_write_json(info_path, {"round": round_index, "n_folds": int(cv.n_folds), "manifest_fingerprint": fingerprint, "class_names": classes.names, "n_train": len(folds)})
    return folds


class KFoldRound:
    """One round's folds: which are done, running one, assembling the rest."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.ws = Workspace(cfg.workspace).require()
        self.round_index = int(cfg.round) if cfg.get("round") is not None else self.ws.current_round()
        self.round_dir = self.ws.round_dir(self.round_index)
        self.classes = ClassList.load(self.ws.classes)
        self.manifest = load_manifest(self.ws.manifest, self.classes.names)
        self.train_rows = self.manifest[trainable_rows(self.manifest)]
        self.n_folds = int(cfg.cv.n_folds)
        self.folds = prepare_round(self.round_dir, self.round_index, self.train_rows, self.classes, cfg.cv, int(cfg.seed))
        self.fingerprint = round_fingerprint(self.train_rows)
        self.config_hash = config_hash(cfg)
        self._dm = None
        if features_mode(cfg):  # embed (or load the cache) once, before any progress display
            self._dm = hydra.utils.instantiate(cfg.data)
            attach_features(cfg, self._dm)

    def fold_dir(self, k: int) -> Path:
        return self.round_dir / f"fold_{k}"

    def heldout_path(self, k: int) -> Path:
        return self.fold_dir(k) / "heldout.parquet"

    def others_path(self, k: int) -> Path:
        return self.fold_dir(k) / "others.parquet"

    def fold_complete(self, k: int) -> bool:
        """True if fold k's outputs exist, are marked complete, and belong to this round/config."""
        path = self.heldout_path(k)
        if not (path.is_file() and sidecar_path(path).is_file() and self.others_path(k).is_file()):
            return False
        meta = read_json(sidecar_path(path))
        if not meta.get("complete"):
            return False
        check_fold_meta(meta, path, self.round_index, k, self.fingerprint, self.classes.names)
        if meta.get("config_hash") != self.config_hash:
            raise KibbleError(
                f"{path}: fold {k} was trained with a different config (model/data/trainer/cv); "
                f"use the same overrides, a new round, or delete {self.fold_dir(k)}"
            )
        return True

    def run_fold(self, k: int) -> dict:
        cfg = self.cfg
        fold_dir = self.fold_dir(k)
        if fold_dir.exists():
            shutil.rmtree(fold_dir)  # an interrupted fold restarts from scratch
        fold_dir.mkdir(parents=True)
        L.seed_everything(int(cfg.seed) + k, workers=True, verbose=False)
        fit_ids = self.folds.loc[self.folds["fold"] != k, "sample_id"].tolist()
        start = time.perf_counter()
        dm, model = build_data_and_model(cfg, fit_ids=fit_ids, dm=self._dm)
        self._dm = dm
        # one progress display across folds (ours); no per-fold bars inside it
        trainer = build_trainer(cfg, fold_dir, with_logger=bool(cfg.get("logger")), enable_progress_bar=False)
        trainer.fit(model, datamodule=dm)
        if trainer.global_rank != 0:  # under DDP only rank 0 predicts and writes the fold's files
            return {"fold": k, "rank": trainer.global_rank}
        restore_best(trainer, model)
        fit_seconds = time.perf_counter() - start
        epochs = max(int(trainer.current_epoch), 1)
        model.predict_embeddings = bool(cfg.cv.get("save_embeddings", False))
        held_ids = set(self.folds.loc[self.folds["fold"] == k, "sample_id"])
        held = self.train_rows[self.train_rows["sample_id"].isin(held_ids)]
        out = predict_rows(model, dm, held, cfg.trainer)
        others = self.manifest[self.manifest["split"].isin(list(cfg.cv.get("predict_splits", [])))]
        out_others = predict_rows(model, dm, others, cfg.trainer)
        model.predict_embeddings = False
        accuracy = float((out["probs"].argmax(1) == np.array([self.classes.index[l] for l in held["label"]])).mean())
        meta = {
            "round": self.round_index, "fold": k, "manifest_fingerprint": self.fingerprint,
            "class_names": self.classes.names, "config_hash": self.config_hash, "complete": True,
            "n_fit": len(dm.fit_rows), "n_inner_val": len(dm.val_rows), "n_heldout": len(held),
            "heldout_accuracy_given": accuracy, "seconds": round(time.perf_counter() - start, 2),
            "train_images_per_second": round(len(dm.fit_rows) * epochs / max(fit_seconds, 1e-9), 1),
            "epochs": epochs,
        }
        others_frame = make_frame(others["sample_id"].tolist(), out_others["probs"], others["label"].tolist(), k, out_others.get("logits"), out_others.get("embedding"))
        others_frame["split"] = others["split"].to_numpy()
        write_store(self.others_path(k), others_frame, {**meta, "complete": True})
        held_frame = make_frame(held["sample_id"].tolist(), out["probs"], held["label"].tolist(), k, out.get("logits"), out.get("embedding"))
        write_store(self.heldout_path(k), held_frame, meta)  # written last: marks the fold complete
        ckpt = fold_dir / "checkpoints"
        if ckpt.is_dir() and not cfg.cv.get("keep_checkpoints", True):
            shutil.rmtree(ckpt)
        return meta

    def assemble(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        files = [self.heldout_path(k) for k in range(self.n_folds)]
        oof = assemble_oof(files, self.folds, self.classes.names)
        meta = {
            "round": self.round_index, "class_names": self.classes.names, "manifest_fingerprint": self.fingerprint,
            "config_hash": self.config_hash, "n_folds": self.n_folds, "complete": True,
        }
        write_store(self.round_dir / "oof.parquet", oof, meta)
        others = [read_store(self.others_path(k), self.classes.names)[0] for k in range(self.n_folds)]
        predictions = ensemble_mean(others)
        if len(predictions):
            write_store(self.round_dir / "predictions.parquet", predictions, {**meta, "ensemble": "mean of fold softmax"})
        return oof, predictions


ROUND_CONFIG_KEYS = ("seed", "model", "data", "embedder", "trainer", "callbacks", "cv", "paths")


def save_round_config(cfg: DictConfig, path: Path) -> None:
    """The round's training config, so `kibble queue` can re-train for strategies that need a model
    (precision mode=train). Unresolved: `${workspace}` follows the workspace if it is moved or copied."""
    from kibble.io import atomic_write_text

    saved = {k: OmegaConf.to_container(cfg[k], resolve=False) if OmegaConf.is_config(cfg[k]) else cfg[k] for k in ROUND_CONFIG_KEYS if k in cfg}
    (saved.get("paths") or {}).pop("output_dir", None)  # the run's own output dir
    atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(saved)))


def run_round(cfg: DictConfig) -> dict:
    """Train the round's missing folds, then (once all are complete) assemble the OOF and run the round callbacks."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    kround = KFoldRound(cfg)
    folds = [int(cfg.cv.fold)] if cfg.cv.get("fold") is not None else list(range(kround.n_folds))
    if any(k < 0 or k >= kround.n_folds for k in folds):
        raise KibbleError(f"cv.fold={cfg.cv.fold}: folds are numbered 0..{kround.n_folds - 1}")
    log.info("round %d: %d train samples, %d folds -> %s", kround.round_index, len(kround.folds), kround.n_folds, kround.round_dir)
    fold_stats = {}
    for k in range(kround.n_folds):  # a stale/foreign fold file fails now, before any fold is trained
        kround.fold_complete(k)
    if not cfg.cv.get("assemble_only", False):
        with Progress(TextColumn("[bold]k-fold round {task.fields[round]}"), BarColumn(), TextColumn("{task.completed}/{task.total} folds"), TimeElapsedColumn(), disable=not cfg.cv.get("progress", True)) as progress:
            task = progress.add_task("folds", total=len(folds), round=kround.round_index)
            for k in folds:
                if kround.fold_complete(k):
                    log.info("fold %d/%d: complete, skipped", k + 1, kround.n_folds)
                else:
                    meta = kround.run_fold(k)
                    if "rank" in meta:  # a non-zero DDP rank: rank 0 logs and writes
                        continue
                    fold_stats[k] = meta
                    log.info(
                        "fold %d/%d: %.1f s, %d train images (%.0f img/s), held-out accuracy %.4f",
                        k + 1, kround.n_folds, meta["seconds"], meta["n_fit"], meta["train_images_per_second"], meta["heldout_accuracy_given"],
                    )
                progress.advance(task)
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:
        return {"round": kround.round_index, "rank": rank_zero_only.rank}
    pending = [k for k in range(kround.n_folds) if not kround.fold_complete(k)]
    result = {"round": kround.round_index, "round_dir": str(kround.round_dir), "folds_run": sorted(fold_stats), "pending_folds": pending}
    if pending:
        log.info("round %d: waiting for folds %s before assembling the OOF", kround.round_index, pending)
        return result
    oof, predictions = kround.assemble()
    save_round_config(cfg, kround.round_dir / "config.yaml")
    ctx = RoundContext(kround.ws, kround.round_index, kround.round_dir, kround.manifest, kround.classes, oof, predictions, cfg)
    for name, cb_cfg in (cfg.get("round_callbacks") or {}).items():
        if cb_cfg is None:
            continue
        callback = hydra.utils.instantiate(cb_cfg)
        ctx.results[name] = callback(ctx)
    summary = ctx.results.get("oof_summary", {})
    result.update(oof=str(kround.round_dir / "oof.parquet"), **{k: v for k, v in summary.items() if not isinstance(v, dict)})
    result["callbacks"] = {k: v for k, v in ctx.results.items() if k != "oof_summary"}
    if "oof_accuracy_given" in result:
        print(f"round {kround.round_index}: OOF accuracy vs given labels {result['oof_accuracy_given']:.4f} over {len(oof)} train images -> {kround.round_dir / 'oof.parquet'}")
    return result
