"""A round with a queue, built by hand (no training): 8 queued digits train images and a synthetic OOF.

The OOF puts 0.9 on the given label of every train image except a few 'doubtful' ones (0.4), so the
review page's examples of a class must be its confident rows, never the doubtful ones nor queued ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from kibble.data.classes import ClassList
from kibble.data.manifest import load_manifest
from kibble.paths import Workspace
from kibble.predictions.store import make_frame, write_store
from kibble.queue.formats import write_queue_files


def make_review_round(digits_workspace: Path, target: Path, n_queue: int = 8) -> dict:
    shutil.copytree(digits_workspace, target, ignore=shutil.ignore_patterns("runs", "multiruns"))
    ws = Workspace(target)
    classes = ClassList.load(ws.classes)
    classes.classes[3].guideline = "A three has two bumps on the right and is open on the left."
    classes.save(ws.classes)
    manifest = load_manifest(ws.manifest, classes.names)
    train = manifest[manifest["split"] == "train"].reset_index(drop=True)
    picked = train.groupby("label", sort=True).head(1).head(n_queue).reset_index(drop=True)
    given = picked["label"].astype(str).tolist()
    suggested = [classes.names[(classes.index[g] + 3) % len(classes)] for g in given]
    queue = pd.DataFrame({
        "queue_id": [f"r000-{i:03d}" for i in range(len(picked))], "round": 0, "rank": np.arange(1, len(picked) + 1),
        "sample_id": picked["sample_id"], "path": picked["path"], "given_label": given, "suggested_label": suggested,
        "score": np.linspace(0.9, 0.5, len(picked)), "strategy": "kfold", "reason": "OOF disagrees with the given label",
    })
    round_dir = ws.round_dir(0)
    round_dir.mkdir(parents=True, exist_ok=True)
    write_queue_files(queue, round_dir, classes, data_root=ws.data_root)
    probs = np.full((len(train), len(classes)), 0.1 / (len(classes) - 1))
    labels = train["label"].map(classes.index).to_numpy()
    probs[np.arange(len(train)), labels] = 0.9
    doubtful = train.groupby("label").nth(1).index.to_numpy()  # the second train image of every class: a low OOF prob
    probs[doubtful] = 1.0 / len(classes)
    write_store(round_dir / "oof.parquet", make_frame(train["sample_id"].tolist(), probs, train["label"].tolist(), fold=0),
                {"round": 0, "class_names": classes.names, "complete": True})
    return {"ws": ws, "round_dir": round_dir, "queue": queue, "classes": classes,
            "doubtful": set(train.loc[doubtful, "sample_id"]), "train": train}
