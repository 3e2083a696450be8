"""Importers on generated trees (Stanford Dogs layout with/without the .mat lists, image folders, CSV)
and on the built-in digits; inject_noise flips exactly the requested number of train labels."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from helpers import DOG_BREEDS, import_workspace, write_noise_jpegs
from kibble.data.classes import ClassList
from kibble.data.manifest import load_manifest, resolve_image_path
from kibble.data.sources import (
    import_csv,
    import_digits,
    import_image_folder,
    import_stanford_dogs,
    inject_noise,
    stratified_split,
)
from kibble.paths import Workspace
from kibble.labels.history import EVENT_COLUMNS

WNIDS = [b.split("-", 1)[0] for b in DOG_BREEDS]


def test_stanford_dogs_official_lists(stanford_dogs_tree, tmp_path: Path):
    root = stanford_dogs_tree(lists=True)
    ws = import_workspace(tmp_path / "ws", ["source=stanford_dogs", f"source.root={root}", "source.val_fraction=0"])
    w = Workspace(ws)
    classes = ClassList.load(w.classes)
    assert classes.names == WNIDS
    assert [c.display_name for c in classes.classes] == ["Chihuahua", "Japanese spaniel", "Maltese dog"]
    manifest = load_manifest(w.manifest, classes.names)
    assert len(manifest) == 18
    assert manifest["split"].value_counts().to_dict() == {"train": 12, "test": 6}
    # the split is the lists', not a random one: the last two images of each breed are test
    test_ids = set(manifest.loc[manifest["split"] == "test", "sample_id"])
    assert "n02085620-Chihuahua/n02085620_1185.jpg" in test_ids
    assert "n02085620-Chihuahua/n02085620_1000.jpg" not in test_ids
    row = manifest[manifest["sample_id"] == "n02085620-Chihuahua/n02085620_1000.jpg"].iloc[0]
    assert row["label"] == "n02085620" and row["breed_folder"] == "n02085620-Chihuahua"
    assert resolve_image_path(row["path"], w.data_root).is_file()
    events = pd.read_parquet(w.label_events)
    assert list(events.columns) == EVENT_COLUMNS and len(events) == 18
    assert set(events["source"]) == {"import"}


def test_stanford_dogs_lists_with_inner_val(stanford_dogs_tree):
    root = stanford_dogs_tree(lists=True, per_breed=12, n_test=2)
    frame, names, display, data_root = import_stanford_dogs(root, val_fraction=0.2, seed=0)
    counts = frame["split"].value_counts().to_dict()
    assert counts["test"] == 6  # test stays the official test list
    assert counts["val"] == 6 and counts["train"] == 24  # 20 % of each breed's 10 train images
    assert data_root == root.resolve()


def test_stanford_dogs_without_lists_is_a_seeded_stratified_split(stanford_dogs_tree):
    root = stanford_dogs_tree(lists=False, per_breed=10)
    a, names, display, _ = import_stanford_dogs(root, test_fraction=0.2, val_fraction=0.1, seed=3)
    b, *_ = import_stanford_dogs(root, test_fraction=0.2, val_fraction=0.1, seed=3)
    assert a["split"].tolist() == b["split"].tolist()
    per_class = a.groupby("label")["split"].value_counts().unstack(fill_value=0)
    assert (per_class["test"] == 2).all() and (per_class["val"] == 1).all() and (per_class["train"] == 7).all()
    assert names == WNIDS and display["n02085782"] == "Japanese spaniel"


def test_stanford_dogs_list_missing_an_image_is_a_clear_error(stanford_dogs_tree):
    from kibble import KibbleError

    root = stanford_dogs_tree(lists=True)
    write_noise_jpegs(root / "Images", ["n02085620-Chihuahua/n02085620_extra.jpg"])
    with pytest.raises(KibbleError, match=r"1 images .*n02085620_extra.jpg.* are in neither train_list.mat nor test_list.mat"):
        import_stanford_dogs(root)


def test_image_folder_with_split_subfolders(tmp_path: Path):
    root = tmp_path / "imgs"
    for split, n in (("train", 4), ("val", 2)):
        for cls in ("cat", "dog"):
            write_noise_jpegs(root / split / cls, [f"{cls}{i}.JPEG" for i in range(n)])
    ws = import_workspace(tmp_path / "ws", ["source=image_folder", f"source.root={root}"])
    manifest = load_manifest(Workspace(ws).manifest)
    assert manifest["split"].value_counts().to_dict() == {"train": 8, "val": 4}
    assert manifest["sample_id"].iloc[0] == "train/cat/cat0.JPEG"
    assert ClassList.load(Workspace(ws).classes).names == ["cat", "dog"]
    assert Workspace(ws).data_root == root.resolve()


def test_image_folder_without_split_subfolders(tmp_path: Path):
    root = tmp_path / "imgs"
    for cls in ("b", "a", "c"):
        write_noise_jpegs(root / cls, [f"{i}.png" for i in range(10)])
    frame, names, _, _ = import_image_folder(root, test_fraction=0.3, seed=0)
    assert names == ["a", "b", "c"]
    assert frame.groupby("label")["split"].apply(lambda s: (s == "test").sum()).tolist() == [3, 3, 3]


def test_csv_source_with_metadata_and_pool(tmp_path: Path):
    write_noise_jpegs(tmp_path / "pics", [f"{i}.jpg" for i in range(6)])
    pd.DataFrame(
        {
            "path": [f"pics/{i}.jpg" for i in range(6)],
            "label": ["3", "7", "3", "7", "", "3"],
            "split": ["train", "train", "train", "test", "pool", "test"],
            "environment": ["indoor", "outdoor"] * 3,
            "sample_id": ["001", "002", "003", "004", "005", "006"],
        }
    ).to_csv(tmp_path / "table.csv", index=False)
    ws = import_workspace(tmp_path / "ws", ["source=csv", f"source.path={tmp_path / 'table.csv'}"])
    manifest = load_manifest(Workspace(ws).manifest)
    assert manifest["sample_id"].tolist()[:2] == ["001", "002"]  # ids stay text
    assert ClassList.load(Workspace(ws).classes).names == ["3", "7"]  # numeric labels stay "3", not "3.0"
    assert manifest["label"].isna().tolist() == [False, False, False, False, True, False]
    assert manifest["environment"].tolist()[:2] == ["indoor", "outdoor"]


def test_csv_source_default_split_and_root(tmp_path: Path):
    write_noise_jpegs(tmp_path / "data", [f"{i}.jpg" for i in range(10)])
    csv = tmp_path / "data" / "labels.csv"
    pd.DataFrame({"path": [f"{i}.jpg" for i in range(10)], "label": ["x", "y"] * 5}).to_csv(csv, index=False)
    frame, names, _, root = import_csv(csv, test_fraction=0.2)
    assert root == csv.parent.resolve() and names == ["x", "y"]
    assert frame["sample_id"].tolist() == frame["path"].tolist()
    assert (frame["split"] == "test").sum() == 2


def test_digits_written_as_pngs(digits_workspace: Path):
    w = Workspace(digits_workspace)
    manifest = load_manifest(w.manifest)
    assert len(manifest) == 1797
    assert ClassList.load(w.classes).names == [str(i) for i in range(10)]
    assert manifest["split"].value_counts().to_dict() == {"train": 1438, "test": 359}
    with Image.open(resolve_image_path(manifest["path"].iloc[0], w.data_root)) as img:
        assert img.size == (32, 32) and img.mode == "RGB"
    report = yaml.safe_load((digits_workspace / "import_report.json").read_text())
    assert report["n_images"] == 1797 and report["skipped"] == {} and report["noisy_labels"] == 0
    assert w.current_round() == 0


def test_digits_reimport_reuses_pngs(tmp_path: Path):
    frame, names, display, root = import_digits(tmp_path / "digits", size=16)
    again, *_ = import_digits(tmp_path / "digits", size=16)
    assert frame.equals(again) and display["7"] == "digit 7"


def test_inject_noise_exact_count_and_truth():
    n = 200
    frame = pd.DataFrame(
        {
            "sample_id": [str(i) for i in range(n)],
            "path": [f"{i}.png" for i in range(n)],
            "label": [str(i % 4) for i in range(n)],
            "split": ["train"] * 150 + ["test"] * 50,
        }
    )
    frame.loc[[0, 1], "label"] = None  # unlabelled train rows are never flipped
    noisy = inject_noise(frame, ["0", "1", "2", "3"], rate=0.2, seed=1)
    flipped = noisy["label"].notna() & (noisy["label"] != noisy["true_label"])
    assert int(flipped.sum()) == round(0.2 * 148)
    assert (noisy.loc[flipped, "split"] == "train").all()
    assert noisy["true_label"].tolist()[2:] == frame["label"].tolist()[2:]
    assert inject_noise(frame, ["0", "1", "2", "3"], rate=0.2, seed=1)["label"].equals(noisy["label"])
    assert inject_noise(frame, ["0", "1", "2", "3"], rate=0.0)["label"].equals(frame["label"])


def test_import_with_noise_keeps_truth(tmp_path: Path):
    ws = import_workspace(tmp_path / "ws", ["inject_noise.rate=0.1", "source.test_fraction=0.5"])
    manifest = load_manifest(Workspace(ws).manifest)
    train = manifest[manifest["split"] == "train"]
    assert int((train["label"] != train["true_label"]).sum()) == round(0.1 * len(train))
    test = manifest[manifest["split"] == "test"]
    assert (test["label"] == test["true_label"]).all()


def test_stratified_split_fractions():
    labels = pd.Series(["a"] * 20 + ["b"] * 10)
    out = stratified_split(labels, {"test": 0.2, "val": 0.1}, seed=0)
    assert (out[:20] == "test").sum() == 4 and (out[20:] == "test").sum() == 2
    assert (out == "val").sum() == 3
