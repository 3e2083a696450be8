"""The label history: label_events.parquet is append-only; the manifest's label is a view of it."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from kibble import KibbleError
from kibble.io import atomic_write_parquet

EVENT_COLUMNS = [
    "event_id", "sample_id", "label", "previous_label", "verdict", "source",
    "annotator", "round", "queue_id", "created_at", "note",
]
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
    for col in EVENT_COLUMNS:
        if col != "round":
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


def load_events(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        return make_events([])
    return pd.read_parquet(path)


def append_events(path: str | Path, new: pd.DataFrame) -> pd.DataFrame:
    """Append (never rewrite earlier rows); the write is atomic."""
    old = load_events(path)
    merged = pd.concat([old, new[EVENT_COLUMNS]], ignore_index=True) if len(old) else new[EVENT_COLUMNS].reset_index(drop=True)
    atomic_write_parquet(path, merged)
    return merged
