"""Bad Label Studio input -> one clear error line, nothing written. Fast: no server (the pull minus the network)."""

from __future__ import annotations

import copy
import json
import socket
from pathlib import Path

import pandas as pd
import pytest

from kibble import KibbleError
from kibble.data.classes import ClassList
from kibble.data.manifest import save_manifest
from kibble.io import atomic_write_parquet
from kibble.labelstudio.client import LabelStudioServer
from kibble.labelstudio.sync import (
    RECORD,
    image_folder,
    label_choices,
    merge_export,
    serves_local_files,
)
from kibble.paths import Workspace
from kibble.queue.formats import labeling_config, write_queue_files
from kibble.labels.history import initial_events, load_events
from kibble.labels.lock import LOCK_DIR

CLASSES = ["cat", "dog", "fox"]
PROJECT = 7
USERS = {3: "alice@example.com", 4: "bob@example.com"}


def make_workspace(root: Path) -> Workspace:
    """A tiny workspace with round 0's queue pushed to project 7 (tasks 101, 102)."""
    ws = Workspace(root)
    ws.root.mkdir(parents=True)
    manifest = pd.DataFrame({"sample_id": ["s1", "s2", "s3"], "path": ["img/s1.png", "img/s2.png", "img/s3.png"],
                             "label": ["cat", "dog", "fox"], "split": ["train", "train", "train"]})
    ClassList.from_names(CLASSES).save(ws.classes)
    save_manifest(manifest, ws.manifest, CLASSES)
    atomic_write_parquet(ws.label_events, initial_events(manifest))
    ws.update_state(round=0, data_root=".")
    queue = pd.DataFrame({"queue_id": ["r000-0001", "r000-0002"], "round": [0, 0], "rank": [1, 2], "sample_id": ["s1", "s2"],
                          "path": ["img/s1.png", "img/s2.png"], "given_label": ["cat", "dog"], "suggested_label": ["dog", "dog"],
                          "score": [0.9, 0.8], "strategy": ["kfold", "kfold"], "reason": ["x", "x"]})
    write_queue_files(queue, ws.round_dir(0), ClassList.load(ws.classes), "http://images", data_root=ws.root)
    (ws.round_dir(0) / RECORD).write_text(json.dumps(record()))
    return ws


def record() -> dict:
    return {"server": "http://127.0.0.1:8080", "project_id": PROJECT, "round": 0, "classes": CLASSES,
            "tasks": {"r000-0001": 101, "r000-0002": 102}}


def annotation(ann_id, user, label, at="2024-05-02T10:00:00.000000Z", lead_time=3.0):
    return {"id": ann_id, "completed_by": user, "was_cancelled": False, "lead_time": lead_time, "created_at": at,
            "updated_at": at, "task": 101, "project": PROJECT,
            "result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]}


def export() -> list[dict]:
    """What GET /api/projects/7/export?exportType=JSON returns (completed_by: user ids)."""
    def task(tid, qid, sid, given, anns):
        return {"id": tid, "project": PROJECT, "annotations": anns, "predictions": [1], "drafts": [], "meta": {},
                "data": {"image": f"http://images/img/{sid}.png", "sample_id": sid, "queue_id": qid, "given_label": given, "round": 0}}
    return [
        task(101, "r000-0001", "s1", "cat", [annotation(1, 3, "dog"), annotation(2, 4, "dog", lead_time=9.0),
                                               annotation(3, 4, "fox", at="2024-05-01T10:00:00.000000Z")]),  # older: superseded
        task(102, "r000-0002", "s2", "dog", [annotation(4, 3, "dog")]),
    ]


def snapshot(ws: Workspace) -> dict:
    """Every file of the workspace but the lock's (`.kibble/`: an empty lock file may appear, it holds no data)."""
    return {str(p.relative_to(ws.root)): p.read_bytes() for p in sorted(ws.root.rglob("*"))
            if p.is_file() and p.relative_to(ws.root).parts[0] != LOCK_DIR}


def config(names=CLASSES) -> str:
    return labeling_config(ClassList.from_names(names))


def test_merge_export_one_row_per_annotator_and_idempotent(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    summary = merge_export(ws, 0, export(), record(), config(), USERS)
    assert summary["n_events_added"] == 3 and summary["project_id"] == PROJECT
    events = load_events(ws.label_events)
    new = events[events["source"] == "review"].set_index(["sample_id", "annotator"])
    assert set(new.index) == {("s1", "alice@example.com"), ("s1", "bob@example.com"), ("s2", "alice@example.com")}
    assert new.loc[("s1", "bob@example.com"), "label"] == "dog"  # bob's latest answer, not his older `fox`
    assert pd.read_parquet(ws.manifest).set_index("sample_id").loc["s1", "label"] == "dog"
    kept = json.loads((ws.round_dir(0) / "labelstudio_export.json").read_text())
    assert kept[0]["annotations"][0]["completed_by"] == {"id": 3, "email": "alice@example.com"}
    assert merge_export(ws, 0, export(), record(), config(), USERS)["n_events_added"] == 0
    assert len(load_events(ws.label_events)) == len(events)


def _other_project(e):
    for t in e:
        t["project"] = 99
        for a in t["annotations"]:
            a["project"] = 99


def _unknown_task(e):
    e[1]["id"] = 555


def _no_sample_id(e):
    del e[1]["data"]["sample_id"]


def _no_annotator(e):
    e[0]["annotations"][1]["completed_by"] = None


def _unknown_class(e):
    e[0]["annotations"][0]["result"][0]["value"]["choices"] = ["wolf"]


@pytest.mark.parametrize(
    "spoil, label_config, message",
    [
        (_other_project, config(), r"Label Studio project 7 export task 0 \(id 101\): belongs to Label Studio project 99, not project 7"),
        (_unknown_task, config(), r"task 1 \(id 555\): not a task kibble pushed for this round"),
        (_no_sample_id, config(), r"task 1 \(id 102\): no data.sample_id"),
        (_no_annotator, config(), r"task 0 \(id 101\) annotation 1 \(id 2\): no annotator \(completed_by is empty\)"),
        (_unknown_class, config(), r"unknown class 'wolf'"),
        (None, config(["cat", "dog", "wolf"]), r"labeling config: its class list differs from the workspace's classes.yaml \(not in classes.yaml: \['wolf'\]; missing: \['fox'\]"),
        (None, "<View><Image name='image' value='$image'/></View>", r"no <Choices name=\"label\">"),
    ],
)
def test_bad_exports_fail_clearly_and_write_nothing(tmp_path, spoil, label_config, message):
    ws = make_workspace(tmp_path / "ws")
    bad = copy.deepcopy(export())
    if spoil:
        spoil(bad)
    before = snapshot(ws)
    with pytest.raises(KibbleError, match=message) as err:
        merge_export(ws, 0, bad, record(), label_config, USERS)
    assert "\n" not in str(err.value)
    assert snapshot(ws) == before  # no event, no manifest change, no export file, no round change


def test_classes_changed_since_push(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    pushed = {**record(), "classes": ["cat", "dog"]}
    before = snapshot(ws)
    with pytest.raises(KibbleError, match="pushed with another class list than classes.yaml now has; push the round again"):
        merge_export(ws, 0, export(), pushed, config(), USERS)
    assert snapshot(ws) == before


def test_environment_and_unreachable_server(monkeypatch):
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    with pytest.raises(KibbleError, match="LABEL_STUDIO_URL is not set; export LABEL_STUDIO_URL="):
        LabelStudioServer.from_env()
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:1")
    with pytest.raises(KibbleError, match="LABEL_STUDIO_API_KEY is not set"):
        LabelStudioServer.from_env()
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "t0ken")
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = LabelStudioServer.from_env(url=f"http://127.0.0.1:{port}", timeout=5)
    with pytest.raises(KibbleError, match=rf"cannot reach Label Studio at http://127.0.0.1:{port} .*start the server or fix LABEL_STUDIO_URL") as err:
        server.whoami()
    assert "\n" not in str(err.value)


def test_image_modes():
    assert serves_local_files(None) and serves_local_files({"document_root": "/srv"})
    assert not serves_local_files("https://bucket/images") and not serves_local_files({"url_prefix": "https://x"})
    assert image_folder(["a/1.png", "a/b/2.png"], Path("/data")) == "/data/a"
    assert label_choices(config()) == CLASSES


def test_export_file_without_annotator_fails_in_kibble_merge_too(tmp_path):
    """The same rule for an export file given to `kibble merge` (reviews.read_reviews)."""
    from kibble.labels.reviews import read_reviews

    bad = export()
    bad[0]["annotations"][0]["completed_by"] = {"id": None, "email": ""}
    path = tmp_path / "export.json"
    path.write_text(json.dumps(bad))
    manifest = pd.DataFrame({"sample_id": ["s1", "s2"], "path": ["a", "b"], "label": ["cat", "dog"], "split": ["train", "train"]})
    with pytest.raises(KibbleError, match=rf"{path} task 0 \(id 101\) annotation 0 \(id 1\): no annotator"):
        read_reviews(path, manifest, CLASSES)


def test_cli_action_word(tmp_path, monkeypatch, capsys):
    """`kibble labelstudio push ...` reaches the task as action=push (here it stops at the missing URL)."""
    import sys

    from kibble.cli import main

    ws = make_workspace(tmp_path / "ws")
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.setattr(sys, "argv", ["kibble"])
    monkeypatch.setenv("KIBBLE_TASK", "")
    assert main(["labelstudio", "push", f"workspace={ws.root}", "hydra.run.dir=" + str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("kibble labelstudio: error: LABEL_STUDIO_URL is not set")


def test_empty_export_and_a_project_shared_by_rounds(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    assert merge_export(ws, 0, [], record(), config(), USERS)["n_events_added"] == 0
    # round 1 pushed into the same project (title=...): its task 201 is left for round 1's pull
    ws.round_dir(1).mkdir(parents=True)
    (ws.round_dir(1) / RECORD).write_text(json.dumps({**record(), "round": 1, "tasks": {"r001-0001": 201}}))
    mixed = export() + [{**export()[1], "id": 201, "data": {**export()[1]["data"], "queue_id": "r001-0001", "round": 1}}]
    summary = merge_export(ws, 0, mixed, record(), config(), USERS)
    assert summary["n_events_added"] == 3 and summary["rounds"] == [0]


def test_guidelines_in_the_labeling_config():
    import xml.etree.ElementTree as ET

    from kibble.data.classes import ClassInfo
    from kibble.labelstudio.sync import guidelines_html

    classes = ClassList([ClassInfo("cat", "Cat", guideline='whiskers;\n "not" a fox & no bushy tail', examples=["img/c.png"]),
                         ClassInfo("dog", "Dog"), ClassInfo("fox", "Fox")])
    root = ET.fromstring(labeling_config(classes))
    hints = [c.get("hint") for c in root.find("Choices[@name='label']").findall("Choice")]
    assert hints == ['Cat: whiskers; "not" a fox & no bushy tail', "Dog", "Fox"]
    assert [h.get("value") for h in root.find("Collapse/Panel").findall("Header")] == [hints[0]]
    page = guidelines_html(classes, lambda p: f"/data/local-files/?d={p}")
    assert "<h4>Cat</h4>" in page and 'src="/data/local-files/?d=img/c.png"' in page and "&amp; no bushy tail" in page


def test_pull_reads_ids_or_names_and_merges_ids(tmp_path):
    """Buttons show names and export ids (alias); an answer that holds a name (a hand-made annotation, mixed case)
    merges as the id too. A config pushed before names were shown (value = id) still checks out."""
    ws = make_workspace(tmp_path / "ws")
    named = ClassList.from_names(CLASSES, {"cat": "House cat", "dog": "Australian terrier", "fox": "Red fox"})
    named.save(ws.classes)
    label_config = labeling_config(named)
    assert label_choices(label_config) == CLASSES and label_choices(config()) == CLASSES
    answers = export()
    answers[0]["annotations"][1]["result"][0]["value"]["choices"] = ["australian TERRIER"]
    summary = merge_export(ws, 0, answers, record(), label_config, USERS)
    assert summary["n_events_added"] == 3
    events = load_events(ws.label_events)
    assert set(events.loc[events["source"] == "review", "label"]) == {"dog"}
