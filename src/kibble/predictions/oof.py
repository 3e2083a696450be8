"""Assemble per-fold held-out predictions into one OOF table, and validate it against the round."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kibble import KibbleError
from kibble.predictions.store import matrix_column, read_store, stack


def check_fold_meta(meta: dict, path: Path, round_index: int, fold: int, fingerprint: str, class_names: list[str]) -> None:
    """A fold file must come from this round, this fold, this manifest state and class list."""
    if int(meta.get("round", -1)) != int(round_index):
        raise KibbleError(f"{path}: fold file belongs to round {meta.get('round')}, not round {round_index}; delete it or re-run that round")
    if int(meta.get("fold", -1)) != int(fold):
        raise KibbleError(f"{path}: holds fold {meta.get('fold')}, expected fold {fold}; delete it")
    if meta.get("manifest_fingerprint") != fingerprint:
        raise KibbleError(f"{path}: made from a different manifest; the labels changed since — delete it or use a new round")
    if list(meta.get("class_names", [])) != list(class_names):
        raise KibbleError(f"{path}: made with a different class list; delete it or use a new round")


def assemble_oof(fold_files: list[Path], folds: pd.DataFrame, class_names: list[str]) -> pd.DataFrame:
    """Concatenate held-out predictions; every train sample must appear exactly once, in its own fold."""
    parts = [read_store(p, class_names)[0] for p in fold_files]
    oof = pd.concat(parts, ignore_index=True)
    dup = oof["sample_id"].duplicated()
    if dup.any():
        raise KibbleError(f"OOF: sample {oof.loc[dup, 'sample_id'].iloc[0]!r} predicted by more than one fold")
    expected = folds.set_index("sample_id")["fold"]
    missing = sorted(set(expected.index) - set(oof["sample_id"]))
    if missing:
        raise KibbleError(f"OOF: {len(missing)} train samples have no held-out prediction (e.g. {missing[0]!r}); re-run their fold")
    extra = sorted(set(oof["sample_id"]) - set(expected.index))
    if extra:
        raise KibbleError(f"OOF: sample {extra[0]!r} is not a train sample of this round")
    wrong = oof["fold"].to_numpy() != expected.loc[oof["sample_id"]].to_numpy()
    if wrong.any():
        raise KibbleError(f"OOF: sample {oof.loc[wrong, 'sample_id'].iloc[0]!r} was predicted by a fold that trained on it")
    return oof.sort_values("sample_id").reset_index(drop=True)


def ensemble_mean(fold_frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Mean of the fold models' softmax over the same rows (val/test/pool): the fold ensemble."""
    if not fold_frames:
        return pd.DataFrame(columns=["sample_id", "fold", "given_label", "probs"])
    base = fold_frames[0].sort_values("sample_id").reset_index(drop=True)
    probs = stack(base).astype(np.float64)  # a float64 copy: the sum runs in place
    ids = base["sample_id"]
    for frame in fold_frames[1:]:
        frame = frame.sort_values("sample_id").reset_index(drop=True)
        if not frame["sample_id"].equals(ids):
            raise KibbleError("fold ensemble: folds predicted different rows; re-run the round")
        probs += stack(frame)
    probs /= len(fold_frames)
    out = base[["sample_id", "given_label"]].copy()
    out.insert(1, "fold", -1)
    out["probs"] = matrix_column((probs / probs.sum(axis=1, keepdims=True)).astype(np.float32))
    if "split" in base.columns:
        out["split"] = base["split"]
    return out
