"""`kibble train`: fit on the train split (inner validation for early stopping), test, save metrics."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig

from kibble.io import atomic_write_json
from kibble.paths import config_dir
from kibble.training.build import best_checkpoint, build_data_and_model, build_trainer, restore_best
from kibble.training.distributed import ddp_job

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    L.seed_everything(cfg.seed, workers=True)
    out_dir = Path(cfg.paths.output_dir)
    dm, model = build_data_and_model(cfg)
    trainer = build_trainer(cfg, out_dir, has_val=len(dm.val_rows) > 0)
    log.info("training on %d images (inner val %d), %d classes", len(dm.fit_rows), len(dm.val_rows), len(dm.class_names))
    trainer.fit(model, datamodule=dm, ckpt_path=cfg.get("ckpt_path"))
    restore_best(trainer, model)
    result: dict = {"best_checkpoint": best_checkpoint(trainer), "n_train": len(dm.fit_rows), "n_inner_val": len(dm.val_rows)}
    if cfg.get("test", True) and len(dm.test_rows):
        tested = trainer.test(model, datamodule=dm, verbose=False)[0]
        result.update(
            test_split=dm.test_split,
            n_test=_scored(trainer, len(dm.test_rows)),  # what was scored: limit_test_batches may cut the split
            n_test_split=len(dm.test_rows),
            test_accuracy=float(tested["test/acc"]),
            test_f1_macro=float(tested["test/f1_macro"]),
        )
    if not trainer.is_global_zero:  # DDP: rank 0 reports and writes metrics.json
        return result
    if "test_accuracy" in result:
        n, of = result["n_test"], result["n_test_split"]
        scored = f"{n} images" if n == of else f"{n} of its {of} images (limit_test_batches)"
        as_test = "" if dm.test_split == "test" else " used as test: the workspace has no test split"
        print(f"test accuracy {result['test_accuracy']:.4f}  macro F1 {result['test_f1_macro']:.4f}  ({dm.test_split} split{as_test}; {scored})")
    if dm.skipped:
        result["skipped_images"] = dm.skipped
    atomic_write_json(out_dir / "metrics.json", result)
    log.info("metrics: %s", out_dir / "metrics.json")
    return result


def _scored(trainer: L.Trainer, split_size: int) -> int:
    """Test images actually scored: the batches Lightning ran (after limit_test_batches) x batch size, on
    every rank, at most the split (DDP pads the last batch with repeats, which are not extra images)."""
    loader = trainer.test_dataloaders
    loader = loader[0] if isinstance(loader, (list, tuple)) else loader
    batches = trainer.num_test_batches[0] if trainer.num_test_batches else None
    if loader is None or batches is None or batches == float("inf") or not getattr(loader, "batch_size", None):
        return split_size
    return min(split_size, int(batches) * loader.batch_size * trainer.world_size)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    with ddp_job():  # a multirun's next job starts its own DDP ranks on a fresh port
        return run(cfg).get("test_accuracy")
