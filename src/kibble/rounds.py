"""Round callbacks: what runs once a round's OOF is assembled (summary, queue building, ...).

A callback is any callable taking a RoundContext; configure them under `round_callbacks:` with
`_target_` (instantiated, then called in order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kibble.data.classes import ClassList
from kibble.io import atomic_write_json, read_json
from kibble.paths import Workspace
from kibble.predictions.store import stack
from kibble.values import map_distinct


@dataclass
class RoundContext:
    workspace: Workspace
    round_index: int
    round_dir: Path
    manifest: pd.DataFrame
    classes: ClassList
    oof: pd.DataFrame
    predictions: pd.DataFrame | None = None
    cfg: Any = None
    results: dict[str, Any] = field(default_factory=dict)
    # outputs of the callbacks' collective steps (run on every DDP rank), read by rank 0's steps
    shared: dict[str, Any] = field(default_factory=dict)

    def given_indices(self) -> np.ndarray:
        index = self.classes.index
        return map_distinct(self.oof["given_label"], lambda label: index[label]).astype(np.int64)  # a lookup per class, not per row

    def probs(self) -> np.ndarray:
        return stack(self.oof)

    def embeddings(self) -> np.ndarray | None:
        return stack(self.oof, "embedding") if "embedding" in self.oof.columns else None


def update_round_metrics(round_dir: Path, values: dict[str, Any]) -> dict[str, Any]:
    """Merge `values` into rounds/NNN/metrics.json (several callbacks contribute keys)."""
    path = round_dir / "metrics.json"
    metrics = read_json(path) if path.is_file() else {}
    metrics.update(values)
    atomic_write_json(path, metrics)
    return metrics


def oof_summary(labels: np.ndarray, probs: np.ndarray, class_names: list[str], true_labels: np.ndarray | None = None) -> dict[str, Any]:
    """OOF accuracy vs the given labels (and vs the truth when known), per-class OOF precision/recall."""
    from sklearn.metrics import precision_recall_fscore_support

    pred = probs.argmax(axis=1)
    precision, recall, _, support = precision_recall_fscore_support(labels, pred, labels=np.arange(len(class_names)), zero_division=0)
    summary: dict[str, Any] = {
        "n_oof": int(len(labels)),
        "oof_accuracy_given": float((pred == labels).mean()) if len(labels) else float("nan"),
        "oof_per_class": {
            name: {"precision": float(p), "recall": float(r), "support": int(s)}
            for name, p, r, s in zip(class_names, precision, recall, support)
        },
    }
    if true_labels is not None:
        summary["oof_accuracy_true"] = float((pred == true_labels).mean())
        summary["noise_in_train"] = float((labels != true_labels).mean())
    return summary


class OOFSummary:
    """Round callback: write the OOF summary into rounds/NNN/metrics.json."""

    def __call__(self, ctx: RoundContext) -> dict[str, Any]:
        labels = ctx.given_indices()
        true = None
        if "true_label" in ctx.manifest.columns:
            truth = ctx.manifest.set_index("sample_id")["true_label"]
            index = ctx.classes.index
            values = truth.reindex(ctx.oof["sample_id"])
            if values.notna().all():
                true = np.array([index[v] for v in values], dtype=np.int64)
        summary = {"round": ctx.round_index, **oof_summary(labels, ctx.probs(), ctx.classes.names, true)}
        if ctx.predictions is not None and len(ctx.predictions) and "split" in ctx.predictions.columns:
            for split in ("val", "test"):
                part = ctx.predictions[(ctx.predictions["split"] == split) & ctx.predictions["given_label"].notna()]
                if len(part):
                    index = ctx.classes.index
                    y = np.array([index[v] for v in part["given_label"]])
                    summary[f"{split}_accuracy"] = float((stack(part).argmax(1) == y).mean())
        update_round_metrics(ctx.round_dir, summary)
        ctx.results["oof_summary"] = summary
        return summary
