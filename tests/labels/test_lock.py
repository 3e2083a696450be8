"""The workspace lock: concurrent writers serialise; a writer that waits too long fails naming the holder."""

from __future__ import annotations

import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from helpers import run_kibble
from kibble import KibbleError
from kibble.labels.history import load_events
from kibble.labels.lock import LOCK_DIR, lock_paths, lock_timeout_of, read_holder, workspace_lock
from kibble.labels.policy import resolve_labels
from kibble.paths import Workspace


def write_reviews(path: Path, ws: Workspace, annotator: str, rows: slice, shift: int) -> pd.DataFrame:
    """`annotator` corrects the train rows `rows`, each to the digit `shift` above its imported label."""
    manifest = pd.read_parquet(ws.manifest)
    train = manifest[manifest["split"] == "train"].sort_values("sample_id").iloc[rows]
    reviews = pd.DataFrame({"sample_id": train["sample_id"], "label": train["label"].map(lambda c: str((int(c) + shift) % 10)).values,
                            "verdict": "corrected", "annotator": annotator})
    reviews.to_csv(path, index=False)
    return reviews


def files(ws: Path) -> dict[str, bytes]:
    """Every workspace file but Hydra's run logs and the lock's own folder."""
    return {str(p.relative_to(ws)): p.read_bytes() for p in sorted(ws.rglob("*"))
            if p.is_file() and p.relative_to(ws).parts[0] not in ("runs", LOCK_DIR)}


def test_two_concurrent_merges_keep_both_answer_sets(fresh_digits_workspace: Path, tmp_path: Path):
    ws = Workspace(fresh_digits_workspace)
    alice = write_reviews(tmp_path / "alice.csv", ws, "alice", slice(0, 300), shift=1)
    bob = write_reviews(tmp_path / "bob.csv", ws, "bob", slice(150, 450), shift=2)  # overlaps alice on 150 samples
    start = threading.Barrier(2)

    def merge(name: str):
        start.wait()  # both processes start together
        return run_kibble("merge", f"workspace={ws.root}", f"reviews={tmp_path / name}.csv", cwd=tmp_path, timeout=300)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(merge, ["alice", "bob"]))
    for res in results:
        assert res.returncode == 0, res.stderr[-2000:]
        assert re.search(r"merged 300 reviews from \w+\.csv: 300 new events \(0 already recorded\)", res.stdout), res.stdout
    events = load_events(ws.label_events)
    assert events["event_id"].is_unique
    reviewed = events[events["source"] == "review"]
    for who, answers in (("alice", alice), ("bob", bob)):  # every answer exactly once
        mine = reviewed[reviewed["annotator"] == who]
        assert len(mine) == len(answers)
        assert sorted(zip(mine["sample_id"], mine["label"])) == sorted(zip(answers["sample_id"], answers["label"]))
    # serialised: the second merge saw the first one's round (as if run one after the other)
    rounds = reviewed.groupby("annotator")["round"].agg(["min", "max"])
    assert sorted(rounds["min"]) == [0, 1] and (rounds["min"] == rounds["max"]).all() and ws.current_round() == 2
    # the manifest is the policy applied to the whole history
    resolved = resolve_labels(events, None).set_index("sample_id")
    manifest = pd.read_parquet(ws.manifest).set_index("sample_id")
    labelled = manifest.index[manifest["label"].notna()]
    assert (manifest.loc[labelled, "label"] == resolved.loc[labelled, "label"]).all()
    # ... which is: each annotator's correction, the later merge's where both answered (a later round wins)
    later = alice if rounds.loc["alice", "min"] == 1 else bob
    expected = {**dict(zip(alice["sample_id"], alice["label"])), **dict(zip(bob["sample_id"], bob["label"])),
                **dict(zip(later["sample_id"], later["label"]))}
    assert manifest.loc[list(expected), "label"].tolist() == list(expected.values())
    assert not lock_paths(ws)[1].exists()  # holder info is gone once nobody holds the lock


def test_a_held_lock_makes_merge_fail_after_its_timeout_and_write_nothing(fresh_digits_workspace: Path, tmp_path: Path):
    ws = Workspace(fresh_digits_workspace)
    write_reviews(tmp_path / "alice.csv", ws, "alice", slice(0, 20), shift=1)
    before = files(ws.root)
    with workspace_lock(ws, "kibble loop"):
        since = read_holder(ws)["started"][11:19]
        res = run_kibble("merge", f"workspace={ws.root}", f"reviews={tmp_path / 'alice.csv'}", "lock_timeout=1", cwd=tmp_path, timeout=300)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == (
        f"kibble merge: error: workspace {ws.root} is locked by kibble loop (pid {os.getpid()}, since {since}); "
        "waited 1 s — wait for it or raise lock_timeout"
    )
    assert files(ws.root) == before


def test_the_lock_is_reentrant_and_exclusive_across_threads(tmp_path: Path):
    ws = Workspace(tmp_path / "ws")
    order = []

    def take(task: str, timeout: float) -> None:
        with workspace_lock(ws, task, timeout=timeout):
            order.append(task)

    with ThreadPoolExecutor(1) as pool:  # another thread waits like another process
        with workspace_lock(ws, "kibble loop"):
            with workspace_lock(ws, "kibble merge", timeout=0):  # the same thread: no wait
                assert read_holder(ws)["task"] == "kibble loop"
            with pytest.raises(KibbleError, match=r"is locked by kibble loop \(pid \d+, since \d\d:\d\d:\d\d\); waited 0 s"):
                pool.submit(take, "impatient", 0).result()
            late = pool.submit(take, "late", 10)
            order.append("first")
        late.result()
    assert order == ["first", "late"]
    assert not lock_paths(ws)[1].exists()


@pytest.mark.parametrize("value, expected", [(None, None), (0, 0.0), ("2.5", 2.5)])
def test_lock_timeout_values(value, expected):
    assert lock_timeout_of({"lock_timeout": value}) == expected
    assert lock_timeout_of({}) == 60.0


@pytest.mark.parametrize("value", [-1, "soon"])
def test_bad_lock_timeout_is_one_line(value):
    with pytest.raises(KibbleError, match=r"lock_timeout=.*: give seconds"):
        lock_timeout_of({"lock_timeout": value})
