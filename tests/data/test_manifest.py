"""The manifest contract (DESIGN §3): schema, validation, atomic save, fingerprint."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from kibble import KibbleError
from kibble.data.classes import ClassList
from kibble.data.manifest import (
    REQUIRED_COLUMNS,
    load_manifest,
    manifest_fingerprint,
    resolve_image_path,
    save_manifest,
    validate_manifest,
)


def frame(**extra) -> pd.DataFrame:
    base = {
        "sample_id": ["a.png", "b.png", "c.png", "d.png"],
        "path": ["cats/a.png", "dogs/b.png", "cats/c.png", "pool/d.png"],
        "label": ["cat", "dog", "cat", None],
        "split": ["train", "train", "test", "pool"],
    }
    base.update(extra)
    return pd.DataFrame(base)


def test_valid_manifest_round_trips_with_extra_columns(tmp_path: Path):
    df = frame(group=["g1", "g1", "g2", None], environment=["indoor", "outdoor", "indoor", "outdoor"])
    path = save_manifest(df, tmp_path / "manifest.parquet", ["cat", "dog"])
    back = load_manifest(path, ["cat", "dog"])
    assert list(back.columns) == list(df.columns)  # metadata carried through untouched
    assert back["label"].tolist()[:3] == ["cat", "dog", "cat"]
    assert back["label"].isna().tolist() == [False, False, False, True]
    assert back["environment"].tolist() == df["environment"].tolist()
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temp file


def test_validate_normalises_dtypes():
    df = frame(sample_id=[1, 2, 3, 4], label=[0, 1, 0, 1])
    out = validate_manifest(df, ["0", "1"])
    assert out["sample_id"].tolist() == ["1", "2", "3", "4"]
    assert out["label"].tolist() == ["0", "1", "0", "1"]


@pytest.mark.parametrize("column", REQUIRED_COLUMNS)
def test_missing_required_column(column: str):
    with pytest.raises(KibbleError, match=rf"missing column\(s\) \['{column}'\]"):
        validate_manifest(frame().drop(columns=[column]), source="my.parquet")


def test_bad_split_names_the_row():
    with pytest.raises(KibbleError, match=r"row 1 has split 'training'"):
        validate_manifest(frame(split=["train", "training", "test", "pool"]))


def test_empty_sample_id_and_path():
    with pytest.raises(KibbleError, match="row 2 has an empty sample_id"):
        validate_manifest(frame(sample_id=["a", "b", None, "d"]))
    with pytest.raises(KibbleError, match=r"row 0 \(sample_id 'a.png'\) has no path"):
        validate_manifest(frame(path=[None, "x", "y", "z"]))


def test_unlabelled_rows_are_allowed_and_not_checked_against_classes():
    out = validate_manifest(frame(), ["cat", "dog"])
    assert out["label"].isna().sum() == 1


def test_load_missing_manifest(tmp_path: Path):
    with pytest.raises(KibbleError, match="manifest not found; run `kibble import` first"):
        load_manifest(tmp_path / "manifest.parquet")


def test_fingerprint_tracks_train_labels_only():
    base = manifest_fingerprint(frame())
    assert manifest_fingerprint(frame().iloc[::-1]) == base  # order does not matter
    changed_test = frame(label=["cat", "dog", "dog", None])
    assert manifest_fingerprint(changed_test) == base
    changed_train = frame(label=["dog", "dog", "cat", None])
    assert manifest_fingerprint(changed_train) != base


def test_resolve_image_path(tmp_path: Path):
    assert resolve_image_path("a/b.png", tmp_path) == tmp_path / "a" / "b.png"
    assert resolve_image_path(str(tmp_path / "x.png"), "/elsewhere") == tmp_path / "x.png"


def test_classes_yaml_round_trip_and_errors(tmp_path: Path):
    classes = ClassList.from_names(["n1", "n2"], {"n1": "Chihuahua"})
    classes.save(tmp_path / "classes.yaml")
    back = ClassList.load(tmp_path / "classes.yaml")
    assert back.names == ["n1", "n2"]
    assert back.classes[0].display_name == "Chihuahua"
    assert back.targets == {"per_class_f1": 0.80, "weighted_f1": 0.85}
    (tmp_path / "dupes.yaml").write_text("classes: [a, b, a]\n")
    with pytest.raises(KibbleError, match=r"duplicate class names \['a'\]"):
        ClassList.load(tmp_path / "dupes.yaml")
    (tmp_path / "empty.yaml").write_text("classes: []\n")
    with pytest.raises(KibbleError, match="non-empty `classes:` list"):
        ClassList.load(tmp_path / "empty.yaml")
