"""Missing-value checks shared by the readers of human-written tables (CSV cells, JSON fields)."""

from __future__ import annotations

from typing import Any

import pandas as pd


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
    if is_missing(value):
        return None
    text = str(value).strip()
    return text or None
