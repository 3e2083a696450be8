"""Oddities get one line: an empty reviews file writes nothing, unknown target classes and classes left
without train images are warned about (issue 13, item 8)."""

from __future__ import annotations

import logging

import yaml

from kibble.data.classes import ClassList
from kibble.data.manifest import classes_without_train
from kibble.labels.history import load_events

from test_merge import make_workspace, manifest_of, merge, snapshot, write_csv


def test_a_header_only_reviews_file_writes_nothing(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    before = snapshot(ws)
    summary = merge(ws, write_csv(tmp_path / "empty.csv", "sample_id,label,verdict,annotator\n"))
    assert summary["n_reviews"] == 0 and not summary["written"]
    assert snapshot(ws) == before  # no manifest rewrite, no policy.yaml, same round


def test_a_header_only_file_still_carries_a_deliberate_policy_change(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    merge(ws, write_csv(tmp_path / "r.csv", "sample_id,label,verdict,annotator\ns1,dog,corrected,alice\n"))
    summary = merge(ws, write_csv(tmp_path / "empty.csv", "sample_id,label,verdict,annotator\n"),
                    "policy.precedence=round", "policy.reapply=true")
    assert summary["written"] and summary["policy_changed"]


def test_unknown_classes_in_targets_are_a_warning_line(tmp_path, caplog):
    path = tmp_path / "classes.yaml"
    path.write_text(yaml.safe_dump({"classes": ["cat", "dog"], "targets": {"class_f1": {"dog": 0.9, "wolf": 0.95}}}))
    with caplog.at_level(logging.WARNING):
        classes = ClassList.load(path)
        ClassList.load(path)  # said once per file, not at every load
    lines = [r.getMessage() for r in caplog.records if "targets.class_f1" in r.getMessage()]
    assert len(lines) == 1 and "unknown class(es) ['wolf']; their targets are ignored" in lines[0] and "\n" not in lines[0]
    assert classes.targets["class_f1"]["dog"] == 0.9


def test_a_merge_that_leaves_a_class_without_train_images_warns(tmp_path, caplog):
    ws = make_workspace(tmp_path / "ws")
    with caplog.at_level(logging.WARNING):
        merge(ws, write_csv(tmp_path / "r.csv", "sample_id,label,verdict,annotator\ns3,dog,corrected,alice\n"))
    assert manifest_of(ws).loc["s3", "label"] == "dog" and len(load_events(ws.label_events)) == 5
    assert any("1 class(es) without train images after this merge: ['fox']" in r.getMessage() for r in caplog.records)


def test_classes_without_train_ignores_excluded_and_other_splits(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    manifest = manifest_of(ws).reset_index()
    assert classes_without_train(manifest, ["cat", "dog", "fox"]) == []
    manifest["excluded"] = manifest["sample_id"] == "s3"
    assert classes_without_train(manifest, ["cat", "dog", "fox", "owl"]) == ["fox", "owl"]
