"""`kibble predict`: a checkpoint's softmax for a manifest split or a folder of images -> prediction store.

    kibble predict workspace=W ckpt_path=CKPT [split=test | images=DIR] [out=PATH] [save_embeddings=true]

Works for full fine-tune (ImageClassifier) and features-mode (FeatureClassifier) checkpoints; the
latter embed the images first with the checkpoint's own embedder settings (through the workspace's
feature cache for manifest rows). Output: Parquet in the prediction-store format (DESIGN §3) plus
`predicted_label`, `confidence` and `path` columns (+ `embedding`, the pooled pre-logit features, with
save_embeddings=true: what `kibble monitor` compares), and a sidecar JSON.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from kibble import KibbleError
from kibble.data.classes import ClassList
from kibble.data.dataset import ManifestDataset
from kibble.data.images import DEFAULT_MAX_PIXELS, scan_images, set_max_image_pixels
from kibble.data.manifest import SPLITS, load_manifest, manifest_fingerprint, resolve_image_path
from kibble.data.sources import IMAGE_SUFFIXES
from kibble.data.transforms import build_transform
from kibble.paths import Workspace, config_dir
from kibble.predictions.shards import (assembled_for, assemble_shards, missing_line, missing_shards, parse_shard, rows_fingerprint,
                                       shard_path, shard_rows)
from kibble.predictions.store import make_frame, write_store
from kibble.training.build import load_classifier, predict_rows

log = logging.getLogger(__name__)


class RowsDataModule(L.LightningDataModule):
    """Predict-only data: manifest-like rows read as images, or a matrix of precomputed features."""

    def __init__(self, class_names: list[str], data_root: str | Path = ".", data_config: dict[str, Any] | None = None,
                 features: np.ndarray | None = None, batch_size: int = 128, num_workers: int = 0):
        super().__init__()
        self.class_names = list(class_names)
        self.data_root = Path(data_root)
        self.data_config = data_config
        self.features = features
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.predict_rows = pd.DataFrame()

    def set_predict(self, rows: pd.DataFrame) -> None:
        self.predict_rows = rows.reset_index(drop=True)

    def predict_dataloader(self) -> DataLoader:
        n = len(self.predict_rows)
        if self.features is not None:
            x = torch.from_numpy(np.ascontiguousarray(self.features, dtype=np.float32))
            dataset = TensorDataset(x, torch.full((n,), -1, dtype=torch.long), torch.arange(n))
        else:
            dataset = ManifestDataset(self.predict_rows, self.data_root, self.class_names, build_transform(self.data_config, train=False))
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)


def model_class_names(model: L.LightningModule, fallback: list[str] | None = None) -> list[str]:
    names = model.hparams.get("class_names")
    if names:
        return [str(n) for n in names]
    if fallback is not None and len(fallback) == model.num_classes:
        return list(fallback)
    return [str(i) for i in range(model.num_classes)]


def check_same_classes(model_names: list[str], workspace_names: list[str], ckpt_path: str, classes_file: Path) -> None:
    if list(model_names) == list(workspace_names):
        return
    extra = [c for c in model_names if c not in workspace_names]
    missing = [c for c in workspace_names if c not in model_names]
    detail = f"checkpoint-only {extra[:5]}, workspace-only {missing[:5]}" if extra or missing else "same names in a different order"
    raise KibbleError(
        f"ckpt_path={ckpt_path}: the model's {len(model_names)} classes differ from {classes_file} "
        f"({len(workspace_names)} classes; {detail}); use a checkpoint trained on this workspace"
    )


def embedder_for(model: L.LightningModule, overrides: dict[str, Any] | None = None):
    """Rebuild the features-mode embedder stored in the checkpoint (optionally with overridden kwargs)."""
    from kibble.data.features import Embedder

    stored = dict(model.hparams.get("embedder") or {})
    if not stored:
        raise KibbleError("features-mode checkpoint has no `embedder` settings; retrain it with model=features")
    kwargs = {k: v for k, v in {**stored, **(overrides or {})}.items() if k != "_target_"}
    return Embedder(**kwargs)


def drop_bad_images(rows: pd.DataFrame, data_root: Path, policy: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """Check every image decodes: `fail` raises naming the file, `skip` drops and reports them."""
    bad = scan_images([resolve_image_path(p, data_root) for p in rows["path"]], policy, progress=True)
    skipped = {str(rows.iloc[i]["sample_id"]): reason for i, reason in bad.items()}
    if bad:
        log.warning("skipping %d unreadable images", len(bad))
        rows = rows.drop(rows.index[list(bad)])
    return rows.reset_index(drop=True), skipped


def model_outputs(model: L.LightningModule, rows: pd.DataFrame, data_root: Path, class_names: list[str], cfg: DictConfig,
                  ws: Workspace | None = None) -> dict[str, np.ndarray]:
    """probs and logits for `rows` (in order) from either module type; features-mode embeddings of
    manifest rows (ws given) go through the workspace's feature cache, as in training."""
    from kibble.models.head import FeatureClassifier

    batch_size, workers = int(cfg.get("batch_size", 128)), int(cfg.get("num_workers", 0))
    # pooled pre-logit features too (features mode: the frozen-backbone embedding), for drift monitoring
    model.predict_embeddings = bool(cfg.get("save_embeddings", False))
    if isinstance(model, FeatureClassifier):
        overrides = OmegaConf.to_container(cfg.embedder, resolve=True) if cfg.get("embedder") else None
        embedder = embedder_for(model, overrides)
        if ws is not None:
            # the same cache entry `kibble train` / `kibble kfold` use (kibble.training.build.attach_features)
            cache_dir = Path((cfg.get("paths") or {}).get("cache_dir") or ws.cache) / "features"
            _, matrix = embedder.features_for(rows, data_root, cache_dir, root_id=ws.feature_root_id)
        else:
            matrix = embedder.embed(rows, data_root)
        dm = RowsDataModule(class_names, features=matrix, batch_size=batch_size, num_workers=0)
    else:
        dm = RowsDataModule(class_names, data_root, model.data_config(), batch_size=batch_size, num_workers=workers)
    return predict_rows(model, dm, rows, cfg.get("trainer"))


def prediction_frame(rows: pd.DataFrame, outputs: dict[str, np.ndarray], class_names: list[str], given: bool) -> pd.DataFrame:
    probs = outputs["probs"]
    frame = make_frame(
        rows["sample_id"].astype(str).tolist(),
        probs,
        given_labels=rows["label"].tolist() if given else None,
        logits=outputs.get("logits"),
        embeddings=outputs.get("embedding"),
    )
    top = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=int)
    frame["predicted_label"] = [class_names[i] for i in top]
    frame["confidence"] = probs.max(axis=1).astype(np.float32) if len(probs) else np.zeros(0, np.float32)
    frame["path"] = rows["path"].astype(str).tolist()
    return frame


def split_rows(manifest: pd.DataFrame, split: str, source: str) -> pd.DataFrame:
    if split != "all" and split not in SPLITS:
        raise KibbleError(f"split={split!r}; use one of {[*SPLITS, 'all']}")
    rows = manifest if split == "all" else manifest[manifest["split"] == split]
    if rows.empty:
        counts = manifest["split"].value_counts().to_dict()
        raise KibbleError(f"{source}: no rows in split {split!r} (the manifest has {counts}); choose another split=")
    return rows.reset_index(drop=True)


def predict_manifest(model: L.LightningModule, ws: Workspace, rows: pd.DataFrame, cfg: DictConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Predictions for manifest rows of `ws` (the model's classes must be the workspace's)."""
    set_max_image_pixels(cfg.get("max_image_pixels", DEFAULT_MAX_PIXELS))
    classes = ClassList.load(ws.classes)
    names = model_class_names(model, classes.names)
    check_same_classes(names, classes.names, str(cfg.ckpt_path), ws.classes)
    skipped: dict[str, str] = {}
    if cfg.get("on_bad_image", "fail") == "skip" or cfg.get("verify_images", False):
        rows, skipped = drop_bad_images(rows, ws.data_root, cfg.get("on_bad_image", "fail"))
    outputs = model_outputs(model, rows, ws.data_root, names, cfg, ws=ws)
    frame = prediction_frame(rows, outputs, names, given=True)
    return frame, {"class_names": names, "skipped": skipped}


def folder_rows(folder: str | Path) -> tuple[pd.DataFrame, Path]:
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise KibbleError(f"images={root}: folder does not exist; point images= at a folder of images")
    root = root.resolve()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise KibbleError(f"images={root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under it")
    rel = [p.relative_to(root).as_posix() for p in files]
    return pd.DataFrame({"sample_id": rel, "path": rel, "label": [None] * len(rel)}), root


def default_out(ws: Workspace, cfg: DictConfig) -> Path:
    if cfg.get("out"):
        return Path(cfg.out).expanduser()
    name = Path(cfg.images).expanduser().resolve().name if cfg.get("images") else str(cfg.split)
    return ws.root / "predictions" / f"{name}.parquet"


def run(cfg: DictConfig) -> dict[str, Any]:
    if not cfg.get("ckpt_path"):
        raise KibbleError("ckpt_path is required: kibble predict workspace=W ckpt_path=CKPT [split=test | images=DIR]")
    ws = Workspace(cfg.workspace)
    shard = parse_shard(cfg.get("shard"))
    ckpt = str(Path(cfg.ckpt_path).expanduser().resolve())
    out = default_out(ws, cfg)
    model = load_classifier(cfg.ckpt_path)
    meta: dict[str, Any] = {"ckpt_path": ckpt, "model": type(model).__name__}
    if cfg.get("images"):
        set_max_image_pixels(cfg.get("max_image_pixels", DEFAULT_MAX_PIXELS))
        rows, root = folder_rows(cfg.images)
        if shard is not None:  # the full list's fingerprint, then this job's slice (only its images are checked)
            meta.update(rows_fingerprint=rows_fingerprint(rows["sample_id"]), shard=shard[0], n_shards=shard[1])
            rows = shard_rows(rows, *shard)
            if _shard_done(out, shard, meta):
                return _after_shard(out, shard, meta, cfg, skipped_work=True)
        rows, skipped = drop_bad_images(rows, root, cfg.get("on_bad_image", "fail"))
        fallback = ClassList.load(ws.classes).names if ws.classes.is_file() else None
        names = model_class_names(model, fallback)
        frame = prediction_frame(rows, model_outputs(model, rows, root, names, cfg), names, given=False)
        meta.update(class_names=names, images=str(root), split=None, skipped=skipped)
    else:
        ws.require()
        manifest = load_manifest(ws.manifest)
        rows = split_rows(manifest, str(cfg.split), str(ws.manifest))
        if shard is not None:
            meta.update(rows_fingerprint=rows_fingerprint(rows["sample_id"]), shard=shard[0], n_shards=shard[1])
            rows = shard_rows(rows, *shard)
            if _shard_done(out, shard, meta):
                return _after_shard(out, shard, meta, cfg, skipped_work=True)
        frame, extra = predict_manifest(model, ws, rows, cfg)
        meta.update(extra, split=str(cfg.split), images=None, manifest_fingerprint=manifest_fingerprint(manifest))
    meta.update(n=len(frame), complete=True, created_at=pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"))
    if shard is not None:
        write_store(shard_path(out, *shard), frame, meta)
        return _after_shard(out, shard, meta, cfg)
    write_store(out, frame, meta)
    result: dict[str, Any] = {"out": str(out), "n": len(frame), "skipped": len(meta.get("skipped") or {})}
    labelled = frame["given_label"].notna()
    if labelled.any():
        result["accuracy_vs_given"] = float((frame.loc[labelled, "predicted_label"] == frame.loc[labelled, "given_label"]).mean())
    where = f"split {cfg.split!r}" if meta.get("split") else f"folder {meta['images']}"
    extra_msg = f" (agreement with given labels {result['accuracy_vs_given']:.4f})" if "accuracy_vs_given" in result else ""
    print(f"wrote {len(frame)} predictions for {where} to {out}{extra_msg}")
    return result


def _rerun_hint(cfg: DictConfig) -> str:
    where = f"images={cfg.images}" if cfg.get("images") else f"split={cfg.split}"
    return f"kibble predict workspace={cfg.workspace} ckpt_path={cfg.ckpt_path} {where}" + (f" out={cfg.out}" if cfg.get("out") else "")


def _shard_done(out: Path, shard: tuple[int, int], meta: dict[str, Any]) -> bool:
    """This shard's store (or the assembled one) is there for the same row list and checkpoint: a re-launch skips it."""
    if assembled_for(out, shard[1], meta["rows_fingerprint"], meta["ckpt_path"]):
        return True
    return shard[0] not in missing_shards(out, shard[1], meta["rows_fingerprint"], meta["ckpt_path"])


def _after_shard(out: Path, shard: tuple[int, int], meta: dict[str, Any], cfg: DictConfig, skipped_work: bool = False) -> dict[str, Any]:
    """Assemble when every shard is done (the last one to finish does it); otherwise say what is left."""
    index, count = shard
    hint = _rerun_hint(cfg)
    what = f"shard {index}/{count} already done ({shard_path(out, index, count).name})" if skipped_work else \
        f"wrote shard {index}/{count}: {meta['n']} predictions to {shard_path(out, index, count)}"
    assembled = assemble_shards(out, count, meta["rows_fingerprint"], meta["ckpt_path"], hint)
    if assembled is None:
        missing = missing_shards(out, count, meta["rows_fingerprint"], meta["ckpt_path"])
        print(f"{what}; {missing_line(out, count, missing, hint)}")
        return {"out": str(shard_path(out, index, count)), "n": int(meta.get("n", 0)), "shard": f"{index}/{count}", "assembled": None,
                "missing_shards": missing}
    print(f"{what}; all {count} shards done: {assembled['n']} predictions in {out}")
    return {"out": str(shard_path(out, index, count)), "n": int(meta.get("n", 0)), "shard": f"{index}/{count}", "assembled": str(out),
            "n_assembled": int(assembled["n"]), "missing_shards": []}


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="predict")
def main(cfg: DictConfig) -> None:
    run(cfg)
