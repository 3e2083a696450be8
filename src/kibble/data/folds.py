"""Fold assignment: stratified by label, grouped when the manifest has `group`, seeded."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from kibble import KibbleError


def assign_folds(rows: pd.DataFrame, n_folds: int, seed: int = 0) -> pd.DataFrame:
    """Return (sample_id, fold) for `rows` (the trainable train rows), sorted by sample_id.

    Rows sharing a non-null `group` (same dog, near-duplicates) always land in the same fold.
    """
    if n_folds < 2:
        raise KibbleError(f"cv.n_folds={n_folds}; k-fold needs at least 2 folds")
    if len(rows) < 2:  # no number of folds helps: k-fold needs >= 2 folds, each holding out a labelled image
        raise KibbleError(f"{len(rows)} labelled train row(s): k-fold needs train images with labels (split train, a label, "
                          "not excluded); import or label some (kibble merge), or check the manifest's split column")
    if len(rows) < n_folds:
        raise KibbleError(f"only {len(rows)} train rows for {n_folds} folds; lower cv.n_folds to {len(rows)} or less")
    counts = rows["label"].astype(str).value_counts()
    if counts.min() < n_folds:
        fewest = int(counts.min())
        fix = f"lower cv.n_folds to {fewest} or add images of that class" if fewest >= 2 else "add images of that class"
        raise KibbleError(
            f"class {counts.idxmin()!r} has {fewest} train image(s) for cv.n_folds={n_folds}: "
            f"every fold must hold out at least one image of each class; {fix}"
        )
    rows = rows.sort_values("sample_id").reset_index(drop=True)
    labels = rows["label"].astype(str).to_numpy()
    folds = np.full(len(rows), -1, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # grouped folds can still leave a class out of a fold
        if "group" in rows.columns and rows["group"].notna().any():
            groups = rows["group"].astype(object).where(rows["group"].notna(), "__sample__" + rows["sample_id"]).astype(str)
            splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
            splits = splitter.split(np.zeros(len(rows)), labels, groups.to_numpy())
        else:
            splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
            splits = splitter.split(np.zeros(len(rows)), labels)
        for k, (_, held_out) in enumerate(splits):
            folds[held_out] = k
    return pd.DataFrame({"sample_id": rows["sample_id"], "fold": folds})
