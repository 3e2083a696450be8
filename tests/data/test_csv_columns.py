"""`source=csv` finds its columns by name: a table shaped like fastai's noisy_imagewoof.csv (path,
noisy_labels_*, is_valid) imports as it is; an unknown column name is one error line listing the CSV's
columns; a split drawn at random is said in the import summary, not done silently."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from helpers import import_workspace, write_noise_jpegs
from kibble import KibbleError
from kibble.data.manifest import load_manifest
from kibble.data.sources import import_csv
from kibble.paths import Workspace

WOOF_COLUMNS = ["source.label_column=noisy_labels_5", "source.true_label_column=noisy_labels_0", "source.valid_column=is_valid"]


def noisy_imagewoof_like(root: Path) -> Path:
    """12 images in train/<wnid>/ and val/<wnid>/ and a CSV of fastai's shape, paths relative to `root`."""
    rows = []
    for i in range(12):
        wnid = ["n02086240", "n02087394"][i % 2]
        folder = "val" if i >= 8 else "train"
        rel = f"{folder}/{wnid}/{wnid}_{i}.JPEG"
        write_noise_jpegs(root, [rel], seed=i)
        noisy = "n02087394" if i == 0 else wnid  # one flipped label at 5 %
        rows.append({"path": rel, "noisy_labels_0": wnid, "noisy_labels_1": wnid, "noisy_labels_5": noisy,
                     "noisy_labels_25": wnid, "noisy_labels_50": wnid, "is_valid": folder == "val"})
    csv = root / "noisy_imagewoof.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def test_a_noisy_imagewoof_shaped_csv_imports_as_it_is(tmp_path: Path, capsys: pytest.CaptureFixture):
    csv = noisy_imagewoof_like(tmp_path / "woof")
    ws = import_workspace(tmp_path / "ws", ["source=csv", f"source.path={csv}", *WOOF_COLUMNS, f"source.root={tmp_path / 'woof'}"])
    manifest = load_manifest(Workspace(ws).manifest)
    assert manifest["split"].value_counts().to_dict() == {"train": 8, "val": 4}
    first = manifest.set_index("sample_id").loc["train/n02086240/n02086240_0.JPEG"]
    assert first["label"] == "n02087394" and first["true_label"] == "n02086240"
    assert "is_valid" not in manifest.columns and "noisy_labels_25" in manifest.columns  # metadata carried through
    out = capsys.readouterr().out
    assert "split from column 'is_valid'" in out and "true_label kept (1 labels differ" in out


def test_an_unknown_column_name_is_one_line_listing_the_csv_columns(tmp_path: Path):
    csv = noisy_imagewoof_like(tmp_path / "woof")
    with pytest.raises(KibbleError, match=r"no column 'noisy_label_5' for source.label_column; the CSV's columns: path, noisy_labels_0") as err:
        import_csv(csv, label_column="noisy_label_5")
    assert "\n" not in str(err.value)
    with pytest.raises(KibbleError, match="no column 'fold' for source.split_column"):
        import_csv(csv, label_column="noisy_labels_5", split_column="fold")
    with pytest.raises(KibbleError, match="no column 'valid' for source.valid_column"):
        import_csv(csv, label_column="noisy_labels_5", valid_column="valid")


def test_a_valid_column_must_hold_booleans(tmp_path: Path):
    csv = tmp_path / "t.csv"
    pd.DataFrame({"path": ["a.jpg", "b.jpg"], "label": ["x", "y"], "is_valid": ["True", "maybe"]}).to_csv(csv, index=False)
    with pytest.raises(KibbleError, match=r"row 3: column 'is_valid' has 'maybe'; expected true/false"):
        import_csv(csv, valid_column="is_valid")


def test_renamed_columns_and_a_clashing_label_column_kept_as_metadata(tmp_path: Path):
    csv = tmp_path / "t.csv"
    pd.DataFrame({"file": ["a.jpg", "b.jpg", "c.jpg"], "label": ["x", "x", "y"], "clean": ["x", "y", "y"],
                  "subset": ["train", "test", "train"], "id": ["007", "008", "009"], "dog": ["d1", "d1", "d2"]}).to_csv(csv, index=False)
    frame, names, _, _ = import_csv(csv, path_column="file", label_column="clean", split_column="subset", sample_id_column="id", group_column="dog")
    assert names == ["x", "y"]
    assert frame["sample_id"].tolist() == ["007", "008", "009"] and frame["path"].tolist() == ["a.jpg", "b.jpg", "c.jpg"]
    assert frame["label"].tolist() == ["x", "y", "y"] and frame["csv_label"].tolist() == ["x", "x", "y"]
    assert frame["split"].tolist() == ["train", "test", "train"] and frame["group"].tolist() == ["d1", "d1", "d2"]
    assert frame.attrs["notes"] == []


def test_a_split_drawn_at_random_is_said_in_the_summary(tmp_path: Path, capsys: pytest.CaptureFixture):
    write_noise_jpegs(tmp_path / "data", [f"{i}.jpg" for i in range(10)])
    csv = tmp_path / "data" / "labels.csv"
    pd.DataFrame({"path": [f"{i}.jpg" for i in range(10)], "label": ["x", "y"] * 5}).to_csv(csv, index=False)
    import_workspace(tmp_path / "ws", ["source=csv", f"source.path={csv}"])
    out = capsys.readouterr().out
    assert "no split column: 2 labelled images (20%) became test (source.test_fraction), stratified by label" in out
