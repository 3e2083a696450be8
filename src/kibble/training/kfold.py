"""The k-fold engine: fold assignment, one fold's training and prediction, OOF assembly.

Resumable at two levels: complete folds are skipped, and an interrupted fold resumes from its
`last.ckpt` (same optimizer and scheduler state; a preempted SLURM job loses at most the steps since
the last checkpoint). Rank-aware under DDP: every rank trains and predicts its shard, global rank 0
alone touches the fold's files, and the ranks meet at barriers between those steps, so no rank waits
inside a collective while another does file work. Parallel across jobs (one fold per job through a
Hydra launcher or `cv.devices`; folds meet only through the store). Orchestration of a whole round
is in kibble.training.round.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import hydra
import lightning as L
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from kibble import KibbleError
from kibble.data.classes import ClassList
from kibble.data.datamodule import drop_unreadable, trainable_rows
from kibble.data.folds import assign_folds
from kibble.data.images import DEFAULT_MAX_PIXELS, set_max_image_pixels
from kibble.data.manifest import load_manifest, rows_fingerprint
from kibble.io import atomic_write_json, atomic_write_parquet, read_json
from kibble.paths import Workspace
from kibble.predictions.oof import assemble_oof, check_fold_meta, ensemble_mean
from kibble.predictions.store import make_frame, read_store, sidecar_path, write_store
from kibble.training.build import attach_features, build_data_and_model, build_trainer, features_mode, predict_rows, restore_best
from kibble.training.cost import FoldCost
from kibble.training.distributed import barrier, global_rank, is_rank_zero, rank_zero_logger

log = rank_zero_logger(__name__)


def round_fingerprint(train_rows: pd.DataFrame) -> str:
    """What the OOF depends on: the trainable samples and their current labels."""
    return rows_fingerprint(train_rows)


def config_hash(cfg: DictConfig) -> str:
    """Hash of everything that shapes a fold's predictions (not where it runs or which fold)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    parts = {k: resolved.get(k) for k in ("model", "data", "embedder", "seed")}
    parts["trainer"] = {k: v for k, v in (resolved.get("trainer") or {}).items() if k in ("max_epochs", "min_epochs", "precision", "limit_train_batches")}
    # how data is loaded, not what the model sees: these may change between runs of one round
    loader_only = ("workspace", "num_workers", "eval_batch_size", "pin_memory", "persistent_workers", "prefetch_factor",
                   "decoded_cache", "decoded_cache_dir", "normalize_on_device")
    parts["data"] = {k: v for k, v in (parts["data"] or {}).items() if k not in loader_only}
    parts["cv"] = {k: v for k, v in (resolved.get("cv") or {}).items() if k not in ("fold", "assemble_only", "progress", "keep_checkpoints", "checkpoint_every_n_steps", "devices", "assemble", "heads_together")}
    text = OmegaConf.to_yaml(OmegaConf.create(parts))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prepare_round(round_dir: Path, round_index: int, train_rows: pd.DataFrame, classes: ClassList, cv: DictConfig, seed: int, write: bool = True) -> pd.DataFrame:
    """Assign folds once per round (folds.parquet + round.json); later runs check nothing changed.

    write=False (DDP ranks > 0): compute the same seeded assignment without touching the files.
    """
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
    if not write:
        return folds
    atomic_write_parquet(folds_path, folds)
    atomic_write_json(info_path, {"round": round_index, "n_folds": int(cv.n_folds), "manifest_fingerprint": fingerprint, "class_names": classes.names, "n_train": len(folds)})
    return folds


RESUME_DIR = "resume"          # fold_K/resume/last.ckpt: the checkpoint an interrupted fold resumes from
STARTED_FILE = "started.json"  # fold_K/started.json: which round/config the fold's checkpoints belong to


class KFoldRound:
    """One round's folds: which are done, running one (resuming it if interrupted), assembling the rest."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.ws = Workspace(cfg.workspace).require()
        self.round_index = int(cfg.round) if cfg.get("round") is not None else self.ws.current_round()
        self.round_dir = self.ws.round_dir(self.round_index)
        self.classes = ClassList.load(self.ws.classes)
        self.manifest = load_manifest(self.ws.manifest, self.classes.names)
        self.train_rows = self._readable(self.manifest[trainable_rows(self.manifest)])  # on_bad_image=skip: no fold holds a bad image
        self.n_folds = int(cfg.cv.n_folds)
        self.folds = prepare_round(self.round_dir, self.round_index, self.train_rows, self.classes, cfg.cv, int(cfg.seed), write=is_rank_zero())
        self.fingerprint = round_fingerprint(self.train_rows)
        self.config_hash = config_hash(cfg)
        self._dm = None
        if features_mode(cfg):  # embed (or load the cache) once, before any progress display
            self._dm = hydra.utils.instantiate(cfg.data)
            attach_features(cfg, self._dm)

    def _readable(self, rows: pd.DataFrame) -> pd.DataFrame:
        data = self.cfg.get("data") or {}
        set_max_image_pixels(data.get("max_image_pixels", DEFAULT_MAX_PIXELS))
        said = self.__dict__.setdefault("_skipped", set())  # one warning per bad image, not one per fold
        rows, skipped = drop_unreadable(rows, self.ws.data_root, str(data.get("on_bad_image", "fail")), bool(data.get("verify_images", False)), said)
        said.update(skipped)
        return rows

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

    def _fold_identity(self, k: int) -> dict:
        return {"round": self.round_index, "fold": k, "manifest_fingerprint": self.fingerprint, "config_hash": self.config_hash}

    def resume_checkpoint(self, k: int) -> str | None:
        """The checkpoint an interrupted fold k resumes from, or None for a fresh start.

        A fold folder left by a different round, fold, manifest or config is refused (one line, nothing
        written) rather than silently mixed with this run.
        """
        started = self.fold_dir(k) / STARTED_FILE
        if not started.is_file():
            return None
        recorded = read_json(started)
        expected = self._fold_identity(k)
        for key, value in expected.items():
            if recorded.get(key) != value:
                raise KibbleError(
                    f"{self.fold_dir(k)}: an interrupted fold from another run ({key} {recorded.get(key)!r}, expected {value!r}); "
                    f"re-run with the same overrides to resume it, or delete {self.fold_dir(k)}"
                )
        candidates = [self.fold_dir(k) / RESUME_DIR / "last.ckpt", *self.fold_dir(k).glob("hpc_ckpt_*.ckpt")]
        existing = [p for p in candidates if p.is_file()]
        return str(max(existing, key=lambda p: p.stat().st_mtime)) if existing else None

    def start_fold(self, k: int) -> None:
        """Rank 0: a fold folder without a complete sidecar is (re)used; stale outputs of a crash go."""
        fold_dir = self.fold_dir(k)
        fold_dir.mkdir(parents=True, exist_ok=True)
        for stale in (self.heldout_path(k), sidecar_path(self.heldout_path(k)), self.others_path(k), sidecar_path(self.others_path(k))):
            stale.unlink(missing_ok=True)
        if not (fold_dir / STARTED_FILE).is_file():
            atomic_write_json(fold_dir / STARTED_FILE, self._fold_identity(k))

    def _resume_callback(self, k: int):
        """Writes fold_K/resume/last.ckpt every epoch (and every `cv.checkpoint_every_n_steps` steps)."""
        from lightning.pytorch.callbacks import ModelCheckpoint

        every = self.cfg.cv.get("checkpoint_every_n_steps")
        return ModelCheckpoint(
            dirpath=str(self.fold_dir(k) / RESUME_DIR), filename="step-{step}", save_top_k=0, save_last=True,
            every_n_train_steps=int(every) if every else None, save_on_train_epoch_end=True, enable_version_counter=False,
        )

    def run_fold(self, k: int) -> dict:
        """Train fold k (resuming it if it was interrupted), predict its held-out rows and the other splits.

        Every rank runs this; rank 0 alone writes. Returns the fold's meta on rank 0, {"fold", "rank"} elsewhere.
        """
        cfg = self.cfg
        if is_rank_zero():
            self.start_fold(k)
        barrier(f"fold {k} prepared")
        resume = self.resume_checkpoint(k)
        if resume:
            log.info("fold %d/%d: resuming from %s", k + 1, self.n_folds, resume)
        L.seed_everything(int(cfg.seed) + k, workers=True, verbose=False)
        fit_ids = self.folds.loc[self.folds["fold"] != k, "sample_id"].tolist()
        cost = FoldCost()
        dm, model = build_data_and_model(cfg, fit_ids=fit_ids, dm=self._dm)
        self._dm = dm
        # one progress display across folds (ours); no per-fold bars inside it
        trainer = build_trainer(cfg, self.fold_dir(k), with_logger=bool(cfg.get("logger")), extra_callbacks=[self._resume_callback(k)],
                                has_val=len(dm.val_rows) > 0, enable_progress_bar=False)
        start_step = _checkpoint_step(resume)
        trainer.fit(model, datamodule=dm, ckpt_path=resume)
        restore_best(trainer, model)
        cost.fitted(trainer, n_images=(trainer.global_step - start_step) * _images_per_step(trainer, dm))
        model.predict_embeddings = bool(cfg.cv.get("save_embeddings", False))
        held_ids = set(self.folds.loc[self.folds["fold"] == k, "sample_id"])
        held = self.train_rows[self.train_rows["sample_id"].isin(held_ids)]
        others = self._readable(self.manifest[self.manifest["split"].isin(list(cfg.cv.get("predict_splits", [])))])
        out = predict_rows(model, dm, held, cfg.trainer, gather="zero")
        out_others = predict_rows(model, dm, others, cfg.trainer, gather="zero")
        model.predict_embeddings = False
        cost.predicted(trainer, n_images=len(held) + len(others))
        meta = {"fold": k, "rank": global_rank()}
        if is_rank_zero():
            facts = {"n_fit": len(dm.fit_rows), "n_inner_val": len(dm.val_rows), "epochs": max(int(trainer.current_epoch), 1),
                     "global_step": int(trainer.global_step), "resumed_from_step": start_step if resume else None, **cost.summary()}
            meta = self.write_fold(k, held, others, out, out_others, facts)
        barrier(f"fold {k} written")
        return meta

    def write_fold(self, k: int, held: pd.DataFrame, others: pd.DataFrame, out: dict, out_others: dict, facts: dict) -> dict:
        """Fold k's stores (the held-out one last: it marks the fold complete); `facts`: how it was trained."""
        accuracy = float((out["probs"].argmax(1) == self.classes.codes(held["label"])).mean())
        meta = {
            **self._fold_identity(k), "class_names": self.classes.names, "complete": True, "n_heldout": len(held),
            "heldout_accuracy_given": accuracy, **facts,
        }
        others_frame = make_frame(others["sample_id"].tolist(), out_others["probs"], others["label"].tolist(), k, out_others.get("logits"), out_others.get("embedding"))
        others_frame["split"] = others["split"].to_numpy()
        write_store(self.others_path(k), others_frame, {**meta, "complete": True})
        held_frame = make_frame(held["sample_id"].tolist(), out["probs"], held["label"].tolist(), k, out.get("logits"), out.get("embedding"))
        write_store(self.heldout_path(k), held_frame, meta)  # written last: marks the fold complete
        shutil.rmtree(self.fold_dir(k) / RESUME_DIR, ignore_errors=True)  # a complete fold never resumes
        ckpt = self.fold_dir(k) / "checkpoints"
        if ckpt.is_dir() and not self.cfg.cv.get("keep_checkpoints", True):
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

    def assembled_after_folds(self) -> bool:
        """True if this round's OOF is complete, of this config, and newer than every fold's file: another
        job of a multirun (e.g. `hydra/launcher=slurm`, whose last jobs may finish together) already assembled it."""
        path = self.round_dir / "oof.parquet"
        if not (path.is_file() and sidecar_path(path).is_file()):
            return False
        meta = read_json(sidecar_path(path))
        if not meta.get("complete") or meta.get("config_hash") != self.config_hash or meta.get("manifest_fingerprint") != self.fingerprint:
            return False
        newest_fold = max(self.heldout_path(k).stat().st_mtime_ns for k in range(self.n_folds))
        return path.stat().st_mtime_ns >= newest_fold

    def read_assembled(self) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        """The OOF and fold-ensemble predictions rank 0 assembled (other ranks read them after a barrier)."""
        oof = read_store(self.round_dir / "oof.parquet", self.classes.names)[0]
        path = self.round_dir / "predictions.parquet"
        return oof, (read_store(path, self.classes.names)[0] if path.is_file() else pd.DataFrame(columns=oof.columns))

    def fold_costs(self) -> list[dict]:
        """Per-fold cost (device, images/s, peak memory, wall time) from the complete folds' sidecars."""
        from kibble.training.cost import COST_KEYS

        rows = []
        for k in range(self.n_folds):
            meta = read_json(sidecar_path(self.heldout_path(k)))
            rows.append({"fold": k, **{key: meta.get(key) for key in COST_KEYS}})
        return rows


def _checkpoint_step(path: str | None) -> int:
    if not path:
        return 0
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=False).get("global_step", 0))


def _images_per_step(trainer: L.Trainer, dm) -> int:
    """Images one optimizer step consumes across all ranks (for train images/s)."""
    return int(dm.batch_size) * int(trainer.world_size) * int(trainer.accumulate_grad_batches)


ROUND_CONFIG_KEYS = ("seed", "model", "data", "embedder", "trainer", "callbacks", "cv", "paths")


def save_round_config(cfg: DictConfig, path: Path) -> None:
    """The round's training config, so `kibble queue` can re-train for strategies that need a model
    (precision mode=train). Unresolved: `${workspace}` follows the workspace if it is moved or copied."""
    from kibble.io import atomic_write_text

    saved = {k: OmegaConf.to_container(cfg[k], resolve=False) if OmegaConf.is_config(cfg[k]) else cfg[k] for k in ROUND_CONFIG_KEYS if k in cfg}
    (saved.get("paths") or {}).pop("output_dir", None)  # the run's own output dir
    atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(saved)))
