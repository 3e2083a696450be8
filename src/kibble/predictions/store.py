"""The prediction store (docs/ of the design, §3): Parquet of per-sample predictions + a sidecar JSON.

Rows: sample_id, fold, given_label, probs (K floats in classes.yaml order), optional logits and
embedding. The sidecar holds class names, manifest fingerprint, model config hash, `complete`, and
`dtype` (the storage type of the matrix columns).

Columnar layout. Each matrix column (probs, logits, embedding) is an Arrow fixed-size list
(`pa.list_(pa.float32(), K)`) in the file and, through `pd.ArrowDtype`, in the DataFrame: one
contiguous buffer, so `stack` is a reshape of it, not a Python object per row. At 10^6 x 10^3 the
per-row layout costs gigabytes of object headers and seconds of `np.stack`. `dtype="float16"`
halves the file; readers always hand out float32 (compute never sees float16).

Stores written before this layout (variable-size `list<float>` columns built from per-row numpy
arrays) still read: a list column whose rows all have one length is upgraded in memory. A frame
whose matrix column holds per-row arrays (object dtype) still writes and stacks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kibble import KibbleError
from kibble.io import atomic_path, atomic_write_json, read_json
from kibble.strategies.base import row_chunks

MATRIX_COLUMNS = ("probs", "logits", "embedding")
STORAGE_DTYPES = {"float32": pa.float32(), "float16": pa.float16()}
_FLOAT16_MAX = float(np.finfo(np.float16).max)
_ROW_GROUP_BYTES = 64 << 20  # row groups of ~64 MiB of matrix data: bounded write memory, parallel reads


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.stem + ".meta.json")


def matrix_column(values: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """An (N, K) array as a DataFrame column of Arrow fixed-size lists (float32; no copy when already
    C-contiguous float32)."""
    arr = np.ascontiguousarray(values, dtype=np.float32)
    if arr.ndim != 2:
        raise KibbleError(f"a matrix column needs a 2-D (N, K) array; got shape {arr.shape}")
    return pd.arrays.ArrowExtensionArray(_fixed_list(arr))


def _fixed_list(arr: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), int(arr.shape[1]))


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
            "probs": matrix_column(_per_row(probs, len(sample_ids))),
        }
    )
    if logits is not None:
        frame["logits"] = matrix_column(_per_row(logits, len(sample_ids)))
    if embeddings is not None:
        frame["embedding"] = matrix_column(_per_row(embeddings, len(sample_ids)))
    return frame


def _per_row(values: Any, n_rows: int) -> np.ndarray:
    """values as an (n_rows, width) matrix; a (0, width) matrix stays one (numpy cannot infer -1 from no rows:
    a fold with nothing to predict outside train, cv.predict_splits=[])."""
    matrix = np.asarray(values)
    return matrix if matrix.ndim == 2 and len(matrix) == n_rows else matrix.reshape(n_rows, -1)


def _as_fixed(values: Any, column: str) -> pa.FixedSizeListArray:
    """A matrix column (Arrow fixed-size or variable lists, or per-row arrays) as one fixed-size list array.

    Arrow input is used without copying its values (a frame with several chunks is combined once);
    per-row arrays are stacked (the pre-columnar layout).
    """
    data = getattr(values, "array", values)
    if isinstance(data, pd.arrays.ArrowExtensionArray):
        data = data.__arrow_array__()
    if isinstance(data, (pa.Array, pa.ChunkedArray)) and (pa.types.is_list(data.type) or pa.types.is_large_list(data.type)
                                                           or pa.types.is_fixed_size_list(data.type)):
        if isinstance(data, pa.ChunkedArray):
            data = data.combine_chunks() if data.num_chunks != 1 else data.chunk(0)
        if data.null_count:
            row = int(np.flatnonzero(data.is_null().to_numpy(zero_copy_only=False))[0])
            raise KibbleError(f"{column}: row {row} has no values; every row needs its {column}")
        if pa.types.is_fixed_size_list(data.type):
            return data
        lengths = pc.list_value_length(data)
        low, high = (pc.min(lengths).as_py(), pc.max(lengths).as_py()) if len(data) else (0, 0)
        if low != high:
            raise KibbleError(f"{column}: rows hold different numbers of values ({low}..{high}); one model per store")
        return pa.FixedSizeListArray.from_arrays(data.flatten(), int(high))
    rows = [np.asarray(v, dtype=np.float32) for v in data]
    if not rows:
        return _fixed_list(np.zeros((0, 0), dtype=np.float32))
    if any(r.ndim != 1 for r in rows) or len({len(r) for r in rows}) > 1:
        sizes = sorted({r.size for r in rows})
        raise KibbleError(f"{column}: rows hold different numbers of values ({sizes[0]}..{sizes[-1]}); one model per store")
    return _fixed_list(np.stack(rows))


def _matrix(fixed: pa.FixedSizeListArray) -> np.ndarray:
    """The (N, K) values of a fixed-size list array in their own dtype; a view when there are no nulls."""
    flat = fixed.flatten()
    return flat.to_numpy(zero_copy_only=flat.null_count == 0).reshape(len(fixed), fixed.type.list_size)


def stack(frame: pd.DataFrame, column: str = "probs") -> np.ndarray:
    """The matrix column as a contiguous (N, K) float32 array.

    For a column of Arrow fixed-size lists of float32 (what read_store and make_frame give) this is
    a read-only view of the column's buffer (one copy when the frame holds several chunks, e.g.
    after pd.concat): copy it before writing into it. A column of per-row arrays (the layout before,
    e.g. from a plain pd.read_parquet) is stacked into a new, writable array.
    """
    if len(frame) == 0:
        pa_type = getattr(frame[column].dtype, "pyarrow_dtype", None)
        width = pa_type.list_size if pa_type is not None and pa.types.is_fixed_size_list(pa_type) else 0
        return np.zeros((0, width), dtype=np.float32)
    data = frame[column].array
    if not isinstance(data, pd.arrays.ArrowExtensionArray):  # per-row arrays: a fresh (writable) array, as before
        return _matrix(_as_fixed(data, column)).copy()
    values = _matrix(_as_fixed(data, column))
    return values if values.dtype == np.float32 else values.astype(np.float32)


def validate_probs(probs: np.ndarray, n_classes: int, source: str, sample_ids: Sequence[str] | None = None) -> None:
    """Shape (N, K), finite, rows summing to 1 (within 1e-3); one chunked pass, no copy of the matrix."""
    if len(probs) == 0:
        return  # an empty store (e.g. no val/test/pool rows) is valid
    if probs.ndim != 2 or probs.shape[1] != n_classes:
        raise KibbleError(f"{source}: probabilities have shape {probs.shape}, expected (N, {n_classes}) for the class list")
    sums = np.empty(len(probs), dtype=np.float64)
    for rows in row_chunks(len(probs), probs.shape[1]):
        np.add.reduce(probs[rows], axis=1, dtype=np.float64, out=sums[rows])
    bad = ~np.isfinite(sums)  # a float64 sum of float32 values is finite exactly when every value is
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        who = f" (sample_id {sample_ids[row]!r})" if sample_ids is not None and len(sample_ids) else ""
        raise KibbleError(f"{source}: row {row}{who} has NaN/inf probabilities; re-run the fold that produced it")
    off = np.abs(sums - 1.0) > 1e-3
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise KibbleError(f"{source}: row {row} probabilities sum to {sums[row]:.4f}, not 1; store softmax outputs")


def _storage_dtype(meta: dict[str, Any], dtype: str | None) -> str:
    dtype = dtype or meta.get("dtype") or "float32"
    if dtype not in STORAGE_DTYPES:
        raise KibbleError(f"prediction store dtype={dtype!r}; use one of {sorted(STORAGE_DTYPES)}")
    return dtype


def _to_table(frame: pd.DataFrame, dtype: str, path: Path) -> pa.Table:
    """The frame as an Arrow table with every matrix column a fixed-size list of the storage dtype."""
    matrix = [c for c in frame.columns if c in MATRIX_COLUMNS]
    table = pa.Table.from_pandas(frame.drop(columns=matrix), preserve_index=False)
    for column in matrix:
        fixed = _as_fixed(frame[column], column)
        width = fixed.type.list_size
        if dtype == "float16":
            values = _matrix(fixed)
            if max((float(np.abs(values[rows]).max(initial=0.0)) for rows in row_chunks(len(values), width)), default=0.0) > _FLOAT16_MAX:
                raise KibbleError(f"{path}: {column} holds values beyond float16's range (65504); write it with dtype=float32")
            fixed = _fixed_list(values.astype(np.float16))
        elif fixed.type.value_type != pa.float32():
            fixed = pa.FixedSizeListArray.from_arrays(fixed.flatten().cast(pa.float32()), width)
        table = table.add_column(list(frame.columns).index(column), column, fixed)
    return table


def write_store(path: str | Path, frame: pd.DataFrame, meta: dict[str, Any], dtype: str | None = None) -> Path:
    """Validate, then write the table and its sidecar atomically (the sidecar last: it marks completeness).

    dtype: storage of the matrix columns, "float32" (default) or "float16" (half the bytes; about
    3 significant digits, enough to rank); also read from meta["dtype"]; recorded in the sidecar.
    """
    path = Path(path)
    dtype = _storage_dtype(meta, dtype)
    class_names = meta["class_names"]
    validate_probs(stack(frame), len(class_names), str(path), frame["sample_id"].array)
    table = _to_table(frame, dtype, path)
    width = max([table.schema.field(c).type.list_size for c in MATRIX_COLUMNS if c in table.column_names] + [1])
    bytes_per_row = 4 * width * sum(c in table.column_names for c in MATRIX_COLUMNS) or 4
    with atomic_path(path) as tmp:
        pq.write_table(
            table, tmp,
            use_dictionary=[c for c in table.column_names if c not in MATRIX_COLUMNS],  # dictionaries of floats only cost
            row_group_size=max(1024, _ROW_GROUP_BYTES // bytes_per_row),
        )
    atomic_write_json(sidecar_path(path), {**meta, "dtype": dtype})
    return path


def _read_matrix(path: Path, column: str, n_rows: int) -> pa.Array | pa.ChunkedArray:
    """One matrix column as a float32 fixed-size list over one buffer, filled a few row groups at a time.

    Peak memory is the (N, K) float32 result plus a few row groups, not twice the matrix; float16
    storage and the legacy variable-size lists are converted in the same copy. A logits/embedding
    column with missing rows or mixed widths is returned as stored (readable, not stackable).
    """
    file = pq.ParquetFile(path)
    kind = file.schema_arrow.field(column).type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)):
        raise KibbleError(f"{path}: column {column!r} is {kind}, not a list of floats; re-write the store")
    out: np.ndarray | None = None
    start, groups, step = 0, list(range(file.num_row_groups)), max(1, os.cpu_count() or 1)
    try:
        for i in range(0, len(groups), step):
            part = _matrix(_as_fixed(file.read_row_groups(groups[i:i + step], columns=[column]).column(0), f"{path}: {column}"))
            if out is None:
                out = np.empty((n_rows, part.shape[1]), dtype=np.float32)
            elif part.shape[1] != out.shape[1]:
                raise KibbleError(f"{path}: {column}: rows hold different numbers of values ({out.shape[1]}, {part.shape[1]}); one model per store")
            out[start:start + len(part)] = part
            start += len(part)
    except KibbleError:
        if column == "probs":
            raise
        return pq.read_table(path, columns=[column]).column(0)
    return _fixed_list(out if out is not None else np.zeros((0, 0), dtype=np.float32))


def read_store(path: str | Path, class_names: list[str] | None = None, require_complete: bool = True) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The store's rows (matrix columns as Arrow fixed-size lists of float32) and its sidecar, validated."""
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
    names = pq.read_schema(path).names
    # pandas reads the plain columns (its string and metadata handling); Arrow the matrix columns
    frame = pd.read_parquet(path, columns=[c for c in names if c not in MATRIX_COLUMNS])
    n_rows = pq.ParquetFile(path).metadata.num_rows
    for column in (c for c in names if c in MATRIX_COLUMNS):
        frame[column] = pd.arrays.ArrowExtensionArray(_read_matrix(path, column, n_rows))
    frame = frame[names]
    validate_probs(stack(frame), len(meta["class_names"]), str(path), frame["sample_id"].array)
    return frame, meta
