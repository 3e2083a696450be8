"""The prediction store (DESIGN §3): Parquet of per-sample probabilities + a sidecar JSON.

Rows: sample_id, fold, given_label, probs (K floats in classes.yaml order), optional logits and
embedding. The sidecar holds class names, manifest fingerprint, model config hash and `complete`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kibble import KibbleError
from kibble.io import atomic_write_json, atomic_write_parquet, read_json


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.stem + ".meta.json")


def make_frame(
    sample_ids: list[str],
    probs: np.ndarray,
    given_labels: list[str | None] | None = None,
    fold: int | np.ndarray = -1,
    logits: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "sample_id": list(sample_ids),
            "fold": np.broadcast_to(np.asarray(fold, dtype=np.int64), (len(sample_ids),)).copy(),
            "given_label": list(given_labels) if given_labels is not None else [None] * len(sample_ids),
            "probs": list(np.asarray(probs, dtype=np.float32)),
        }
    )
    if logits is not None:
        frame["logits"] = list(np.asarray(logits, dtype=np.float32))
    if embeddings is not None:
        frame["embedding"] = list(np.asarray(embeddings, dtype=np.float32))
    return frame


def stack(frame: pd.DataFrame, column: str = "probs") -> np.ndarray:
    """The list column as an (N, K) float array."""
    if len(frame) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([np.asarray(v, dtype=np.float32) for v in frame[column]])


def validate_probs(probs: np.ndarray, n_classes: int, source: str, sample_ids: list[str] | None = None) -> None:
    if len(probs) == 0:
        return  # an empty store (e.g. no val/test/pool rows) is valid
    if probs.ndim != 2 or probs.shape[1] != n_classes:
        raise KibbleError(f"{source}: probabilities have shape {probs.shape}, expected (N, {n_classes}) for the class list")
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        who = f" (sample_id {sample_ids[row]!r})" if sample_ids else ""
        raise KibbleError(f"{source}: row {row}{who} has NaN/inf probabilities; re-run the fold that produced it")
    sums = probs.sum(axis=1)
    off = np.abs(sums - 1.0) > 1e-3
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise KibbleError(f"{source}: row {row} probabilities sum to {sums[row]:.4f}, not 1; store softmax outputs")


def write_store(path: str | Path, frame: pd.DataFrame, meta: dict[str, Any]) -> Path:
    """Validate, then write the table and its sidecar atomically (the sidecar last: it marks completeness)."""
    class_names = meta["class_names"]
    validate_probs(stack(frame), len(class_names), str(path), frame["sample_id"].tolist())
    atomic_write_parquet(path, frame)
    atomic_write_json(sidecar_path(path), meta)
    return Path(path)


def read_store(path: str | Path, class_names: list[str] | None = None, require_complete: bool = True) -> tuple[pd.DataFrame, dict[str, Any]]:
    path = Path(path)
    meta_path = sidecar_path(path)
    if not path.is_file() or not meta_path.is_file():
        raise KibbleError(f"{path}: prediction store (or its sidecar {meta_path.name}) not found")
    meta = read_json(meta_path)
    if require_complete and not meta.get("complete", False):
        raise KibbleError(f"{path}: prediction store is marked incomplete; re-run the job that writes it")
    if class_names is not None and list(meta.get("class_names", [])) != list(class_names):
        raise KibbleError(
            f"{path}: class list {meta.get('class_names')} differs from classes.yaml {list(class_names)}; "
            "re-run predictions with the current classes"
        )
    frame = pd.read_parquet(path)
    validate_probs(stack(frame), len(meta["class_names"]), str(path), frame["sample_id"].tolist())
    return frame, meta
