"""Archive a workspace's label history and rounds before a re-import replaces them; carry human answers over.

Why: a re-import (`kibble import overwrite=true`) replaces the manifest and the class list, but the
history holds answers people were paid for. Nothing is deleted: the previous history, manifest,
classes.yaml, state, policy and import report are copied to `W/history/NNN-<timestamp>/` and the
old `rounds/` is moved there (its queues and Label Studio records refer to the old manifest). The
human events (every source but `import`) of samples that still exist, whose label is still a class,
go on into the new history with their ids, rounds and timestamps, so the policy resolves them as
before. Call these inside the workspace lock (`kibble.labels.lock`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from kibble.io import new_temp
from kibble.labels.history import EVENT_COLUMNS, load_events
from kibble.labels.policy_file import POLICY_FILE
from kibble.paths import Workspace
from kibble.transaction import active_transaction
from kibble.values import is_missing

HISTORY_DIR = "history"
ARCHIVED_FILES = ("label_events.parquet", "manifest.parquet", "classes.yaml", "state.json", POLICY_FILE, "import_report.json")


def history_dir(ws: Workspace) -> Path:
    return ws.root / HISTORY_DIR


def archives(ws: Workspace) -> list[Path]:
    """The archived generations of a workspace, oldest first (`W/history/NNN-<timestamp>/`)."""
    root = history_dir(ws)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name[:3].isdigit() and not p.name.startswith("."))


def archive_workspace(ws: Workspace) -> Path:
    """Copy the history and its companions, then move `rounds/`, into the next `W/history/NNN-<timestamp>/`.

    The copies land in a hidden temp folder renamed into place once complete. Inside a workspace
    transaction (a re-import) that rename and the move of `rounds/` happen at its commit, together
    with the new history and manifest; outside one, at once. Either way a crash leaves no archive or a
    whole one, and the live files stay until the caller replaces them. Returns the archive folder.
    """
    number = 1 + max([int(p.name[:3]) for p in archives(ws)], default=0)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = history_dir(ws) / f"{number:03d}-{stamp}"
    tx = active_transaction(ws.root)
    with (tx.stage(target, directory=True) if tx is not None else _staged_folder(target)) as staging:
        for name in ARCHIVED_FILES:
            if (ws.root / name).is_file():
                shutil.copy2(ws.root / name, staging / name)
    rounds = ws.root / "rounds"
    if rounds.is_dir():  # same file system: a rename, nothing copied or lost
        if tx is not None:
            tx.move(rounds, target / "rounds")
        else:
            os.replace(rounds, target / "rounds")
    return target


@contextmanager
def _staged_folder(target: Path) -> Iterator[Path]:
    staging = new_temp(target, directory=True)
    try:
        yield staging
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def surviving_events(events: pd.DataFrame, manifest: pd.DataFrame, class_names: list[str]) -> pd.DataFrame:
    """The human answers (not `import`) about samples of `manifest` whose label (if any) is in `class_names`.

    Verdicts without a label (out_of_scope, skipped, ambiguous) survive with their sample.
    """
    if not len(events):
        return events.reindex(columns=EVENT_COLUMNS)
    known = set(manifest["sample_id"].astype(str))
    classes = set(class_names)
    human = events["source"].astype(str) != "import"
    alive = events["sample_id"].astype(str).isin(known)
    labels_ok = events["label"].map(lambda v: is_missing(v) or str(v) == "" or str(v) in classes)
    return events[human & alive & labels_ok].reindex(columns=EVENT_COLUMNS).reset_index(drop=True)


def carried_history(ws: Workspace, manifest: pd.DataFrame, class_names: list[str]) -> tuple[pd.DataFrame, int]:
    """(the events to carry into the new history, how many human events are left behind in the archive)."""
    old = load_events(ws.label_events)
    kept = surviving_events(old, manifest, class_names)
    n_human = int((old["source"].astype(str) != "import").sum()) if len(old) else 0
    return kept, n_human - len(kept)
