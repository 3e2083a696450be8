"""One k-fold round end to end: train the missing folds, assemble the OOF, run the round callbacks.

Under DDP every rank runs `run_round`: the ranks train and predict each fold together (see
kibble.training.kfold), rank 0 assembles, and then every rank runs the callbacks' *collective* part
(strategies that train a model, e.g. precision cleaning with `mode=train`, under the same strategy
as the folds) before rank 0 alone writes the queue, the metrics and the report. No rank leaves while
another still needs it in a collective.
"""

from __future__ import annotations

import time
from typing import Any

import hydra
from omegaconf import DictConfig, open_dict

from kibble import KibbleError
from kibble.labels.lock import lock_timeout_of, workspace_lock
from kibble.progress import Progress
from kibble.rounds import RoundContext, update_round_metrics
from kibble.training.distributed import barrier, broadcast_object, global_rank, is_rank_zero, rank_zero_logger
from kibble.training.folds_together import together_settings, train_folds_together
from kibble.training.kfold import KFoldRound, save_round_config

log = rank_zero_logger(__name__)


def build_round_callbacks(cfg: DictConfig) -> dict[str, Any]:
    """Instantiate the round callbacks up front, so a config typo fails before hours of training."""
    from hydra.errors import InstantiationException

    callbacks = {}
    for name, cb_cfg in (cfg.get("round_callbacks") or {}).items():
        if cb_cfg is None:
            continue
        try:
            callbacks[name] = hydra.utils.instantiate(cb_cfg)
        except InstantiationException as err:  # the user's mistake, not Hydra's: its one line
            if isinstance(err.__cause__, KibbleError):
                raise err.__cause__ from None
            raise
    return callbacks


def _train_folds(kround: KFoldRound, folds: list[int], show_progress: bool) -> dict[int, dict]:
    """Train `folds` in turn; progress (k of K, time per fold, ETA) after every fold (kibble.progress)."""
    stats: dict[int, dict] = {}
    together = []
    if together_settings(kround.cfg) is not None:  # features mode, linear head, one device: the pending heads as one model
        together = [k for k in folds if not kround.fold_complete(k) and not kround.resume_checkpoint(k)]
    if len(together) > 1:
        stats = train_folds_together(kround, together, show_progress)
        for k, meta in stats.items():
            log.info("fold %d/%d: trained with folds %s, held-out accuracy %.4f", k + 1, kround.n_folds,
                     [j + 1 for j in meta["trained_with_folds"]], meta["heldout_accuracy_given"])
        folds = [k for k in folds if k not in stats]
        if not folds:
            return stats
    with Progress(f"k-fold round {kround.round_index}", len(folds), "folds", enabled=show_progress, every=0, logger=log) as bar:
        for k in folds:
            if kround.fold_complete(k):
                log.info("fold %d/%d: complete, skipped", k + 1, kround.n_folds)
                bar.skip(note=f"fold {k + 1}/{kround.n_folds} already complete")  # not in the time per fold
                continue
            meta = kround.run_fold(k)
            if is_rank_zero():
                stats[k] = meta
                log.info(
                    "fold %d/%d: %.1f s, %d train images (%.0f train img/s, %.0f predict img/s on %s), held-out accuracy %.4f",
                    k + 1, kround.n_folds, meta["seconds"], meta["n_fit"], meta["train_images_per_second"],
                    meta["predict_images_per_second"], meta.get("device"), meta["heldout_accuracy_given"],
                )
            bar.advance(note=f"fold {k + 1}/{kround.n_folds} done")
    return stats


def run_round(cfg: DictConfig) -> dict:
    """Train the round's missing folds, then (once all are complete) assemble the OOF and run the round callbacks."""
    callbacks = build_round_callbacks(cfg)
    if any(getattr(cb, "needs_embeddings", False) for cb in callbacks.values()) and not cfg.cv.get("save_embeddings", False):
        log.info("round: the queue's strategies read embeddings; storing them in the OOF (cv.save_embeddings=true)")
        with open_dict(cfg):
            cfg.cv.save_embeddings = True
    kround = KFoldRound(cfg)
    folds = [int(cfg.cv.fold)] if cfg.cv.get("fold") is not None else list(range(kround.n_folds))
    if any(k < 0 or k >= kround.n_folds for k in folds):
        raise KibbleError(f"cv.fold={cfg.cv.fold}: folds are numbered 0..{kround.n_folds - 1}")
    for k in range(kround.n_folds):  # a stale/foreign fold file fails now, before any fold is trained
        kround.fold_complete(k)
        kround.resume_checkpoint(k)
    log.info("round %d: %d train samples, %d folds -> %s", kround.round_index, len(kround.folds), kround.n_folds, kround.round_dir)
    fold_stats: dict[int, dict] = {}
    wall_s: dict[str, float] = {}  # seconds per step of this call, for `kibble loop`'s per-round wall times
    started = time.perf_counter()
    if not cfg.cv.get("assemble_only", False):
        fold_stats = _train_folds(kround, folds, bool(cfg.cv.get("progress", True)) and is_rank_zero())
    barrier("folds done")
    wall_s["folds"] = time.perf_counter() - started
    pending = [k for k in range(kround.n_folds) if not kround.fold_complete(k)]
    result: dict[str, Any] = {"round": kround.round_index, "round_dir": str(kround.round_dir), "folds_run": sorted(fold_stats), "pending_folds": pending}
    if pending:
        log.info("round %d: waiting for folds %s before assembling the OOF", kround.round_index, pending)
        return result
    if not cfg.cv.get("assemble", True):  # a fold process of `cv.devices`: its parent assembles, once
        return result
    started = time.perf_counter()
    assembled_elsewhere = False
    if is_rank_zero():
        with workspace_lock(kround.ws, "kibble kfold", lock_timeout_of(cfg)):  # the round's shared files: one writer at a time
            # one fold job of a multirun: the jobs that find every fold complete race here; the first assembles
            # and runs the callbacks, the others leave (they would write the same queue and metrics again)
            assembled_elsewhere = cfg.cv.get("fold") is not None and kround.assembled_after_folds()
            if not assembled_elsewhere:
                oof, predictions = kround.assemble()
                save_round_config(cfg, kround.round_dir / "config.yaml")
                update_round_metrics(kround.round_dir, {"fold_costs": kround.fold_costs()})
    if broadcast_object(assembled_elsewhere):
        log.info("round %d: another job already assembled the OOF after the last fold; nothing left for this one", kround.round_index)
        return result
    barrier("round assembled")
    if not is_rank_zero():
        oof, predictions = kround.read_assembled()
    ctx = RoundContext(kround.ws, kround.round_index, kround.round_dir, kround.manifest, kround.classes, oof, predictions, cfg)
    wall_s["assemble"] = time.perf_counter() - started
    for name, callback in callbacks.items():  # every rank: work that trains under the folds' strategy
        collective = getattr(callback, "collective", None)
        if collective is not None:
            started = time.perf_counter()
            collective(ctx)
            wall_s[f"callback:{name}"] = time.perf_counter() - started
    barrier("round callbacks' collective work done")
    if not is_rank_zero():
        return {"round": kround.round_index, "rank": global_rank()}
    for name, callback in callbacks.items():
        started = time.perf_counter()
        ctx.results[name] = callback(ctx)
        wall_s[f"callback:{name}"] = wall_s.get(f"callback:{name}", 0.0) + time.perf_counter() - started
    result["wall_s"] = wall_s
    summary = ctx.results.get("oof_summary", {})
    result.update(oof=str(kround.round_dir / "oof.parquet"), **{k: v for k, v in summary.items() if not isinstance(v, dict)})
    result["callbacks"] = {k: v for k, v in ctx.results.items() if k != "oof_summary"}
    if "oof_accuracy_given" in result:
        print(f"round {kround.round_index}: OOF accuracy vs given labels {result['oof_accuracy_given']:.4f} over {len(oof)} train images -> {kround.round_dir / 'oof.parquet'}")
    return result
