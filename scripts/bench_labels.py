"""What the workspace lock costs: a small merge with and without it, and the bare lock (issue 13's < 50 ms).

    python scripts/bench_labels.py [--repeats 15] [--reviews 20]

Imports the built-in digits into a temp workspace, then merges `--reviews` corrections of a new
annotator per repeat, alternating `merge_reviews` (takes the lock) and the same transaction without
it (`kibble.labels.merge._merge_locked`), and times an uncontended acquire + holder write + release.
Prints a table of medians (ms).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--reviews", type=int, default=20)
    args = parser.parse_args()

    import pandas as pd
    from tabulate import tabulate

    from kibble.config import compose_config
    from kibble.labels.lock import workspace_lock
    from kibble.labels.merge import _merge_locked, merge_reviews
    from kibble.paths import Workspace
    from kibble.tasks import import_data

    tmp = Path(tempfile.mkdtemp(prefix="bench_labels_"))
    import_data.run(compose_config("import", [f"workspace={tmp / 'ws'}"], output_dir=tmp / "out"))
    ws = Workspace(tmp / "ws")
    train = pd.read_parquet(ws.manifest).query("split == 'train'").sort_values("sample_id")

    def reviews(i: int) -> pd.DataFrame:
        rows = train.iloc[(i * args.reviews) % (len(train) - args.reviews):][: args.reviews]
        return pd.DataFrame({"sample_id": rows["sample_id"].values, "label": [str((int(c) + 1) % 10) for c in rows["label"]],
                             "verdict": "corrected", "annotator": f"bench-{i}", "round": 0})

    locked, unlocked = [], []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        merge_reviews(ws, reviews(2 * i), round_index=0)
        locked.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _merge_locked(ws, reviews(2 * i + 1), "review", 0, None, "bench", None)
        unlocked.append(time.perf_counter() - t0)
    bare = []
    for _ in range(200):
        t0 = time.perf_counter()
        with workspace_lock(ws, "bench"):
            pass
        bare.append(time.perf_counter() - t0)
    ms = lambda xs: 1000 * statistics.median(xs)  # noqa: E731
    print(f"digits workspace ({len(train)} train rows), {args.reviews} reviews per merge, {args.repeats} repeats; medians")
    print(tabulate([["merge_reviews (with the lock)", ms(locked)], ["the same merge without the lock", ms(unlocked)],
                    ["difference", ms(locked) - ms(unlocked)], ["bare lock: acquire + holder.json + release", ms(bare)]],
                   headers=["", "ms"], floatfmt=".2f", tablefmt="github"))


if __name__ == "__main__":
    main()
