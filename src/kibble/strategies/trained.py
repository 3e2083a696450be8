"""Precision cleaning with training (DESIGN §4): for each low-precision class A, train a model on
every other class only (no image of A), apply it to A's training images, rank by its top score.

Not a pure function: it trains through the same Lightning path as the round (features mode
included), so it runs as part of a round (`strategy.params.precision.mode=train`).
"""

from __future__ import annotations

from typing import Sequence

import lightning as L
import numpy as np

from kibble import KibbleError
from kibble.strategies.base import StrategyOutput
from kibble.strategies.cleaning import low_precision_classes
from kibble.training.distributed import rank_zero_logger

log = rank_zero_logger(__name__)


def expected_fit_seconds(round_dir) -> float | None:
    """Mean fit time of the round's folds (metrics.json fold_costs), the cost of one precision model; None if unknown."""
    import json

    path = round_dir / "metrics.json"
    try:
        costs = json.loads(path.read_text()).get("fold_costs") or {}
    except (OSError, ValueError):
        return None
    seconds = [c.get("fit_seconds") for c in (costs.values() if isinstance(costs, dict) else costs) if isinstance(c, dict)]
    seconds = [float(x) for x in seconds if isinstance(x, (int, float))]
    return sum(seconds) / len(seconds) if seconds else None


def trained_precision(ctx, classes: Sequence[str | int] | None = None, threshold: float = 0.8,
                      max_classes: int | None = 3) -> StrategyOutput:
    """StrategyOutput over ctx.oof rows: flagged = rows labelled A for each low-precision class A.

    Each class costs a model trained like one fold, so at most `max_classes` are trained (the lowest
    OOF precision first; null = no cap) and the expected cost is logged before the first one starts."""
    from kibble.training.build import build_data_and_model, build_trainer, predict_rows, restore_best

    cfg = ctx.cfg
    if cfg is None or cfg.get("model") is None or cfg.get("trainer") is None:
        raise KibbleError("precision mode=train needs the round's model config: run it inside `kibble kfold` / `kibble loop`, or use mode=renormalize")
    labels, probs = ctx.given_indices(), ctx.probs()
    if classes:
        index = ctx.classes.index
        targets = [index[c] if isinstance(c, str) else int(c) for c in classes]
    else:
        low, precision = low_precision_classes(labels, probs, threshold)
        targets = sorted(low.tolist(), key=lambda a: precision[a])
    if max_classes is not None:
        if int(max_classes) < 0:
            raise KibbleError(f"precision max_classes={max_classes}; give a count >= 0 or null")
        if len(targets) > int(max_classes):
            log.info("precision: %d low-precision classes, training for the %d lowest (strategy.params.precision.max_classes)",
                     len(targets), int(max_classes))
        targets = targets[: int(max_classes)]
    per_model = expected_fit_seconds(ctx.round_dir)
    if targets:
        cost = f"about {len(targets) * per_model / 60:.1f} min ({per_model:.0f} s per model, the folds' mean)" if per_model else "cost unknown"
        log.info("precision mode=train: %d model(s), one per class without it (%s): %s", len(targets), cost,
                 ", ".join(ctx.classes.names[a] for a in targets))
    n = len(labels)
    score, suggested, flagged = np.zeros(n), np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=bool)
    sample_ids = ctx.oof["sample_id"].to_numpy()
    for a in targets:
        rows_a = np.flatnonzero(labels == a)
        if not len(rows_a):
            continue
        L.seed_everything(int(cfg.seed) + 1000 + int(a), workers=True, verbose=False)
        fit_ids = sample_ids[labels != a].tolist()
        dm, model = build_data_and_model(cfg, fit_ids=fit_ids)
        trainer = build_trainer(cfg, ctx.round_dir / "precision" / f"without_{a}", with_logger=False, has_val=len(dm.val_rows) > 0,
                                enable_progress_bar=False)
        trainer.fit(model, datamodule=dm)
        restore_best(trainer, model)
        target_rows = dm.manifest.set_index("sample_id").loc[sample_ids[rows_a]].reset_index()
        out = predict_rows(model, dm, target_rows, cfg.trainer)["probs"].astype(np.float64)
        out[:, a] = 0.0  # the model never saw A; its column carries no evidence
        out /= np.clip(out.sum(axis=1, keepdims=True), 1e-12, None)
        score[rows_a] = out.max(axis=1)
        suggested[rows_a] = out.argmax(axis=1)
        flagged[rows_a] = True
        log.info("precision: class %s (%d images) scored by a model trained without it", ctx.classes.names[a], len(rows_a))
    return StrategyOutput(score=score, suggested=suggested, flagged=flagged)
