"""Cell helpers shared by the readers of human-written tables (CSV cells, JSON fields) and the 10^6-row paths:
missing-value checks, conversion once per distinct value, id look-ups hashed in Arrow."""

from __future__ import annotations

from collections.abc import Callable
import json
from json.encoder import encode_basestring  # the C encoder json.dumps(ensure_ascii=False) uses for str
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from kibble.io import json_default


def is_missing(value: Any) -> bool:
    """None, NaN, NaT or pd.NA; False for anything pandas cannot judge (lists, dicts)."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def optional_text(value: Any) -> str | None:
    """A cell as stripped text, or None when missing or empty."""
    if type(value) is str:  # the common case first: 10^5-row review files call this per cell
        return value.strip() or None
    if is_missing(value):
        return None
    text = str(value).strip()
    return text or None


def iter_records(frame: pd.DataFrame):
    """Rows as dicts of the cells' values, read from numpy object columns: DataFrame.to_dict("records")
    boxes every cell and, on Arrow-backed text columns, is several times slower on 10^5-row tables."""
    columns = list(frame.columns)
    for values in zip(*(frame[c].to_numpy(dtype=object) for c in columns)):
        yield dict(zip(columns, values))


def map_distinct(values: Any, convert: Callable[[Any], Any], missing: Any = None) -> np.ndarray:
    """convert(v) for each value as an object array, computed once per distinct value (missing ones:
    `missing`). Review files, histories and manifests repeat a few labels, notes and timestamps over
    10^5-10^6 rows: converting each cell in Python cost seconds there."""
    # a Series is factorised as it is (Arrow-backed text stays in Arrow: no per-cell conversion to objects)
    codes, uniq = pd.factorize(values if isinstance(values, pd.Series) else np.asarray(values, dtype=object), use_na_sentinel=True)
    table = np.empty(len(uniq) + 1, dtype=object)
    table[:-1] = [convert(v) for v in uniq]
    table[-1] = missing  # code -1
    return table[codes]


def json_texts(values: Any, missing: str = "null") -> np.ndarray:
    """Each cell as the JSON text `json.dumps(cell, ensure_ascii=False)` writes (missing -> `missing`), a column
    at a time: integers through numpy, floats through float.__repr__ (json's own), anything else once per
    distinct value (text through json's C string encoder). Event ids and Label Studio task files are built
    from these fragments, so they match what json.dumps of the whole object gives."""
    if not isinstance(values, pd.Series):
        values = pd.Series(np.asarray(values, dtype=object), dtype=object)
    if pd.api.types.is_integer_dtype(values.dtype) and not values.isna().any():
        return values.to_numpy(dtype=np.int64).astype(str).astype(object)
    if pd.api.types.is_float_dtype(values.dtype):
        floats = values.to_numpy(dtype=np.float64, na_value=np.nan)
        out = np.array([float.__repr__(v) for v in floats.tolist()], dtype=object)
        out[np.isposinf(floats)], out[np.isneginf(floats)], out[np.isnan(floats)] = "Infinity", "-Infinity", missing
        return out
    return map_distinct(values, json_text, missing=missing)


def json_text(value: Any) -> str:
    """One scalar as json.dumps(value, ensure_ascii=False) writes it (numpy scalars as Python ones)."""
    if isinstance(value, str):
        return encode_basestring(value)
    value = value.item() if hasattr(value, "item") and not isinstance(value, bytes) else value
    return json.dumps(value, ensure_ascii=False, default=json_default)


def is_in(values: Any, among: Any) -> np.ndarray:
    """Boolean array: is each of `values` (text ids) one of `among`? Hashed in Arrow (C++): 10^5 ids against a
    10^6-id history in milliseconds, where a Python set or an object Index hashes every string in Python."""
    return pc.is_in(_text_array(values), value_set=_text_array(among)).to_numpy(zero_copy_only=False)


def positions(values: Any, among: Any) -> np.ndarray:
    """Position of each of `values` in `among` (-1 where absent; `among` holds each id once), hashed in Arrow."""
    found = pc.index_in(_text_array(values), value_set=_text_array(among))
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _text_array(values: Any) -> pa.Array:
    if isinstance(values, pd.Series):  # an Arrow-backed column goes over without a copy
        return pa.array(values, type=pa.string(), from_pandas=True)
    return pa.array(np.asarray(values, dtype=object), type=pa.string(), from_pandas=True)
