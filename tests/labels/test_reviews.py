"""Reviews ingest: CSV and Label Studio JSON export -> one validated reviews table."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from kibble import KibbleError
from kibble.labels.reviews import REVIEW_COLUMNS, read_reviews

CLASSES = ["cat", "dog", "fox"]
MANIFEST = pd.DataFrame(
    {
        "sample_id": ["s1", "s2", "s3", "s4"],
        "path": ["s1.png", "s2.png", "s3.png", "s4.png"],
        "label": ["cat", "dog", "fox", None],
        "split": ["train", "train", "train", "pool"],
    }
)


def choices(name, value):
    return {"id": f"id-{name}", "from_name": name, "to_name": "image", "type": "choices",
            "origin": "manual", "value": {"choices": [value]}}


def note(text):
    return {"id": "id-note", "from_name": "note", "to_name": "image", "type": "textarea",
            "origin": "manual", "value": {"text": [text]}}


def annotation(ann_id, completed_by, result, updated_at, cancelled=False, lead_time=3.5):
    """One annotation as Label Studio's JSON export writes it (docs: Label Studio task format)."""
    return {
        "id": ann_id, "completed_by": completed_by, "result": result, "was_cancelled": cancelled,
        "ground_truth": False, "created_at": updated_at, "updated_at": updated_at, "draft_created_at": None,
        "lead_time": lead_time, "prediction": {}, "result_count": 0, "unique_id": f"u{ann_id}",
        "import_id": None, "last_action": None, "task": 1, "project": 7, "updated_by": completed_by,
        "parent_prediction": None, "parent_annotation": None, "last_created_by": None,
    }


def task(task_id, sample_id, given, annotations, round_=3):
    return {
        "id": task_id,
        "annotations": annotations,
        "file_upload": None, "drafts": [], "predictions": [17], "meta": {},
        "data": {"image": f"/data/local-files/?d=imgs/{sample_id}.png", "sample_id": sample_id,
                 "queue_id": f"r003-{task_id:04d}", "given_label": given, "round": round_},
        "created_at": "2024-05-01T09:00:00.000000Z", "updated_at": "2024-05-02T10:00:00.000000Z",
        "inner_id": task_id, "total_annotations": len(annotations), "cancelled_annotations": 0,
        "total_predictions": 1, "comment_count": 0, "unresolved_comment_count": 0,
        "last_comment_updated_at": None, "project": 7, "updated_by": None, "comment_authors": [],
    }


def write_json(path, obj):
    path.write_text(json.dumps(obj, indent=2))
    return path


def test_csv_reviews(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text(
        "sample_id,label,verdict,annotator,note\n"
        "s1,cat,confirmed,alice,\n"
        "s2,fox,corrected,alice,looks like a fox\n"
        "s3,,out_of_scope,bob,a drawing\n"
        "s1,dog,,bob,\n"          # empty verdict inferred: differs from the given label -> corrected
        "s2,dog,,bob,\n"          # -> confirmed
        "s4,fox,,alice,\n"        # pool sample, no given label -> corrected
    )
    reviews = read_reviews(path, MANIFEST, CLASSES)
    assert list(reviews.columns) == REVIEW_COLUMNS
    assert reviews["verdict"].tolist() == ["confirmed", "corrected", "out_of_scope", "corrected", "confirmed", "corrected"]
    assert reviews.loc[2, "label"] is None and reviews.loc[1, "note"] == "looks like a fox"
    assert reviews["round"].isna().all()


def test_csv_optional_columns_and_exact_duplicates(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("Sample_ID,label,verdict,annotator,round,queue_id\ns1,,confirmed,alice,2,q1\ns1,,confirmed,alice,2,q1\n")
    reviews = read_reviews(path, MANIFEST, CLASSES)
    assert len(reviews) == 1 and reviews.loc[0, "label"] == "cat" and int(reviews.loc[0, "round"]) == 2


def test_labelstudio_export(tmp_path):
    export = [
        task(1, "s1", "cat", [
            annotation(10, 3, [choices("label", "dog"), choices("verdict", "corrected"), note("ears")], "2024-05-02T10:00:00.000000Z"),
            annotation(11, 3, [choices("label", "fox"), choices("verdict", "corrected")], "2024-05-02T11:00:00.000000Z"),  # later: wins
            annotation(12, {"id": 4, "email": "bob@example.com"}, [choices("label", "cat")], "2024-05-02T10:30:00.000000Z"),
        ]),
        task(2, "s2", "dog", [
            annotation(20, 3, [], "2024-05-02T12:00:00.000000Z", cancelled=True),  # skipped only
            annotation(21, 4, [choices("label", "cat")], "2024-05-02T10:00:00.000000Z"),
            annotation(22, 4, [choices("label", "fox")], "2024-05-02T13:00:00.000000Z", cancelled=True),  # cancelled: ignored
        ]),
        task(3, "s3", "fox", []),  # not annotated yet
    ]
    reviews = read_reviews(write_json(tmp_path / "export.json", export), MANIFEST, CLASSES)
    by = {(r.sample_id, r.annotator): r for r in reviews.itertuples()}
    assert len(reviews) == 4
    alice = by[("s1", "labelstudio-user-3")]
    assert (alice.label, alice.verdict, alice.round, alice.queue_id) == ("fox", "corrected", 3, "r003-0001")
    assert alice.created_at == "2024-05-02T11:00:00.000000Z" and alice.lead_time == 3.5
    bob = by[("s1", "bob@example.com")]
    assert (bob.label, bob.verdict) == ("cat", "confirmed")  # label only: equals given -> confirmed
    assert by[("s2", "labelstudio-user-3")].verdict == "skipped"
    assert (by[("s2", "labelstudio-user-4")].label, by[("s2", "labelstudio-user-4")].verdict) == ("cat", "corrected")


def test_labelstudio_given_label_from_task_data(tmp_path):
    # the manifest changed since the queue was built: the task's given_label is what the human saw
    export = [task(1, "s1", "dog", [annotation(1, 5, [choices("label", "dog")], "2024-05-02T10:00:00Z")])]
    reviews = read_reviews(write_json(tmp_path / "e.json", export), MANIFEST, CLASSES)
    assert reviews.loc[0, "verdict"] == "confirmed"


@pytest.mark.parametrize(
    "body, message",
    [
        ("sample_id,label,verdict,annotator\nzz,cat,confirmed,alice\n", r"reviews.csv line 2 \(sample_id 'zz'\): unknown sample_id"),
        ("sample_id,label,verdict,annotator\ns1,cat,confirmed,a\ns2,wolf,corrected,a\n", r"line 3 \(sample_id 's2'\): unknown class 'wolf'"),
        ("sample_id,label,verdict,annotator\ns1,cat,maybe,alice\n", r"line 2 .*bad verdict 'maybe'"),
        ("sample_id,label,annotator\ns1,cat,alice\n", r"reviews.csv: missing column\(s\) \['verdict'\]"),
        ("sample_id,label,verdict,annotator\ns1,,corrected,alice\n", r"line 2 .*corrected but no label"),
        ("sample_id,label,verdict,annotator\ns1,dog,confirmed,alice\n", r"confirmed but label 'dog' differs"),
        ("sample_id,label,verdict,annotator\ns1,dog,,alice\ns1,fox,,alice\n", r"line 2 and line 3: annotator 'alice' gave sample 's1' two different answers"),
        ("sample_id,label,verdict,annotator\ns1,cat,confirmed,\n", r"line 2: empty annotator"),
        ("sample_id,label,verdict,annotator\ns1,,,alice\n", r"neither label nor verdict"),
    ],
)
def test_csv_errors_name_file_and_line(tmp_path, body, message):
    path = tmp_path / "reviews.csv"
    path.write_text(body)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(KibbleError, match=message) as err:
        read_reviews(path, MANIFEST, CLASSES)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # reading writes nothing


def test_labelstudio_errors(tmp_path):
    bad_sample = [task(4, "nope", "cat", [annotation(1, 1, [choices("label", "cat")], "2024-05-02T10:00:00Z")])]
    with pytest.raises(KibbleError, match=r"task 0 \(id 4\) \(sample_id 'nope'\): unknown sample_id"):
        read_reviews(write_json(tmp_path / "a.json", bad_sample), MANIFEST, CLASSES)
    bad_class = [task(5, "s1", "cat", [annotation(1, 1, [choices("label", "Wolf")], "2024-05-02T10:00:00Z")])]
    with pytest.raises(KibbleError, match=r"task 0 \(id 5\).*unknown class 'Wolf'"):
        read_reviews(write_json(tmp_path / "b.json", bad_class), MANIFEST, CLASSES)
    no_sid = [{"id": 9, "data": {"image": "x.png"}, "annotations": []}]
    with pytest.raises(KibbleError, match=r"task 0 \(id 9\): no data.sample_id"):
        read_reviews(write_json(tmp_path / "c.json", no_sid), MANIFEST, CLASSES)
    json_min = [{"image": "x.png", "id": 1, "label": "cat", "annotator": "a@b.c", "annotation_id": 3}]
    with pytest.raises(KibbleError, match="JSON-MIN"):
        read_reviews(write_json(tmp_path / "d.json", json_min), MANIFEST, CLASSES)
    (tmp_path / "e.json").write_text('[{"data": ')
    with pytest.raises(KibbleError, match="invalid JSON at line 1"):
        read_reviews(tmp_path / "e.json", MANIFEST, CLASSES)
    with pytest.raises(KibbleError, match="reviews file not found"):
        read_reviews(tmp_path / "missing.csv", MANIFEST, CLASSES)


def test_bare_csv_takes_round_and_given_label_from_its_queue(tmp_path):
    queue = pd.DataFrame({"queue_id": ["r001-0001", "r002-0001"], "round": [1, 2], "sample_id": ["s1", "s1"],
                          "given_label": ["fox", "dog"]})
    path = tmp_path / "r.csv"
    path.write_text("sample_id,label,verdict,annotator,queue_id\ns1,,confirmed,alice,r001-0001\ns1,dog,,bob,\n")
    reviews = read_reviews(path, MANIFEST, CLASSES, queue=queue)
    alice, bob = reviews.to_dict("records")
    assert (alice["label"], alice["round"], alice["queue_id"]) == ("fox", 1, "r001-0001")  # by queue_id
    assert (bob["verdict"], bob["round"], bob["queue_id"]) == ("confirmed", 2, "r002-0001")  # latest queue holding s1


def test_column_checks_equal_the_row_checks_on_valid_reviews():
    """validate_reviews checks 10^5-row files column by column; the row-by-row pass (which also words the
    errors) is the reference: on valid input both must give the same rows."""
    import numpy as np

    from kibble.labels.reviews import _UNSET, _checked_columns, _checked_rows

    rng = np.random.default_rng(3)
    n = 400
    manifest = pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "path": "x", "split": "train",
                             "label": rng.choice(["cat", "dog", "fox", None], n)})
    classes = ["cat", "dog", "fox"]
    given = manifest["label"].astype(object).where(manifest["label"].notna(), None).to_numpy(dtype=object)
    label = np.where(rng.random(n) < 0.5, given, rng.choice(classes, n)).astype(object)
    label[given == None] = rng.choice(classes, int((given == None).sum()))  # noqa: E711
    verdict = np.where(label == given, rng.choice(["confirmed", " Confirmed ", ""], n), rng.choice(["corrected", "CORRECTED", ""], n)).astype(object)
    blank = (verdict != "") & (label == given) & (rng.random(n) < 0.3)
    label[blank & (given != None)] = None  # noqa: E711  confirmed without a label: takes the given one
    frame = pd.DataFrame({"sample_id": [f" s{i} " for i in range(n)], "label": label, "verdict": verdict,
                          "annotator": rng.choice(["ann", "bob "], n), "note": rng.choice(["", "hm", None], n),
                          "round": rng.choice(["0", "1", "", None], n), "lead_time": rng.choice(["1.5", "", None, "3"], n),
                          "given_label": [_UNSET] * n})
    where = [f"line {i + 2}" for i in range(n)]
    fast = _checked_columns(frame, manifest, classes, where)
    assert fast is not None
    rows = pd.DataFrame(_checked_rows(frame, manifest, classes, "r.csv", where, None), columns=fast.columns)
    pd.testing.assert_frame_equal(fast.astype(object).fillna(np.nan), rows.astype(object).fillna(np.nan), check_dtype=False)
    broken = frame.copy()
    broken.loc[7, "sample_id"] = "ghost"
    assert _checked_columns(broken, manifest, classes, where) is None  # the row pass then words the error
