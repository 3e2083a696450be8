"""`kibble merge`: reviews -> label_events.parquet (append-only) -> manifest labels -> next round."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_dir

from kibble import KibbleError
from kibble.data.classes import ClassList
from kibble.data.manifest import save_manifest
from kibble.io import atomic_write_parquet
from kibble.paths import Workspace, config_dir
from kibble.annotation.annotator import SimulatedAnnotator
from kibble.labels.history import EVENT_COLUMNS, initial_events, load_events
from kibble.labels.lock import LOCK_DIR
from kibble.labels.merge import merge_reviews
from kibble.tasks.merge import run

CLASSES = ["cat", "dog", "fox"]


def make_workspace(root: Path) -> Workspace:
    """A tiny imported workspace: no images needed to merge."""
    ws = Workspace(root)
    ws.root.mkdir(parents=True)
    manifest = pd.DataFrame(
        {
            "sample_id": ["s1", "s2", "s3", "s4", "s5"],
            "path": [f"img/s{i}.png" for i in range(1, 6)],
            "label": ["cat", "dog", "fox", "cat", None],
            "split": ["train", "train", "train", "val", "pool"],
            "true_label": ["dog", "dog", "fox", "cat", "fox"],
            "indoor": [True, False, True, False, True],
        }
    )
    ClassList.from_names(CLASSES).save(ws.classes)
    save_manifest(manifest, ws.manifest, CLASSES)
    atomic_write_parquet(ws.label_events, initial_events(manifest))
    ws.update_state(round=0, data_root=".")
    return ws


def merge(ws: Workspace, reviews: Path, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("merge", overrides=[f"workspace='{ws.root}'", f"reviews='{reviews}'", *overrides])
    return run(cfg)


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def manifest_of(ws: Workspace) -> pd.DataFrame:
    return pd.read_parquet(ws.manifest).set_index("sample_id")


def snapshot(ws: Workspace) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in ws.root.iterdir() if p.is_file()}


def ls_task(task_id, sample_id, given, annotations, round_=0):
    return {"id": task_id, "annotations": annotations, "predictions": [], "drafts": [], "meta": {},
            "data": {"image": f"/data/local-files/?d=img/{sample_id}.png", "sample_id": sample_id,
                     "queue_id": f"r{round_:03d}-{task_id:04d}", "given_label": given, "round": round_},
            "created_at": "2024-05-01T09:00:00.000000Z", "updated_at": "2024-05-02T10:00:00.000000Z",
            "project": 1, "total_annotations": len(annotations), "cancelled_annotations": 0}


def ls_annotation(ann_id, user, label=None, verdict=None, note=None, at="2024-05-02T10:00:00.000000Z", cancelled=False):
    result = []
    if label:
        result.append({"id": "l", "from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}})
    if verdict:
        result.append({"id": "v", "from_name": "verdict", "to_name": "image", "type": "choices", "value": {"choices": [verdict]}})
    if note:
        result.append({"id": "n", "from_name": "note", "to_name": "image", "type": "textarea", "value": {"text": [note]}})
    return {"id": ann_id, "completed_by": user, "result": result, "was_cancelled": cancelled, "ground_truth": False,
            "created_at": at, "updated_at": at, "lead_time": 2.0, "task": 1, "project": 1}


def test_labelstudio_export_merges(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    export = [
        ls_task(1, "s1", "cat", [ls_annotation(1, 7, "dog", "corrected", note="clearly a dog"),
                                 ls_annotation(2, {"id": 8, "email": "bo@x.org"}, "dog")]),
        ls_task(2, "s2", "dog", [ls_annotation(3, 7, verdict="confirmed")]),
        ls_task(3, "s3", "fox", [ls_annotation(4, 7, "cat", cancelled=True)]),
        ls_task(4, "s5", None, [ls_annotation(5, 7, "fox")]),
    ]
    path = tmp_path / "project-1-export.json"
    path.write_text(json.dumps(export))
    summary = merge(ws, path)
    assert summary["n_events_added"] == 5 and summary["n_labels_changed"] == 2
    assert (summary["n_excluded"], summary["n_ambiguous"]) == (0, 0)
    m = manifest_of(ws)
    assert m["label"].to_dict() == {"s1": "dog", "s2": "dog", "s3": "fox", "s4": "cat", "s5": "fox"}
    assert not m["excluded"].any()
    assert m["true_label"].tolist() == ["dog", "dog", "fox", "cat", "fox"] and m["indoor"].tolist() == [True, False, True, False, True]
    events = load_events(ws.label_events)
    assert list(events.columns) == EVENT_COLUMNS and len(events) == 4 + 5
    new = events[events["source"] == "review"].set_index(["sample_id", "annotator"])
    first = new.loc[("s1", "labelstudio-user-7")]
    assert (first["label"], first["previous_label"], first["verdict"], first["round"]) == ("dog", "cat", "corrected", 0)
    assert first["note"] == "clearly a dog" and first["queue_id"] == "r000-0001"
    assert new.loc[("s3", "labelstudio-user-7"), "verdict"] == "skipped"
    assert Workspace(ws.root).current_round() == 1


def test_two_annotators_disagreeing(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    tie = write_csv(tmp_path / "tie.csv", "sample_id,label,verdict,annotator\ns1,dog,corrected,alice\ns1,fox,corrected,bob\n")
    summary = merge(ws, tie)
    assert summary["n_ambiguous"] == 1 and summary["n_labels_changed"] == 0
    assert manifest_of(ws).loc["s1", "label"] == "cat"  # a tie keeps the label it had
    third = write_csv(tmp_path / "third.csv", "sample_id,label,verdict,annotator\ns1,dog,corrected,carol\n")
    summary = merge(ws, third, "round=0")  # a third opinion on the same round breaks the tie
    assert summary["n_ambiguous"] == 0 and manifest_of(ws).loc["s1", "label"] == "dog"


@pytest.mark.parametrize(
    "body, message",
    [
        ("sample_id,label,verdict,annotator\ns1,dog,corrected,alice\nghost,dog,corrected,alice\n", r"line 3 \(sample_id 'ghost'\): unknown sample_id"),
        ("sample_id,label,verdict,annotator\ns1,wolf,corrected,alice\n", r"line 2 \(sample_id 's1'\): unknown class 'wolf'"),
    ],
)
def test_bad_reviews_fail_and_write_nothing(tmp_path, body, message):
    ws = make_workspace(tmp_path / "ws")
    before = snapshot(ws)
    with pytest.raises(KibbleError, match=message):
        merge(ws, write_csv(tmp_path / "reviews.csv", body))
    assert snapshot(ws) == before
    assert sorted(p.name for p in ws.root.iterdir() if p.name != LOCK_DIR) == sorted(before)  # no temp files left either (the lock's folder may stay)


def test_merging_the_same_reviews_twice_adds_nothing(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    reviews = write_csv(tmp_path / "r.csv", "sample_id,label,verdict,annotator,note\ns1,dog,corrected,alice,ears\ns2,,confirmed,alice,\n")
    first = merge(ws, reviews)
    assert first["n_events_added"] == 2 and first["next_round"] == 1
    after_first = snapshot(ws)
    second = merge(ws, reviews)  # the workspace is now at round 1: still recognised as merged
    assert second["n_events_added"] == 0 and second["n_duplicates"] == 2 and second["next_round"] == 1
    assert snapshot(ws) == after_first
    third = merge(ws, reviews, "round=0")  # explicit round: same event ids
    assert third["n_events_added"] == 0 and len(load_events(ws.label_events)) == 4 + 2


def test_labelstudio_export_merged_twice_adds_nothing(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    path = tmp_path / "export.json"
    path.write_text(json.dumps([ls_task(1, "s1", "cat", [ls_annotation(1, 3, "dog")])]))
    assert merge(ws, path)["n_events_added"] == 1
    again = merge(ws, path)
    assert again["n_events_added"] == 0 and Workspace(ws.root).current_round() == 1


def test_out_of_scope_excludes(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    summary = merge(ws, write_csv(tmp_path / "r.csv", "sample_id,label,verdict,annotator,note\ns3,,out_of_scope,alice,a cartoon\n"))
    assert summary["n_excluded"] == 1 and summary["n_labels_changed"] == 0
    m = manifest_of(ws)
    assert m.loc["s3", "excluded"] and m.loc["s3", "label"] == "fox" and len(m) == 5


def test_expert_beats_vendor(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    merge(ws, write_csv(tmp_path / "expert.csv", "sample_id,label,verdict,annotator\ns1,dog,corrected,dr_who\n"), "review_source=expert")
    vendor = "sample_id,label,verdict,annotator\ns1,fox,corrected,v1\ns1,fox,corrected,v2\ns2,fox,corrected,v1\n"
    summary = merge(ws, write_csv(tmp_path / "vendor.csv", vendor), "review_source=vendor")  # later round, two votes
    assert summary["n_events_added"] == 3
    m = manifest_of(ws)
    assert m.loc["s1", "label"] == "dog" and m.loc["s2", "label"] == "fox"
    # precedence=round lets the later vendor answer win: a change of the saved policy, so only with reapply
    none = write_csv(tmp_path / "none.csv", "sample_id,label,verdict,annotator\n")
    before = snapshot(ws)
    with pytest.raises(KibbleError, match=r"policy differs from .*policy.yaml, which resolved this workspace's labels: precedence round "
                                          r"\(saved: authority\); add policy.reapply=true .* \(policy.precedence=authority\)$"):
        merge(ws, none, "policy.precedence=round")
    assert snapshot(ws) == before and manifest_of(ws).loc["s1", "label"] == "dog"
    summary = merge(ws, none, "policy.precedence=round", "policy.reapply=true")
    assert summary["policy_changed"] and manifest_of(ws).loc["s1", "label"] == "fox"
    saved = yaml.safe_load((ws.root / "policy.yaml").read_text())
    assert saved["policy"]["precedence"] == "round"
    assert [(c["from"] or {}).get("precedence") for c in saved["changes"]] == [None, "authority"]
    assert saved["changes"][-1]["labels_changed"] == 1 and saved["changes"][-1]["by"] == "kibble merge"
    # from now on the new policy is the workspace's: merging under it needs no switch, the old one does
    assert not merge(ws, none, "policy.precedence=round")["policy_changed"]
    with pytest.raises(KibbleError, match="policy differs"):
        merge(ws, none)


def test_bad_source_and_missing_workspace(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    reviews = write_csv(tmp_path / "r.csv", "sample_id,label,verdict,annotator\ns1,dog,corrected,a\n")
    with pytest.raises(KibbleError, match="review_source='import'"):
        merge(ws, reviews, "review_source=import")
    with pytest.raises(KibbleError, match="run `kibble import"):
        merge(Workspace(tmp_path / "nowhere"), reviews)


def test_simulated_annotator_round_trip(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    manifest = pd.read_parquet(ws.manifest)
    queue = pd.DataFrame({"queue_id": ["q1", "q2"], "round": [0, 0], "sample_id": ["s1", "s2"],
                          "given_label": ["cat", "dog"]})
    reviews = SimulatedAnnotator(error_rate=0.0).review(queue, manifest, CLASSES)
    summary = merge_reviews(ws, reviews, source="simulated")
    assert summary["n_events_added"] == 2 and summary["n_labels_changed"] == 1
    m = manifest_of(ws)
    assert (m.loc[["s1", "s2"], "label"] == m.loc[["s1", "s2"], "true_label"]).all()
    assert merge_reviews(ws, reviews, source="simulated")["n_events_added"] == 0


def test_csv_reviews_map_back_to_their_queue(tmp_path):
    """Per-annotator CSVs merged one after another land in the queue's round, against its given label."""
    from kibble.queue.formats import write_queue_files

    ws = make_workspace(tmp_path / "ws")
    queue = pd.DataFrame({"queue_id": ["r000-0001"], "round": [0], "rank": [1], "sample_id": ["s1"], "path": ["img/s1.png"],
                          "given_label": ["cat"], "suggested_label": ["dog"], "score": [0.9], "strategy": ["kfold"], "reason": ["x"]})
    write_queue_files(queue, ws.round_dir(0), ClassList.load(ws.classes), "http://x", data_root=ws.root)
    merge(ws, write_csv(tmp_path / "alice.csv", "sample_id,label,verdict,annotator\ns1,dog,corrected,alice\n"))
    assert manifest_of(ws).loc["s1", "label"] == "dog" and Workspace(ws.root).current_round() == 1
    # bob confirms what he was shown (cat), in the same round 0: one vote each -> ambiguous, label as it was
    summary = merge(ws, write_csv(tmp_path / "bob.csv", "sample_id,label,verdict,annotator\ns1,,confirmed,bob\n"))
    assert summary["rounds"] == [0] and summary["n_ambiguous"] == 1
    events = load_events(ws.label_events).set_index("annotator")
    assert events.loc["bob", "label"] == "cat" and events.loc["bob", "queue_id"] == "r000-0001"
    assert manifest_of(ws).loc["s1", "label"] == "cat" and Workspace(ws.root).current_round() == 1


def test_large_merges_log_each_step_small_ones_stay_quiet(caplog):
    import logging

    from kibble.labels.merge import _StepLog

    with caplog.at_level(logging.INFO, logger="kibble.labels.merge"):
        quiet = _StepLog(50, 100, 1_000)
        quiet("labels resolved")
        assert not caplog.records
        step = _StepLog(20_000, 1_000_000, 1_000_000)
        step("labels resolved", "1,020,000 events")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "merge: 20,000 reviews into 1,000,000 rows (1,000,000 events so far)"
    assert lines[1].startswith("merge: labels resolved: 1,020,000 events (") and "s in all)" in lines[1]
