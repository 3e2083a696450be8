"""The Label Studio round trip against a REAL server: push a digits queue, two users annotate, pull twice."""

from __future__ import annotations

import json
import shutil
import urllib.request
import xml.etree.ElementTree as ET

import pandas as pd
import pytest

from helpers import run_kibble
from kibble.data.classes import ClassList
from kibble.paths import Workspace
from kibble.queue.formats import write_queue_files
from kibble.labels.history import load_events

pytestmark = pytest.mark.slow

SUGGESTED = ["8", "1", "2", "9", "4", "5"]  # the model's suggestion per queue row


def choice(name, value):
    kind = "textarea" if name == "note" else "choices"
    return {"from_name": name, "to_name": "image", "type": kind,
            "value": {"text": [value]} if kind == "textarea" else {"choices": [value]}}


def test_push_annotate_pull(labelstudio_server, digits_workspace, monkeypatch):
    from label_studio_sdk.client import LabelStudio

    server = labelstudio_server
    monkeypatch.setenv("LABEL_STUDIO_URL", server.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", server.token)
    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", str(server.document_root))
    # the workspace (and so its images) under the server's document root: local-files mode
    ws = Workspace(server.document_root / "ws")
    shutil.copytree(digits_workspace, ws.root, ignore=shutil.ignore_patterns("runs", "multiruns", "rounds"))
    classes = ClassList.load(ws.classes)
    classes.classes[1].guideline = "one stroke; a serif on top is still a 1"
    classes.classes[8].guideline = "two closed loops"
    classes.classes[8].examples = ["8/digit_0008.png"]
    classes.save(ws.classes)
    rows = pd.read_parquet(ws.manifest).head(len(SUGGESTED))
    queue = pd.DataFrame({
        "queue_id": [f"r000-{i:04d}" for i in range(1, len(rows) + 1)], "round": 0, "rank": range(1, len(rows) + 1),
        "sample_id": rows["sample_id"].values, "path": rows["path"].values, "given_label": rows["label"].values,
        "suggested_label": SUGGESTED, "score": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4], "strategy": "kfold", "reason": "test",
    })
    write_queue_files(queue, ws.round_dir(0), classes, data_root=ws.data_root)

    # push twice: the second reuses the project and imports nothing
    pushed = run_kibble("labelstudio", "push", f"workspace={ws.root}", "overlap=2", check=True)
    assert "created Label Studio project" in pushed.stdout, pushed.stdout
    again = run_kibble("labelstudio", "push", f"workspace={ws.root}", "overlap=2", check=True)
    assert "reused Label Studio project" in again.stdout and "0 new tasks" in again.stdout, again.stdout
    record = json.loads((ws.round_dir(0) / "labelstudio.json").read_text())
    assert record["round"] == 0 and sorted(record["tasks"]) == sorted(queue["queue_id"])

    ls = LabelStudio(base_url=server.url, api_key=server.token)
    project = ls.projects.get(record["project_id"])
    assert project.maximum_annotations == 2
    config = ET.fromstring(project.label_config)
    buttons = config.find("Choices[@name='label']").findall("Choice")
    hints = {c.get("alias"): c.get("hint") for c in buttons}
    assert hints["1"] == "digit 1: one stroke; a serif on top is still a 1" and hints["0"] == "digit 0"
    # names on the buttons (and in the Filter box), the class id as the alias Label Studio exports
    assert [(c.get("value"), c.get("alias")) for c in buttons[:2]] == [("digit 0", "0"), ("digit 1", "1")]
    assert "$given_name" in config.find("Header").get("value")
    assert "two closed loops" in project.expert_instruction and "digit_0008.png" in project.expert_instruction
    tasks = {t.data["queue_id"]: t for t in ls.tasks.list(project=record["project_id"], fields="all")}
    assert len(tasks) == len(queue) and {q: t.id for q, t in tasks.items()} == record["tasks"]
    first = ls.tasks.get(str(record["tasks"]["r000-0001"]))
    assert [p.result[0]["value"]["choices"] for p in first.predictions] == [["8"]]  # the suggestion as a prediction
    assert (first.data["suggested_label"], first.data["suggested_name"]) == ("8", "digit 8")  # the header reads the name
    assert first.data["given_name"] == f"digit {rows['label'].iloc[0]}"
    # Label Studio serves the image from the attached local folder
    request = urllib.request.Request(server.url + tasks["r000-0001"].data["image"], headers={"Authorization": f"Token {server.token}"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("image/")

    # a second user; both annotate through the API (overlap 2)
    bob = ls.users.create(email="bob@kibble.test", username="bob", password="bob-password-123")
    ids = record["tasks"]
    ls.annotations.create(ids["r000-0001"], result=[choice("label", "8"), choice("verdict", "corrected"), choice("note", "loop closed")], lead_time=4.0)
    ls.annotations.create(ids["r000-0001"], result=[choice("label", "8")], completed_by=bob.id, lead_time=7.5)
    ls.annotations.create(ids["r000-0002"], result=[choice("label", "1"), choice("verdict", "confirmed")], lead_time=2.0)
    # an answer holding the shown name instead of the id (a hand-made annotation) still merges as the id
    ls.annotations.create(ids["r000-0002"], result=[choice("label", "digit 7")], completed_by=bob.id, lead_time=3.0)
    ls.annotations.create(ids["r000-0003"], result=[choice("verdict", "out_of_scope")], completed_by=bob.id, lead_time=1.0)

    # a project pushed before names were shown (value = id, html = name) is updated to the alias form although it
    # holds annotations: Label Studio compares label sets by alias, so the class ids stay what it exports
    old = ET.fromstring(ls.projects.get(record["project_id"]).label_config)
    for c in old.find("Choices[@name='label']").findall("Choice"):
        c.set("html", c.get("value"))
        c.set("value", c.attrib.pop("alias"))
    ls.projects.update(record["project_id"], label_config=ET.tostring(old, encoding="unicode"))
    classes.classes[1].guideline = "one stroke"
    classes.save(ws.classes)
    run_kibble("labelstudio", "push", f"workspace={ws.root}", "overlap=2", check=True)
    updated = ET.fromstring(ls.projects.get(record["project_id"]).label_config)
    assert [c.get("alias") for c in updated.find("Choices[@name='label']").findall("Choice")][:2] == ["0", "1"]
    assert "digit 1: one stroke" in ls.projects.get(record["project_id"]).label_config

    before = len(load_events(ws.label_events))
    pulled = run_kibble("labelstudio", "pull", f"workspace={ws.root}", check=True)
    assert "5 new events" in pulled.stdout, pulled.stdout
    events = load_events(ws.label_events)
    new = events.iloc[before:]
    assert len(new) == 5 and set(new["annotator"]) == {"admin@kibble.test", "bob@kibble.test"}
    s1, s2, s3 = rows["sample_id"].iloc[:3]
    by = {(r.sample_id, r.annotator): r for r in new.itertuples()}
    assert by[(s1, "admin@kibble.test")].note == "loop closed" and by[(s1, "bob@kibble.test")].verdict == "corrected"
    assert (by[(s2, "admin@kibble.test")].verdict, by[(s2, "bob@kibble.test")].label) == ("confirmed", "7")
    assert by[(s3, "bob@kibble.test")].verdict == "out_of_scope"
    assert set(new["round"]) == {0} and set(new["source"]) == {"review"}
    assert sorted(new["lead_time"]) == [1.0, 2.0, 3.0, 4.0, 7.5]  # Label Studio's lead_time, kept in the history
    quality = {r["annotator"]: r for r in json.loads((ws.round_dir(0) / "annotator_quality.json").read_text())["annotators"]}
    assert quality["admin@kibble.test"]["answers_per_hour"] == pytest.approx(2 * 3600 / 6.0)
    manifest = pd.read_parquet(ws.manifest).set_index("sample_id")
    assert manifest.loc[s1, "label"] == "8"  # both said 8
    assert manifest.loc[s2, "label"] == rows["label"].iloc[1]  # 1 vs 7: a tie keeps the label (ambiguous)
    assert bool(manifest.loc[s3, "excluded"])
    assert ws.current_round() == 1
    assert (ws.round_dir(0) / "labelstudio_export.json").is_file()

    # pulling twice adds nothing (round=0: the workspace has moved on to round 1)
    twice = run_kibble("labelstudio", "pull", f"workspace={ws.root}", "round=0", check=True)
    assert "0 new events" in twice.stdout, twice.stdout
    assert len(load_events(ws.label_events)) == len(events)
