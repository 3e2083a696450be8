"""Is the evaluation set representative? Checks from the scoping questions (PROBLEM.md):

- images per class vs a minimum (default 10) and classes with no evaluation images at all;
- coverage of metadata values per class (e.g. every breed seen indoor and outdoor, in each light);
- duplicates between train and the evaluation split (same file content, by SHA-1), which inflate
  every metric.

`check_eval_set` returns a plain dict (goes into metrics.json and the report); `problems` lists one
human-readable line per failed check.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from kibble import KibbleError
from kibble.data.manifest import resolve_image_path

# manifest columns that are not metadata to slice or check coverage by
CORE_COLUMNS = {"sample_id", "path", "label", "split", "group", "true_label"}


def metadata_columns(manifest: pd.DataFrame, max_values: int = 20) -> list[str]:
    """Extra manifest columns with few distinct values (categorical metadata such as environment)."""
    out = []
    for col in manifest.columns:
        if col in CORE_COLUMNS or manifest[col].dtype.kind == "f":
            continue
        try:
            n = manifest[col].dropna().astype(str).nunique()
        except TypeError:  # list/array cells
            continue
        if 1 < n <= max_values:
            out.append(col)
    return out


def file_sha1(path: str | Path, chunk: int = 1 << 20) -> str | None:
    """SHA-1 of a file's bytes, or None when it cannot be read."""
    digest = hashlib.sha1()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(chunk), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def duplicates_between(train: pd.DataFrame, test: pd.DataFrame, data_root: str | Path, progress: bool = False) -> list[dict[str, str]]:
    """Pairs (test sample, train sample) whose image files have identical bytes."""
    from rich.progress import track

    def hashes(rows: pd.DataFrame, what: str) -> pd.Series:
        paths = [resolve_image_path(p, data_root) for p in rows["path"]]
        it = track(paths, description=f"hashing {what} images", disable=not progress)
        return pd.Series([file_sha1(p) for p in it], index=rows["sample_id"].to_numpy())

    train_hash = hashes(train, "train")
    by_hash: dict[str, str] = {}
    for sid, h in train_hash.items():
        if h is not None:
            by_hash.setdefault(h, sid)
    out = []
    for sid, h in hashes(test, "evaluation").items():
        if h is not None and h in by_hash:
            out.append({"sample_id": str(sid), "train_sample_id": str(by_hash[h]), "sha1": h})
    return out


def coverage(rows: pd.DataFrame, class_names: Sequence[str], column: str) -> dict[str, Any]:
    """Which values of `column` each class has in `rows`, and what each class is missing."""
    if column not in rows.columns:
        raise KibbleError(f"manifest has no column {column!r} to check coverage of; available: {sorted(set(rows.columns) - CORE_COLUMNS)}")
    values = rows[column].astype(object).where(rows[column].notna(), None).map(lambda v: "(missing)" if v is None else str(v))
    all_values = sorted(set(values) - {"(missing)"})
    table = pd.crosstab(rows["label"], values).reindex(index=list(class_names), fill_value=0)
    missing = {}
    for name in class_names:
        counts = table.loc[name] if name in table.index else pd.Series(dtype=int)
        lacking = [v for v in all_values if int(counts.get(v, 0)) == 0]
        if lacking and int(counts.sum()) > 0:
            missing[str(name)] = lacking
    return {
        "column": column,
        "values": all_values,
        "counts": {str(c): {str(v): int(n) for v, n in table.loc[c].items()} for c in table.index},
        "classes_missing_values": missing,
    }


def check_eval_set(
    manifest: pd.DataFrame,
    class_names: Sequence[str],
    split: str = "test",
    min_per_class: int = 10,
    coverage_columns: Sequence[str] | None = None,
    data_root: str | Path | None = None,
    check_duplicates: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """All evaluation-set checks for `split` (labelled rows); `passed` is False when any fails."""
    if int(min_per_class) < 0:
        raise KibbleError(f"min_per_class={min_per_class}; use a count >= 0")
    labelled = manifest[manifest["label"].notna()]
    rows = labelled[labelled["split"] == split] if split != "all" else labelled
    counts = rows["label"].value_counts().reindex(list(class_names), fill_value=0).astype(int)
    no_images = [str(c) for c, n in counts.items() if n == 0]
    below = {str(c): int(n) for c, n in counts.items() if 0 < n < int(min_per_class)}
    columns = list(coverage_columns) if coverage_columns is not None else metadata_columns(manifest)
    covered = [coverage(rows, class_names, col) for col in columns]
    duplicates: list[dict[str, str]] | None = None
    if check_duplicates and data_root is not None and split != "train":
        train = labelled[labelled["split"] == "train"] if split != "all" else labelled.iloc[0:0]
        duplicates = duplicates_between(train, rows, data_root, progress=progress) if len(train) and len(rows) else []
    problems = []
    if no_images:
        problems.append(f"{len(no_images)} classes have no {split} images: {no_images[:10]}")
    if below:
        problems.append(f"{len(below)} classes have fewer than {min_per_class} {split} images: " + ", ".join(f"{c} ({n})" for c, n in list(below.items())[:10]))
    for cov in covered:
        if cov["classes_missing_values"]:
            example = next(iter(cov["classes_missing_values"].items()))
            problems.append(f"{len(cov['classes_missing_values'])} classes lack some `{cov['column']}` values (e.g. {example[0]}: {example[1]})")
    if duplicates:
        problems.append(f"{len(duplicates)} {split} images are byte-identical to train images (e.g. {duplicates[0]['sample_id']} = {duplicates[0]['train_sample_id']})")
    return {
        "split": split,
        "n": int(len(rows)),
        "min_per_class": int(min_per_class),
        "images_per_class": {str(c): int(n) for c, n in counts.items()},
        "classes_without_images": no_images,
        "classes_below_min": below,
        "coverage": covered,
        "duplicates_checked": duplicates is not None,
        "train_duplicates": duplicates or [],
        "problems": problems,
        "passed": not problems,
    }
