"""Rebuilding a queue that was pushed to Label Studio keeps the old version (queue.v1.csv, gold.v1.csv),
never deletes its gold.csv, and a pull still resolves answers to the old version's tasks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from kibble.annotation.gold import GOLD_COLUMNS, GOLD_FILE
from kibble.data.classes import ClassList
from kibble.data.manifest import load_manifest, save_manifest
from kibble.io import atomic_write_parquet
from kibble.labels.history import initial_events, load_events
from kibble.labelstudio.sync import RECORD, merge_export, push
from kibble.paths import Workspace
from kibble.predictions.store import make_frame
from kibble.queue.callback import BuildQueue
from kibble.queue.formats import labeling_config, load_queues, write_queue_files
from kibble.rounds import RoundContext


def round_context(ws_path: Path, seed: int = 0) -> RoundContext:
    """Round 0 of the digits workspace as k-fold hands it to callbacks, with seeded random OOF."""
    ws = Workspace(ws_path)
    classes = ClassList.load(ws.classes)
    manifest = load_manifest(ws.manifest, classes.names)
    train = manifest[manifest["split"] == "train"]
    probs = np.random.default_rng(seed).dirichlet(np.ones(10), len(train)).astype(np.float32)
    oof = make_frame(train["sample_id"].tolist(), probs, train["label"].tolist(), 0)
    ws.round_dir(0).mkdir(parents=True, exist_ok=True)
    return RoundContext(ws, 0, ws.round_dir(0), manifest, classes, oof, None)


def fake_gold(ctx: RoundContext) -> pd.DataFrame:
    rows = ctx.manifest[ctx.manifest.split == "train"].tail(2)
    gold = pd.DataFrame({"queue_id": ["r000-g1", "r000-g2"], "round": 0, "sample_id": rows.sample_id.values,
                         "gold_label": rows.label.values, "origin": "list"})[GOLD_COLUMNS]
    gold.to_csv(ctx.round_dir / GOLD_FILE, index=False)
    return gold


def test_rebuilding_a_pushed_queue_keeps_the_old_version_and_its_gold(fresh_digits_workspace):
    ctx = round_context(fresh_digits_workspace)
    BuildQueue(strategies=["kfold", "self_confidence"], budget=20)(ctx)
    fake_gold(ctx)
    (ctx.round_dir / RECORD).write_text(json.dumps({"project_id": 1, "tasks": {}}))
    old = {name: (ctx.round_dir / name).read_bytes() for name in ("queue.csv", "queue.labelstudio.json", GOLD_FILE)}

    result = BuildQueue(strategies=["self_confidence"], budget=10)(round_context(fresh_digits_workspace, seed=1))
    assert result["queue_replaced_version"] == 1
    assert (ctx.round_dir / "queue.v1.csv").read_bytes() == old["queue.csv"]
    assert (ctx.round_dir / "queue.labelstudio.v1.json").read_bytes() == old["queue.labelstudio.json"]
    assert (ctx.round_dir / "gold.v1.csv").read_bytes() == old[GOLD_FILE]
    assert (ctx.round_dir / GOLD_FILE).read_bytes() == old[GOLD_FILE]  # no gold configured now: the old gold stays
    assert (ctx.round_dir / "queue.csv").read_bytes() != old["queue.csv"]
    # reviews of the old version still map back to their queue rows
    old_ids = set(pd.read_csv(ctx.round_dir / "queue.v1.csv", dtype=str)["queue_id"])
    assert old_ids <= set(load_queues(ctx.workspace.root / "rounds")["queue_id"])

    again = BuildQueue(strategies=["kfold"], budget=5)(round_context(fresh_digits_workspace, seed=2))
    assert again["queue_replaced_version"] == 2 and (ctx.round_dir / "queue.v2.csv").is_file()


def test_rebuilding_an_unpushed_queue_replaces_it_without_versions(fresh_digits_workspace):
    ctx = round_context(fresh_digits_workspace)
    BuildQueue(strategies=["kfold"], budget=20)(ctx)
    fake_gold(ctx)
    result = BuildQueue(strategies=["kfold"], budget=10)(round_context(fresh_digits_workspace))
    assert "queue_replaced_version" not in result
    assert not list(ctx.round_dir.glob("queue.v*")) and not (ctx.round_dir / GOLD_FILE).exists()


class FakeServer:
    """The part of LabelStudioServer that `push` talks to, in memory."""

    url = "http://fake:8080"

    def __init__(self):
        self.projects: dict[int, dict] = {}
        self.held: dict[int, list[dict]] = {}
        self.next_id = 100

    def whoami(self):
        return {"email": "me@example.com"}

    def project(self, pid):
        return self.projects.get(int(pid))

    def find_project(self, title):
        return next((pid for pid, p in self.projects.items() if p["title"] == title), None)

    def create_project(self, title, config, description=None, instructions=None, overlap=1):
        pid = len(self.projects) + 1
        self.projects[pid] = {"id": pid, "title": title, "label_config": config, "maximum_annotations": overlap}
        self.held[pid] = []
        return pid

    def update_project(self, pid, **changes):
        self.projects[pid].update(changes)

    def tasks(self, pid):
        return list(self.held[pid])

    def import_tasks(self, pid, tasks):
        ids = []
        for task in tasks:
            self.next_id += 1
            self.held[pid].append({"id": self.next_id, "data": task["data"]})
            ids.append(self.next_id)
        return ids


def small_workspace(root: Path) -> Workspace:
    ws = Workspace(root)
    ws.root.mkdir(parents=True)
    manifest = pd.DataFrame({"sample_id": ["s1", "s2", "s3"], "path": ["img/s1.png", "img/s2.png", "img/s3.png"],
                             "label": ["cat", "dog", "fox"], "split": "train"})
    ClassList.from_names(["cat", "dog", "fox"]).save(ws.classes)
    save_manifest(manifest, ws.manifest, ["cat", "dog", "fox"])
    atomic_write_parquet(ws.label_events, initial_events(manifest))
    ws.update_state(round=0, data_root=".")
    return ws


def queue_of(sample_ids: list[str], given: list[str]) -> pd.DataFrame:
    n = len(sample_ids)
    return pd.DataFrame({"queue_id": [f"r000-{s}" for s in sample_ids], "round": 0, "rank": range(1, n + 1), "sample_id": sample_ids,
                         "path": [f"img/{s}.png" for s in sample_ids], "given_label": given, "suggested_label": given,
                         "score": 0.5, "strategy": "kfold", "reason": "x"})


def test_a_pull_after_a_rebuilt_queue_was_pushed_still_merges_answers_to_the_old_tasks(tmp_path):
    ws = small_workspace(tmp_path / "ws")
    classes = ClassList.load(ws.classes)
    server = FakeServer()
    write_queue_files(queue_of(["s1", "s2"], ["cat", "dog"]), ws.round_dir(0), classes, "http://images", data_root=ws.root)
    push(ws, 0, server, image_url="http://images")
    old_task = json.loads((ws.round_dir(0) / RECORD).read_text())["tasks"]["r000-s1"]
    write_queue_files(queue_of(["s3"], ["fox"]), ws.round_dir(0), classes, "http://images", data_root=ws.root)  # the rebuilt queue
    push(ws, 0, server, image_url="http://images")
    record = json.loads((ws.round_dir(0) / RECORD).read_text())
    assert set(record["tasks"]) == {"r000-s1", "r000-s2", "r000-s3"}

    answer = {"id": 1, "completed_by": 3, "was_cancelled": False, "created_at": "2024-05-02T10:00:00Z", "project": 1,
              "result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["dog"]}}]}
    export = [{"id": old_task, "project": 1, "annotations": [answer],
               "data": {"sample_id": "s1", "queue_id": "r000-s1", "given_label": "cat", "round": 0}}]
    summary = merge_export(ws, 0, export, record, labeling_config(classes), {3: "alice@example.com"})
    assert summary["n_events_added"] == 1
    events = load_events(ws.label_events)
    assert events.iloc[-1][["sample_id", "label", "annotator"]].tolist() == ["s1", "dog", "alice@example.com"]


def test_push_imports_in_batches_with_progress_lines(tmp_path, monkeypatch, caplog):
    import logging

    import kibble.labelstudio.sync as sync
    import kibble.progress as progress

    monkeypatch.setattr(sync, "IMPORT_BATCH", 2)
    monkeypatch.setattr(progress, "LOG_EVERY_SECONDS", 0.0)  # a line per request
    ws = small_workspace(tmp_path / "ws")
    server = FakeServer()
    calls = []
    original = server.import_tasks
    server.import_tasks = lambda pid, tasks: calls.append(len(tasks)) or original(pid, tasks)
    write_queue_files(queue_of(["s1", "s2", "s3"], ["cat", "dog", "fox"]), ws.round_dir(0), ClassList.load(ws.classes),
                      "http://images", data_root=ws.root)
    with caplog.at_level(logging.INFO, logger="kibble.labelstudio.sync"):
        push(ws, 0, server, image_url="http://images")
    assert calls == [2, 1]
    assert set(json.loads((ws.round_dir(0) / RECORD).read_text())["tasks"]) == {"r000-s1", "r000-s2", "r000-s3"}
    lines = [r.getMessage().split(" (")[0] for r in caplog.records if r.getMessage().startswith("Label Studio push: ")]
    assert lines == ["Label Studio push: 2/3 tasks", "Label Studio push: 3/3 tasks"]
