"""Measure the two ways to make a merge crash-safe (docs/design-notes.md, "Crash-safe label transactions").

(b) the Parquet files + a commit record (what kibble does: kibble.transaction), against
(a) SQLite in WAL mode holding the events, with the Parquet history kept as an export.
Both must still write manifest.parquet (DESIGN's contract every reader opens), so (a) times that too.

    python scripts/compare_history_stores.py [--history 1000000] [--batch 100000] [--manifest 1000000]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from kibble.io import atomic_write_parquet, atomic_write_text
from kibble.labels.history import EVENT_COLUMNS
from kibble.transaction import transaction


def events(n: int, start: int, n_samples: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sid = rng.integers(0, n_samples, n)
    frame = pd.DataFrame({
        "event_id": [f"{i:032x}" for i in range(start, start + n)],
        "sample_id": [f"img/{s:07d}.jpg" for s in sid],
        "label": [f"class_{c:03d}" for c in rng.integers(0, 120, n)],
        "previous_label": [f"class_{c:03d}" for c in rng.integers(0, 120, n)],
        "verdict": rng.choice(["confirmed", "corrected", "skipped"], n),
        "source": "review", "annotator": rng.choice(["alice", "bob", "carol"], n),
        "round": rng.integers(0, 5, n).astype("int64"), "queue_id": None,
        "created_at": "2024-05-01T12:00:00+00:00", "note": "", "lead_time": rng.random(n) * 10,
    })
    return frame[EVENT_COLUMNS]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--manifest", type=int, default=1_000_000)
    args = parser.parse_args()
    old = events(args.history, 0, args.manifest, 0)
    new = events(args.batch, args.history, args.manifest, 1)
    manifest = pd.DataFrame({"sample_id": [f"img/{i:07d}.jpg" for i in range(args.manifest)], "path": "x.jpg",
                             "label": "class_000", "split": "train"})
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        old.to_parquet(root / "label_events.parquet", index=False)
        manifest.to_parquet(root / "manifest.parquet", index=False)
        db = sqlite3.connect(root / "history.sqlite")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(f"CREATE TABLE events ({', '.join(EVENT_COLUMNS)}, PRIMARY KEY (event_id))")
        db.executemany(f"INSERT INTO events VALUES ({', '.join('?' * len(EVENT_COLUMNS))})", old.itertuples(index=False))
        db.commit()

        rows = {}
        rows["(b) read history (Parquet)"] = timed(lambda: pd.read_parquet(root / "label_events.parquet"))
        rows["(a) read history (SQLite -> pandas)"] = timed(lambda: pd.read_sql("SELECT * FROM events", db))

        def files_txn():
            with transaction(root, "bench"):
                atomic_write_parquet(root / "label_events.parquet", pd.concat([old, new], ignore_index=True))
                atomic_write_parquet(root / "manifest.parquet", manifest)
                atomic_write_text(root / "state.json", "{}")
        rows["(b) commit: history + manifest Parquet, fsync, commit record"] = timed(files_txn)

        def sqlite_txn():
            with db:
                db.executemany(f"INSERT INTO events VALUES ({', '.join('?' * len(EVENT_COLUMNS))})", new.itertuples(index=False))
        rows["(a) commit: SQLite insert of the batch"] = timed(sqlite_txn)
        rows["(a) + manifest.parquet (still needed, outside SQLite)"] = timed(lambda: atomic_write_parquet(root / "manifest.parquet", manifest))
        rows["(a) + label_events.parquet export (for analysis)"] = timed(
            lambda: atomic_write_parquet(root / "label_events.parquet", pd.read_sql("SELECT * FROM events", db)))
        sizes = {"parquet": os.path.getsize(root / "label_events.parquet"), "sqlite": os.path.getsize(root / "history.sqlite")}
    print(f"history {args.history:,} events + batch {args.batch:,}, manifest {args.manifest:,} rows")
    for name, seconds in rows.items():
        print(f"  {name:<62} {seconds:7.2f} s")
    print(f"  size on disk: Parquet {sizes['parquet'] / 2**20:.0f} MiB, SQLite {sizes['sqlite'] / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
