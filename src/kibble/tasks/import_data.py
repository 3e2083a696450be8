"""`kibble import`: read a source into workspace/manifest.parquet, classes.yaml and label_events.parquet."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig

from kibble import KibbleError
from kibble.data.taxonomy import taxonomy_for
from kibble.data.images import scan_images
from kibble.data.manifest import resolve_image_path, save_manifest, validate_manifest
from kibble.data.sources import inject_noise, make_pool, pool_from_folder
from kibble.io import atomic_write_json, atomic_write_parquet
from kibble.paths import Workspace, config_dir
from kibble.labels.history import initial_events
from kibble.labels.lock import lock_timeout_of, workspace_lock
from kibble.queue.new_labels import pool_rows

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    ws = Workspace(cfg.workspace)
    if ws.manifest.is_file() and not cfg.overwrite:
        raise KibbleError(f"{ws.manifest}: workspace already imported; use a new workspace or overwrite=true")
    frame, names, display, data_root = hydra.utils.instantiate(cfg.source)
    notes = list(frame.attrs.get("notes", []))  # e.g. a test split drawn at random: said, not silent
    source = f"source {cfg.source._target_.rsplit('.', 1)[-1]}"
    frame = validate_manifest(frame, names, source=source)
    pool_rows(frame, source=source)  # a labelled pool row is an error
    pool = cfg.get("pool") or {}
    if pool.get("folder"):  # new, unlabeled images for active learning
        if "true_label" not in frame.columns:
            frame["true_label"] = frame["label"]
        frame = validate_manifest(pd.concat([frame, pool_from_folder(pool["folder"], names)], ignore_index=True), names, source=f"pool.folder={pool['folder']}")
    paths = [resolve_image_path(p, data_root) for p in frame["path"]]
    bad = scan_images(paths, cfg.on_bad_image, progress=True)
    if bad:
        log.warning("skipping %d unreadable images (see import_report.json)", len(bad))
        frame = frame.drop(frame.index[list(bad)]).reset_index(drop=True)
    if pool.get("fraction") or pool.get("labels_per_class") is not None:
        frame = make_pool(frame, pool.get("fraction"), pool.get("labels_per_class"), int(pool.get("seed", 0)))
    noise = cfg.get("inject_noise") or {}
    if float(noise.get("rate", 0.0)) > 0:
        frame = inject_noise(frame, names, float(noise["rate"]), int(noise.get("seed", 0)))

    with workspace_lock(ws, "kibble import", lock_timeout_of(cfg)):  # nobody merges into what is being replaced
        if ws.manifest.is_file() and not cfg.overwrite:  # another import got here first
            raise KibbleError(f"{ws.manifest}: workspace already imported; use a new workspace or overwrite=true")
        if cfg.overwrite:
            for stale in (ws.root / "rounds", ws.label_events, ws.state):
                if stale.is_dir():
                    shutil.rmtree(stale)
                elif stale.exists():
                    stale.unlink()
        ws.root.mkdir(parents=True, exist_ok=True)
        # a shipped taxonomy (Stanford Dogs / Imagewoof breed groups) when the class set matches
        classes, taxonomy = taxonomy_for(names, display, cfg.get("taxonomy", "auto"))
        classes.save(ws.classes)
        atomic_write_parquet(ws.label_events, initial_events(frame))
        save_manifest(frame, ws.manifest, classes.names)
        data_root = Path(data_root).resolve()
        try:
            stored_root = os.path.relpath(data_root, ws.root) if data_root.is_relative_to(ws.root) else str(data_root)
        except ValueError:
            stored_root = str(data_root)
        ws.update_state(round=0, data_root=stored_root)
    report = {
        "source": cfg.source._target_,
        "n_images": len(frame),
        "n_classes": len(names),
        "taxonomy": taxonomy,
        "splits": frame["split"].value_counts().to_dict(),
        "skipped": {str(paths[i]): reason for i, reason in bad.items()},
        "noisy_labels": int((frame["label"].notna() & (frame["label"] != frame["true_label"])).sum()) if "true_label" in frame else 0,
        "notes": notes,
    }
    if "true_label" in frame and frame["true_label"].notna().any():
        notes.append(f"true_label kept ({report['noisy_labels']} labels differ from it): read only by the simulated annotator and detection metrics")
    atomic_write_json(ws.root / "import_report.json", report)
    print(f"imported {len(frame)} images, {len(names)} classes into {ws.root} (splits: {report['splits']})")
    for note in notes:
        print(f"  {note}")
    return report


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="import")
def main(cfg: DictConfig) -> None:
    run(cfg)
