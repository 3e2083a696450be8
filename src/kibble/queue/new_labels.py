"""New-label queues: active-learning strategies over the unlabeled pool -> queue rows with kind=new.

Same columns and files as a relabel queue (queue.csv, Label Studio tasks); `given_label` is empty
and `suggested_label` is the model's guess, shown to the annotator as a pre-annotation.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from kibble import KibbleError
from kibble.queue.builder import build_queue
from kibble.strategies.active_registry import get_active_strategy, needs, parse_switch, run_active, strategy_at
from kibble.strategies.base import StrategyOutput
from kibble.strategies.transfer import HeldOut


def pool_rows(manifest: pd.DataFrame, source: str = "manifest") -> pd.DataFrame:
    """The unlabeled pool (split=pool, not excluded); a pool row that carries a label is an error."""
    pool = manifest["split"] == "pool"
    labelled = pool & manifest["label"].notna()
    if labelled.any():
        row = int(np.flatnonzero(labelled.to_numpy())[0])
        raise KibbleError(
            f"{source}: row {row} (sample_id {manifest['sample_id'].iloc[row]!r}) has split=pool but label "
            f"{manifest['label'].iloc[row]!r}; pool rows are unlabeled: set its split to train or clear the label"
        )
    if "excluded" in manifest.columns:
        pool &= ~manifest["excluded"].fillna(False).astype(bool)
    return manifest[pool]


def switch_members(strategies: Sequence[str], n_labels: int | None, n_classes: int) -> dict[str, str]:
    """Each configured name -> the strategy that picks now: itself, or a switch's member for `n_labels` labels over
    `n_classes` classes (unknown names fail here, before any work)."""
    members = {}
    for name in strategies:
        get_active_strategy(name)
        if parse_switch(name) is not None and n_labels is None:
            raise KibbleError(f"active strategy {name!r} switches by the number of labels; none was given")
        if parse_switch(name) is not None and not n_classes:
            raise KibbleError(f"active strategy {name!r} switches at labels per class; give n_classes (no probabilities to count them)")
        members[name] = strategy_at(name, int(n_labels or 0), int(n_classes))
    return members


def score_pool(strategies: Sequence[str], probs: np.ndarray, *, embeddings: np.ndarray | None = None, mc_probs: np.ndarray | None = None,
               severity: np.ndarray | None = None, batch_size: int | None = None, seed: int = 0,
               params: Mapping[str, Mapping[str, Any]] | None = None, n_labels: int | None = None,
               **inputs: Any) -> dict[str, StrategyOutput]:
    """Every configured active strategy over the pool, by name (unknown names fail before any work).
    inputs: labelled_embeddings, held_out, n_classes (see `run_active`). A switch (typiclust:margin@5) runs the
    member that `n_labels` labels call for, under its configured name (params: the member's)."""
    members = switch_members(strategies, n_labels, inputs.get("n_classes") or (probs.shape[1] if probs is not None else 0))
    params = params or {}
    return {
        name: run_active(member, probs, embeddings=embeddings, mc_probs=mc_probs, severity=severity,
                         batch_size=batch_size, seed=seed, **inputs, **dict(params.get(member, {})))
        for name, member in members.items()
    }


def build_new_queue(pool: pd.DataFrame, outputs: Mapping[str, StrategyOutput], class_names: Sequence[str], budget: int,
                    round_index: int = 0, quotas: Mapping[str, float] | None = None, suppress: set[str] | None = None) -> pd.DataFrame:
    """A budgeted kind=new queue over `pool` rows (in the order the outputs were scored)."""
    if budget > len(pool):
        raise KibbleError(f"new-label budget {budget} is larger than the pool ({len(pool)} unlabeled images); lower budget.new or add images to the pool")
    return build_queue(
        pool["sample_id"].tolist(), [None] * len(pool), outputs, class_names, int(budget),
        round_index=round_index, quotas=quotas, suppress=suppress, paths=pool["path"].tolist(), kind="new",
    )


def concat_queues(relabel: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """One queue file: relabel items first, then new-label items; ranks renumbered 1..n."""
    parts = [q for q in (relabel, new) if q is not None and len(q)]
    if not parts:
        return relabel if relabel is not None else new
    out = pd.concat(parts, ignore_index=True)
    out["rank"] = np.arange(1, len(out) + 1)
    return out


def round_new_queue(ctx, strategies: Sequence[str], budget: int, params: Mapping[str, Mapping[str, Any]] | None = None,
                    quotas: Mapping[str, float] | None = None, suppress: set[str] | None = None, seed: int = 0) -> tuple[pd.DataFrame, dict[str, StrategyOutput]]:
    """The kind=new part of a k-fold round's queue, from the fold-ensemble pool predictions
    (rounds/NNN/predictions.parquet; embeddings when cv.save_embeddings=true)."""
    from kibble.data.datamodule import trainable_rows
    from kibble.predictions.store import stack

    pool = pool_rows(ctx.manifest, str(ctx.workspace.manifest))
    preds = ctx.predictions
    if preds is None or not len(preds) or "split" not in preds.columns:
        preds = pd.DataFrame(columns=["sample_id", "split"])
    preds = preds[preds["split"] == "pool"].set_index("sample_id")
    missing = sorted(set(pool["sample_id"]) - set(preds.index))
    if missing:
        raise KibbleError(f"{ctx.round_dir}: no pool predictions for {len(missing)} pool rows (e.g. {missing[0]!r}); keep `pool` in cv.predict_splits")
    preds = preds.loc[pool["sample_id"]].reset_index()
    probs = stack(preds) if len(preds) else np.zeros((0, len(ctx.classes)))
    embeddings = stack(preds, "embedding") if "embedding" in preds.columns and len(preds) else None
    n_labels = int(trainable_rows(ctx.manifest).sum())
    members = list(switch_members(strategies, n_labels, len(ctx.classes.names)).values())  # a switch: the member these labels call for
    if "bald" in members:
        raise KibbleError("strategy 'bald' needs MC-dropout passes of a trained head; use it in `kibble loop mode=active` "
                          "(features mode), or pick entropy/margin/kmeans for a k-fold round")
    severity = ctx.classes.severity_matrix(ctx.workspace.root) if "expected_cost" in members else None
    labelled = ctx.embeddings() if any(needs(n) & {"labelled_embeddings", "held_out"} for n in members) else None
    held_out = HeldOut(labelled, ctx.given_indices(), ctx.probs()) if labelled is not None else None  # the OOF: held out by its fold
    outputs = score_pool(strategies, probs, embeddings=embeddings, severity=severity, batch_size=budget, seed=seed, params=params,
                         labelled_embeddings=labelled, held_out=held_out, n_labels=n_labels)
    queue = build_new_queue(pool, outputs, ctx.classes.names, budget, round_index=ctx.round_index, quotas=quotas, suppress=suppress)
    return queue, outputs
