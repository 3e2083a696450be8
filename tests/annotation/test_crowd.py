"""Overlap assignments, the simulated crowd, guideline feedback and the annotators' report sections."""

from __future__ import annotations

import pandas as pd
import pytest

from kibble import KibbleError
from kibble.data.classes import ClassList
from kibble.paths import Workspace
from kibble.queue.builder import queue_id
from kibble.annotation.crowd import SimulatedCrowd, assign_overlap, write_assignments
from kibble.annotation.feedback import guideline_feedback
from kibble.queue.formats import write_queue_files
from kibble.labels.history import make_events
from kibble.report.annotators import round_sections
from kibble.labels.merge import merge_reviews

CROWD = [{"name": "a", "error_rate": 0.0, "seconds_per_item": 5}, {"name": "b", "error_rate": 0.3},
         {"name": "c", "error_rate": 0.0, "ambiguous_rate": 0.5}]


def queue_of(manifest: pd.DataFrame, n: int = 60, round_index: int = 0) -> pd.DataFrame:
    rows = manifest[manifest["split"] == "train"].head(n)
    return pd.DataFrame({
        "queue_id": [queue_id(round_index, s) for s in rows["sample_id"]], "round": round_index, "rank": range(1, n + 1),
        "sample_id": rows["sample_id"].to_numpy(), "path": rows["path"].to_numpy(), "given_label": rows["label"].to_numpy(),
        "suggested_label": rows["label"].to_numpy(), "score": 0.5, "strategy": "kfold", "reason": "kfold 0.500", "kind": "relabel",
    })


def test_assignment_is_balanced_and_distinct(tmp_path):
    queue = pd.DataFrame({"queue_id": [f"q{i}" for i in range(10)], "sample_id": [f"s{i}" for i in range(10)]})
    table = assign_overlap(queue, ["a", "b", "c", "d"], overlap=2, seed=0)
    assert len(table) == 20 and not table.duplicated(["queue_id", "annotator"]).any()
    assert table.groupby("queue_id").size().eq(2).all()
    assert table["annotator"].value_counts().tolist() == [5, 5, 5, 5]
    files = write_assignments(tmp_path, queue, table)
    assert (tmp_path / "assignments.csv").is_file() and len(files) == 5
    assert len(pd.read_csv(tmp_path / "queue.a.csv")) == 5


def test_overlap_and_annotator_id_errors():
    queue = pd.DataFrame({"queue_id": ["q1"], "sample_id": ["s1"]})
    with pytest.raises(KibbleError, match=r"overlap=4 but only 3 annotator\(s\) \(a, b, c\)"):
        assign_overlap(queue, ["a", "b", "c"], overlap=4)
    with pytest.raises(KibbleError, match="overlap=0"):
        assign_overlap(queue, ["a"], overlap=0)
    with pytest.raises(KibbleError, match="annotator id is missing"):
        assign_overlap(queue, ["a", ""], overlap=1)
    with pytest.raises(KibbleError, match=r"annotators\[1\] has no name"):
        SimulatedCrowd([{"name": "a"}, {"error_rate": 0.1}])
    with pytest.raises(KibbleError, match="overlap=4 but only 3"):
        SimulatedCrowd(CROWD, overlap=4)
    with pytest.raises(KibbleError, match="repeat"):
        SimulatedCrowd([{"name": "a"}, {"name": "a"}])


def test_crowd_answers_its_assignments(fresh_digits_workspace):
    ws = Workspace(fresh_digits_workspace)
    classes = ClassList.load(ws.classes)
    manifest = pd.read_parquet(ws.manifest)
    manifest["true_label"] = manifest["label"]
    crowd = SimulatedCrowd(CROWD, overlap=2, seed=0)
    queue = queue_of(manifest)
    assignments = crowd.assign(queue)
    reviews = crowd.review(queue, manifest, classes.names, assignments=assignments)
    assert len(reviews) == 120 and set(zip(reviews["queue_id"], reviews["annotator"])) == set(zip(assignments["queue_id"], assignments["annotator"]))
    assert (reviews["lead_time"] > 0).all() and crowd.cost(len(queue)) == 120
    by = reviews.groupby("annotator")
    assert (by.get_group("a")["label"] == by.get_group("a")["sample_id"].map(manifest.set_index("sample_id")["true_label"])).all()
    amb = by.get_group("c")
    assert (amb["verdict"] == "ambiguous").any() and amb.loc[amb["verdict"] == "ambiguous", "note"].str.startswith("could be").all()
    with pytest.raises(KibbleError, match="not in the crowd"):
        crowd.review(queue, manifest, classes.names, assignments=assignments.assign(annotator="zed"))


def test_merge_writes_quality_feedback_and_report(fresh_digits_workspace):
    ws = Workspace(fresh_digits_workspace)
    classes = ClassList.load(ws.classes)
    manifest = pd.read_parquet(ws.manifest)
    manifest["true_label"] = manifest["label"]
    queue = queue_of(manifest)
    write_queue_files(queue, ws.round_dir(0), classes, None, data_root=ws.data_root)
    reviews = SimulatedCrowd(CROWD, overlap=3, seed=0).review(queue, manifest, classes.names)
    summary = merge_reviews(ws, reviews, source="vendor")
    assert summary["n_events_added"] == 180 and summary["annotators_flagged"] == []  # no gold: nothing to flag
    assert (ws.round_dir(0) / "annotator_quality.json").is_file()
    feedback = pd.read_csv(ws.round_dir(0) / "guideline_feedback.csv")
    assert len(feedback) and feedback["n_total"].is_monotonic_decreasing
    assert feedback["notes"].fillna("").str.contains("could be").any() and feedback["n_disagreements"].sum() > 0
    sections = round_sections(ws, ws.round_dir(0))
    assert [s.title for s in sections] == ["Annotator quality", "Guideline feedback"]
    assert "Krippendorff" in sections[0].body and "data:image/jpeg;base64," in sections[1].body
    assert round_sections(ws, ws.round_dir(5)) == []
    # merging the same answers again adds nothing
    assert merge_reviews(ws, reviews, source="vendor")["n_events_added"] == 0


def test_missing_annotator_in_reviews_writes_nothing(fresh_digits_workspace):
    ws = Workspace(fresh_digits_workspace)
    before = ws.label_events.read_bytes()
    manifest = pd.read_parquet(ws.manifest)
    bad = pd.DataFrame({"sample_id": manifest["sample_id"].head(2), "label": manifest["label"].head(2), "verdict": "confirmed",
                        "annotator": ["a", None], "note": "", "round": pd.array([0, 0], dtype="Int64")})
    with pytest.raises(KibbleError, match="no annotator id"):
        merge_reviews(ws, bad, source="vendor")
    assert ws.label_events.read_bytes() == before and not (ws.round_dir(0) / "annotator_quality.json").exists()


def test_feedback_counts_pairs_with_notes():
    events = make_events([
        {"sample_id": "s1", "label": None, "previous_label": "husky", "verdict": "ambiguous", "source": "review", "annotator": "a", "round": 0, "note": "ears?"},
        {"sample_id": "s2", "label": "malamute", "previous_label": "husky", "verdict": "ambiguous", "source": "review", "annotator": "b", "round": 0, "note": "size"},
        {"sample_id": "s3", "label": "husky", "previous_label": "husky", "verdict": "confirmed", "source": "review", "annotator": "a", "round": 0},
        {"sample_id": "s3", "label": "malamute", "previous_label": "husky", "verdict": "corrected", "source": "review", "annotator": "b", "round": 0},
        {"sample_id": "s4", "label": "pug", "previous_label": "husky", "verdict": "ambiguous", "source": "review", "annotator": "a", "round": 0, "note": "x [kibble gold_item]"},
    ])
    queue = pd.DataFrame({"sample_id": ["s1"], "suggested_label": ["malamute"]})
    table = guideline_feedback(events, queue)
    assert table.iloc[0][["class_a", "class_b", "n_ambiguous", "n_disagreements", "n_annotators"]].tolist() == ["husky", "malamute", 2, 1, 2]
    assert table.iloc[0]["notes"] == "ears? | size" and table.iloc[0]["examples"] == "s1|s2|s3"
    assert len(table) == 1  # the gold question's answer is not guideline feedback


def test_lead_time_is_kept_in_the_history(fresh_digits_workspace):
    """answers/hour after a second merge counts the first merge's answers too (their lead_time is in the events)."""
    import json

    import numpy as np

    from kibble.io import atomic_write_parquet
    from kibble.labels.history import EVENT_COLUMNS, load_events

    ws = Workspace(fresh_digits_workspace)
    classes = ClassList.load(ws.classes)
    manifest = pd.read_parquet(ws.manifest)
    manifest["true_label"] = manifest["label"]
    # a history written before lead_time was an event column still loads (and is appended to)
    atomic_write_parquet(ws.label_events, load_events(ws.label_events).drop(columns="lead_time"))
    assert list(load_events(ws.label_events).columns) == EVENT_COLUMNS and load_events(ws.label_events)["lead_time"].isna().all()
    queue = queue_of(manifest, n=40)
    write_queue_files(queue, ws.round_dir(0), classes, None, data_root=ws.data_root)
    reviews = SimulatedCrowd(CROWD[:2], overlap=2, seed=0).review(queue, manifest, classes.names).assign(round=0)
    merge_reviews(ws, reviews.iloc[::2], source="vendor")
    merge_reviews(ws, reviews.iloc[1::2], source="vendor")
    events = load_events(ws.label_events)
    vendor = events[events["source"] == "vendor"]
    assert len(vendor) == 80 and vendor["lead_time"].dtype == np.float64
    assert sorted(vendor["lead_time"]) == pytest.approx(sorted(reviews["lead_time"]))
    quality = {r["annotator"]: r for r in json.loads((ws.round_dir(0) / "annotator_quality.json").read_text())["annotators"]}
    for who, part in reviews.groupby("annotator"):
        assert quality[who]["n_answers"] == 40
        assert quality[who]["answers_per_hour"] == pytest.approx(len(part) / (part["lead_time"].sum() / 3600.0))


def test_unvalidated_reviews_with_an_unknown_class_write_nothing(fresh_digits_workspace):
    ws = Workspace(fresh_digits_workspace)
    before = ws.label_events.read_bytes()
    manifest = pd.read_parquet(ws.manifest)
    bad = pd.DataFrame({"sample_id": manifest["sample_id"].head(2), "label": ["wolf", None], "verdict": ["corrected", "skipped"],
                        "annotator": ["a", "a"], "note": ""})
    with pytest.raises(KibbleError, match=r"unknown class 'wolf' \(1 unknown\); use class names from classes.yaml"):
        merge_reviews(ws, bad, source="vendor")
    assert ws.label_events.read_bytes() == before
