"""The label history: label_events.parquet is append-only; the manifest's label is a view of it.

Writers hold the workspace lock (`kibble.labels.lock`); readers need nothing, the file is replaced atomically.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from kibble import KibbleError
from kibble.io import atomic_write_parquet

EVENT_COLUMNS = [
    "event_id", "sample_id", "label", "previous_label", "verdict", "source",
    "annotator", "round", "queue_id", "created_at", "note", "lead_time",
]
# lead_time: seconds the human spent on the answer (Label Studio, the simulated crowd); NaN when unknown.
# Added after the first release: `load_events` gives older files the column (all NaN).
VERDICTS = ("confirmed", "corrected", "ambiguous", "out_of_scope", "skipped")
SOURCES = ("import", "review", "expert", "vendor", "simulated")


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def make_events(records: list[dict]) -> pd.DataFrame:
    """Fill defaults and check verdicts/sources; one row per event."""
    created = now_utc()
    rows = []
    for rec in records:
        row = {c: rec.get(c) for c in EVENT_COLUMNS}
        row["event_id"] = row["event_id"] or uuid.uuid4().hex
        row["created_at"] = row["created_at"] or created
        if row["verdict"] not in VERDICTS:
            raise KibbleError(f"sample {row['sample_id']!r}: verdict {row['verdict']!r}; use one of {list(VERDICTS)}")
        if row["source"] not in SOURCES:
            raise KibbleError(f"sample {row['sample_id']!r}: source {row['source']!r}; use one of {list(SOURCES)}")
        rows.append(row)
    frame = pd.DataFrame(rows, columns=EVENT_COLUMNS)
    frame["round"] = frame["round"].fillna(-1).astype("int64")
    frame["lead_time"] = _seconds(frame["lead_time"])
    for col in EVENT_COLUMNS:
        if col not in ("round", "lead_time"):
            frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    return frame


def initial_events(manifest: pd.DataFrame) -> pd.DataFrame:
    """One `import` event per labelled row: the starting point of every label's history."""
    labelled = manifest[manifest["label"].notna()]
    return make_events(
        [
            {"sample_id": sid, "label": label, "previous_label": None, "verdict": "confirmed", "source": "import", "round": -1}
            for sid, label in zip(labelled["sample_id"], labelled["label"])
        ]
    )


def _seconds(values: pd.Series) -> pd.Series:
    times = pd.to_numeric(values.astype(object).where(values.notna(), None), errors="coerce").astype("float64")
    bad = times < 0
    if bad.any():
        raise KibbleError(f"lead_time {float(times[bad].iloc[0])} is negative; lead_time is the seconds spent on an answer")
    return times


def load_events(path: str | Path) -> pd.DataFrame:
    """The history; files written before `lead_time` existed get it as an all-NaN column."""
    path = Path(path)
    if not path.is_file():
        return make_events([])
    events = pd.read_parquet(path)
    if "lead_time" not in events.columns:
        events["lead_time"] = pd.Series(float("nan"), index=events.index, dtype="float64")
    return events


def append_events(path: str | Path, new: pd.DataFrame, existing: pd.DataFrame | None = None) -> pd.DataFrame:
    """Append (never rewrite earlier rows); the write is atomic.

    Call it inside the workspace lock (`kibble.labels.lock`). `existing`: the history as the caller
    read it under that lock (saves reading it again); without it the file is read here.
    """
    old = load_events(path) if existing is None else existing
    merged = pd.concat([old, new[EVENT_COLUMNS]], ignore_index=True) if len(old) else new[EVENT_COLUMNS].reset_index(drop=True)
    atomic_write_parquet(path, merged)
    return merged
