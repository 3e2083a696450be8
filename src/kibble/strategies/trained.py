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


def trained_precision(ctx, classes: Sequence[str | int] | None = None, threshold: float = 0.8) -> StrategyOutput:
    """StrategyOutput over ctx.oof rows: flagged = rows labelled A for each low-precision class A."""
    from kibble.training.build import build_data_and_model, build_trainer, predict_rows, restore_best

    cfg = ctx.cfg
    if cfg is None or cfg.get("model") is None or cfg.get("trainer") is None:
        raise KibbleError("precision mode=train needs the round's model config: run it inside `kibble kfold` / `kibble loop`, or use mode=renormalize")
    labels, probs = ctx.given_indices(), ctx.probs()
    if classes:
        index = ctx.classes.index
        targets = [index[c] if isinstance(c, str) else int(c) for c in classes]
    else:
        targets = list(low_precision_classes(labels, probs, threshold)[0])
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
        trainer = build_trainer(cfg, ctx.round_dir / "precision" / f"without_{a}", with_logger=False, enable_progress_bar=False)
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
