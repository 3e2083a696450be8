"""The label history: label_events.parquet is append-only; the manifest's label is a view of it.

Writers hold the workspace lock (`kibble.labels.lock`); readers need nothing, the file is replaced atomically.
"""

from __future__ import annotations

import binascii
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kibble import KibbleError
from kibble.io import atomic_path, atomic_write_parquet, current_path

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


def make_events(records: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """Fill defaults and check verdicts/sources; one row per event (column-wise: 10^5 records in well under a second).

    `records`: dicts, or a table with (some of) the event columns (the merge builds its batch column-wise)."""
    if isinstance(records, pd.DataFrame):
        frame = records.reindex(columns=EVENT_COLUMNS).reset_index(drop=True)
    else:
        frame = pd.DataFrame.from_records(records, columns=EVENT_COLUMNS) if records else pd.DataFrame(columns=EVENT_COLUMNS)
    bad_verdict = ~frame["verdict"].isin(list(VERDICTS)).to_numpy(dtype=bool)
    bad_source = ~frame["source"].isin(list(SOURCES)).to_numpy(dtype=bool)
    if (bad_verdict | bad_source).any():  # the first bad record, as a row-by-row check would find it
        i = int(np.flatnonzero(bad_verdict | bad_source)[0])
        col, allowed = ("verdict", VERDICTS) if bad_verdict[i] else ("source", SOURCES)
        raise KibbleError(f"sample {frame['sample_id'].iloc[i]!r}: {col} {frame[col].iloc[i]!r}; use one of {list(allowed)}")
    ids = frame["event_id"].astype(object)
    missing_id = (ids.isna() | (ids == "")).to_numpy(dtype=bool)
    if missing_id.any():
        ids = ids.to_numpy(dtype=object).copy()
        ids[missing_id] = random_ids(int(missing_id.sum()))
        frame["event_id"] = ids
    created = frame["created_at"].astype(object)
    frame["created_at"] = created.where(created.notna() & (created != ""), now_utc())
    frame["round"] = frame["round"].fillna(-1).astype("int64")
    frame["lead_time"] = _seconds(frame["lead_time"])
    for col in EVENT_COLUMNS:
        if col not in ("round", "lead_time"):
            frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    return frame


def initial_events(manifest: pd.DataFrame) -> pd.DataFrame:
    """One `import` event per labelled row: the starting point of every label's history."""
    labelled = manifest[manifest["label"].notna()]
    return make_events(pd.DataFrame({  # column-wise: a 10^6-row import builds its history in about a second
        "sample_id": labelled["sample_id"].to_numpy(dtype=object), "label": labelled["label"].to_numpy(dtype=object),
        "previous_label": None, "verdict": "confirmed", "source": "import", "round": -1,
    }))


def random_ids(n: int) -> np.ndarray:
    """`n` random 128-bit ids as 32 hex digits (uuid4().hex's shape), from one urandom call, not n uuid objects."""
    if n == 0:
        return np.array([], dtype=object)
    return np.frombuffer(binascii.hexlify(os.urandom(16 * n)), dtype="S32").astype(str).astype(object)


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


def append_events(path: str | Path, new: pd.DataFrame) -> None:
    """Append (never rewrite earlier rows); the write is atomic.

    Call it inside the workspace lock (`kibble.labels.lock`). The earlier rows are copied from the file
    as Arrow record batches, not through pandas: appending 10^5 events to a 10^6-event history takes
    about a second.
    """
    path = Path(path)
    new = new[EVENT_COLUMNS].reset_index(drop=True)
    source = current_path(path)
    if not source.is_file():
        atomic_write_parquet(path, new)
        return
    old = pq.read_table(source)
    if "lead_time" not in old.column_names:  # files written before lead_time existed
        old = old.append_column("lead_time", pa.nulls(len(old), pa.float64()))
    old = old.select(EVENT_COLUMNS)
    added = pa.Table.from_pandas(new, preserve_index=False)
    schema = pa.unify_schemas([old.schema.remove_metadata(), added.schema.remove_metadata()], promote_options="permissive")
    merged = pa.concat_tables([old.cast(schema), added.select(schema.names).cast(schema)])
    with atomic_path(path) as tmp:
        pq.write_table(merged, tmp)
