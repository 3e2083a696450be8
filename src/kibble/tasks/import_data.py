"""`kibble import`: read a source into workspace/manifest.parquet, classes.yaml and label_events.parquet.

mode=new (default) creates a workspace; overwrite=true (mode=replace) re-imports, archiving the old
history under W/history/ and carrying its answers over (keep_history=false: archive only);
mode=append adds the source's new images. Everything is checked before the first write
(kibble.data.reimport).
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from kibble.data.images import DEFAULT_MAX_PIXELS, set_max_image_pixels
from kibble.data.reimport import apply_import, check_workspace, import_mode, plan_import
from kibble.labels.lock import lock_timeout_of
from kibble.paths import Workspace, config_dir

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    set_max_image_pixels(cfg.get("max_image_pixels", DEFAULT_MAX_PIXELS))
    ws = Workspace(cfg.workspace)
    mode = import_mode(cfg.get("mode"), bool(cfg.overwrite))
    check_workspace(ws, mode)  # before reading the source
    frame, names, display, data_root = hydra.utils.instantiate(cfg.source)
    plan = plan_import(ws, frame, names, display, data_root, mode=mode, source=f"source {cfg.source._target_.rsplit('.', 1)[-1]}",
                       pool=cfg.get("pool"), on_bad_image=cfg.on_bad_image, noise=cfg.get("inject_noise"), taxonomy=cfg.get("taxonomy", "auto"),
                       origin=cfg.source._target_, check_images=str(cfg.get("check_images", "decode")))
    if plan.skipped:
        log.warning("skipping %d unreadable images (see import_report.json)", len(plan.skipped))
    report = apply_import(ws, plan, keep_history=bool(cfg.get("keep_history", True)), lock_timeout=lock_timeout_of(cfg))
    if mode == "append":
        print(f"appended {report['n_images']} new images to {ws.root} ({report['n_existing']} already there, kept; splits: {report['splits']})")
    else:
        print(f"imported {report['n_images']} images, {report['n_classes']} classes into {ws.root} (splits: {report['splits']})")
    if "archive" in report:
        print(f"  previous history archived in {report['archive']}; {report['events_carried']} human answers carried over, "
              f"{report['events_left_in_archive']} left in the archive (samples or classes gone{', keep_history=false' if not cfg.get('keep_history', True) else ''})")
    for note in report["notes"]:
        print(f"  {note}")
    return report


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="import")
def main(cfg: DictConfig) -> None:
    run(cfg)
