"""The manifest: one row per image (DESIGN §3). Schema, validation, load and atomic save."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kibble import KibbleError
from kibble.io import atomic_write_parquet

REQUIRED_COLUMNS = ("sample_id", "path", "label", "split")
SPLITS = ("train", "val", "test", "pool")


def validate_manifest(frame: pd.DataFrame, class_names: list[str] | None = None, source: str = "manifest") -> pd.DataFrame:
    """Check the manifest contract and return it with normalised dtypes; raise one clear line otherwise."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise KibbleError(
            f"{source}: missing column(s) {missing}; a manifest needs {list(REQUIRED_COLUMNS)}"
        )
    frame = frame.reset_index(drop=True).copy()
    if frame["sample_id"].isna().any():
        row = int(frame.index[frame["sample_id"].isna()][0])
        raise KibbleError(f"{source}: row {row} has an empty sample_id; give every image an id")
    frame["sample_id"] = frame["sample_id"].astype(str)
    dup = frame["sample_id"].duplicated(keep=False)
    if dup.any():
        rows = frame.index[dup].tolist()
        sid = frame.loc[rows[0], "sample_id"]
        raise KibbleError(
            f"{source}: duplicate sample_id {sid!r} at rows {rows[:5]}; sample_ids must be unique"
        )
    if frame["path"].isna().any():
        row = int(frame.index[frame["path"].isna()][0])
        raise KibbleError(f"{source}: row {row} (sample_id {frame.loc[row, 'sample_id']!r}) has no path")
    frame["path"] = frame["path"].astype(str)
    bad_split = ~frame["split"].isin(SPLITS)
    if bad_split.any():
        row = int(frame.index[bad_split][0])
        raise KibbleError(
            f"{source}: row {row} has split {frame.loc[row, 'split']!r}; use one of {list(SPLITS)}"
        )
    # labels as str or None, converted once per distinct label (a 10^6-row manifest has ~10^2 of them)
    codes, uniq = pd.factorize(frame["label"], use_na_sentinel=True)
    texts = np.array([str(v) for v in uniq] + [None], dtype=object)
    frame["label"] = pd.Series(texts[codes], index=frame.index, dtype=object)
    if class_names is not None:
        known = set(class_names)
        unknown = np.isin(codes, [i for i, v in enumerate(texts[:-1]) if v not in known])
        if unknown.any():
            row = int(frame.index[unknown][0])
            raise KibbleError(
                f"{source}: row {row} (sample_id {frame.loc[row, 'sample_id']!r}) has unknown class "
                f"{frame.loc[row, 'label']!r}; add it to classes.yaml or fix the label"
            )
    return frame


def load_manifest(path: str | Path, class_names: list[str] | None = None) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise KibbleError(f"{path}: manifest not found; run `kibble import` first")
    return validate_manifest(pd.read_parquet(path), class_names, source=str(path))


def save_manifest(frame: pd.DataFrame, path: str | Path, class_names: list[str] | None = None) -> Path:
    frame = validate_manifest(frame, class_names, source=str(path))
    return atomic_write_parquet(path, frame)


def rows_fingerprint(rows: pd.DataFrame) -> str:
    """A hash of which samples `rows` holds and their labels (order-independent)."""
    import hashlib

    rows = rows.sort_values("sample_id")
    payload = "\n".join(f"{s}\t{l}" for s, l in zip(rows["sample_id"], rows["label"]))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def manifest_fingerprint(frame: pd.DataFrame) -> str:
    """A hash of what a k-fold round depends on: which train samples exist and their labels."""
    return rows_fingerprint(frame[frame["split"] == "train"])


def classes_without_train(frame: pd.DataFrame, class_names: list[str]) -> list[str]:
    """Classes no trainable row has (split train, a label, not excluded): a model cannot learn them.

    Said as a warning (import, merge) rather than an error: a class may be on its way in (pool, reviews).
    """
    mask = (frame["split"] == "train") & frame["label"].notna()
    if "excluded" in frame.columns:
        mask &= ~frame["excluded"].fillna(False).astype(bool)
    present = {str(v) for v in pd.unique(frame.loc[mask, "label"].to_numpy(dtype=object))}
    return [c for c in class_names if c not in present]


def resolve_image_path(path: str, data_root: str | Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else Path(data_root) / p
