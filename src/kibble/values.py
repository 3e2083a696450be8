"""Cell helpers shared by the readers of human-written tables (CSV cells, JSON fields) and the 10^6-row paths:
missing-value checks, conversion once per distinct value, id look-ups hashed in Arrow."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


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
