"""`kibble import` with an unlabeled pool: a share of train, a labelled seed set, or a folder of new images."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from helpers import import_workspace, run_kibble, write_noise_jpegs
from kibble import KibbleError
from kibble.data.sources import make_pool
from kibble.io import read_json


@pytest.fixture
def digits_copy(digits_workspace: Path, tmp_path: Path) -> Path:
    """The session digits workspace's images, to re-import with pool options without re-writing PNGs."""
    ws = tmp_path / "ws"
    shutil.copytree(digits_workspace, ws, ignore=shutil.ignore_patterns("runs", "multiruns", "cache", "rounds"))
    return ws


def test_pool_fraction_keeps_the_truth(digits_copy: Path):
    ws = import_workspace(digits_copy, ["overwrite=true", "pool.fraction=0.8", "pool.seed=3"])
    m = pd.read_parquet(ws / "manifest.parquet")
    pool, train = m[m["split"] == "pool"], m[m["split"] == "train"]
    n = len(pool) + len(train)
    assert len(pool) == pytest.approx(0.8 * n, abs=10)
    assert pool["label"].isna().all() and pool["true_label"].notna().all()
    assert (train["label"] == train["true_label"]).all()
    assert pool["true_label"].value_counts().min() >= 0.7 * pool["true_label"].value_counts().max()  # stratified
    assert (m.loc[m["split"] == "test", "label"].notna()).all()
    report = read_json(ws / "import_report.json")
    assert report["noisy_labels"] == 0 and report["splits"]["pool"] == len(pool)
    events = pd.read_parquet(ws / "label_events.parquet")
    assert not events["sample_id"].isin(pool["sample_id"]).any()   # nothing was ever labelled for the pool


def test_labels_per_class_is_a_seed_set(digits_copy: Path):
    ws = import_workspace(digits_copy, ["overwrite=true", "pool.labels_per_class=3"])
    m = pd.read_parquet(ws / "manifest.parquet")
    assert m.loc[m["split"] == "train", "label"].value_counts().to_dict() == {str(c): 3 for c in range(10)}


def test_pool_folder_adds_new_images(digits_copy: Path, tmp_path: Path):
    folder = tmp_path / "new_images"
    write_noise_jpegs(folder, ["3/a.jpg", "3/b.jpg", "unsorted/c.jpg", "d.jpg"])
    ws = import_workspace(digits_copy, ["overwrite=true", f"pool.folder={folder}"])
    m = pd.read_parquet(ws / "manifest.parquet").set_index("sample_id")
    pool = m[m["split"] == "pool"]
    assert sorted(pool.index) == ["pool/3/a.jpg", "pool/3/b.jpg", "pool/d.jpg", "pool/unsorted/c.jpg"]
    assert pool["label"].isna().all()
    assert pool.loc["pool/3/a.jpg", "true_label"] == "3" and pd.isna(pool.loc["pool/d.jpg", "true_label"])
    assert Path(pool.loc["pool/d.jpg", "path"]).is_absolute()
    assert (m.loc[m["split"] == "train", "label"] == m.loc[m["split"] == "train", "true_label"]).all()


def test_bad_pool_input(tmp_path: Path, digits_copy: Path):
    images = digits_copy / "images" / "digits"
    table = pd.DataFrame({"path": ["0/digit_0000.png", "1/digit_0001.png"], "label": ["0", "1"], "split": ["train", "pool"]})
    table.to_csv(tmp_path / "labels.csv", index=False)
    proc = run_kibble("import", "source=csv", f"source.path={tmp_path / 'labels.csv'}", f"source.root={images}", f"workspace={tmp_path / 'csv_ws'}")
    assert proc.returncode == 1
    err = [line for line in proc.stderr.splitlines() if line.startswith("kibble import: error: ")]
    assert len(err) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "row 1 (sample_id '1/digit_0001.png') has split=pool but label '1'" in err[0]
    with pytest.raises(KibbleError, match="pool.folder=.*does not exist"):
        import_workspace(digits_copy, ["overwrite=true", f"pool.folder={tmp_path / 'missing'}"])
    frame = pd.read_parquet(digits_copy / "manifest.parquet")
    with pytest.raises(KibbleError, match="not both"):
        make_pool(frame, fraction=0.5, labels_per_class=2)
    with pytest.raises(KibbleError, match="pool.fraction=1.5"):
        make_pool(frame, fraction=1.5)
    with pytest.raises(KibbleError, match="class '0' has only"):
        make_pool(frame, labels_per_class=1000)
