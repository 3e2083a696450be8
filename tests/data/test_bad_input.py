"""Bad input (DESIGN §6): one clear line naming the file/row and the fix, exit status 1, and nothing
half-written. Each case runs the real `kibble` command as a user would."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers import run_kibble, write_noise_jpegs
from kibble.paths import Workspace

WORKSPACE_FILES = ("manifest.parquet", "classes.yaml", "label_events.parquet", "state.json")


def error_line(proc, task: str) -> str:
    """The single `kibble <task>: error: ...` line; no traceback anywhere."""
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith(f"kibble {task}: error: ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def assert_nothing_written(ws: Path) -> None:
    assert not any((ws / name).exists() for name in WORKSPACE_FILES), sorted(p.name for p in ws.glob("*"))


def snapshot(ws: Path) -> dict[str, bytes]:
    return {name: (ws / name).read_bytes() for name in WORKSPACE_FILES if (ws / name).exists()}


def csv_source(tmp_path: Path, rows: dict) -> Path:
    csv = tmp_path / "table.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def test_duplicate_sample_id(tmp_path: Path):
    write_noise_jpegs(tmp_path, ["a.jpg", "b.jpg", "c.jpg"])
    csv = csv_source(tmp_path, {"sample_id": ["x", "y", "x"], "path": ["a.jpg", "b.jpg", "c.jpg"], "label": ["cat", "dog", "cat"]})
    ws = tmp_path / "ws"
    line = error_line(run_kibble("import", "source=csv", f"source.path={csv}", f"workspace={ws}"), "import")
    assert "duplicate sample_id 'x' at rows [0, 2]" in line and "must be unique" in line
    assert_nothing_written(ws)


def test_unknown_class_name(fresh_digits_workspace: Path):
    ws = fresh_digits_workspace
    classes = ws / "classes.yaml"
    raw = yaml.safe_load(classes.read_text())
    raw["classes"] = [c for c in raw["classes"] if c["name"] != "9"]
    classes.write_text(yaml.safe_dump(raw))
    assert "9" not in [c["name"] for c in yaml.safe_load(classes.read_text())["classes"]]
    before = snapshot(ws)
    line = error_line(run_kibble("train", f"workspace={ws}", "model=small", "debug=fast"), "train")
    assert "manifest.parquet: row 9 (sample_id '9/digit_0009.png') has unknown class '9'" in line
    assert "add it to classes.yaml or fix the label" in line
    assert snapshot(ws) == before


def test_missing_image(tmp_path: Path):
    write_noise_jpegs(tmp_path / "pics", ["a.jpg", "b.jpg"])
    csv = csv_source(tmp_path, {"path": ["pics/a.jpg", "pics/b.jpg", "pics/gone.jpg"], "label": ["cat", "dog", "cat"]})
    ws = tmp_path / "ws"
    line = error_line(run_kibble("import", "source=csv", f"source.path={csv}", f"workspace={ws}"), "import")
    assert f"{tmp_path / 'pics' / 'gone.jpg'}: image is missing" in line and "on_bad_image=skip" in line
    assert_nothing_written(ws)


def _image_folder_with_corrupt_jpeg(root: Path) -> Path:
    for cls in ("cat", "dog"):
        write_noise_jpegs(root / cls, [f"{i}.jpg" for i in range(5)], size=64)
    bad = root / "dog" / "2.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # a truncated JPEG: the header reads, the pixels do not
    return bad


def test_corrupt_jpeg_fail_names_the_file(tmp_path: Path):
    bad = _image_folder_with_corrupt_jpeg(tmp_path / "imgs")
    ws = tmp_path / "ws"
    line = error_line(run_kibble("import", "source=image_folder", f"source.root={tmp_path / 'imgs'}", f"workspace={ws}"), "import")
    assert f"{bad}: image is unreadable" in line and "on_bad_image=skip" in line
    assert_nothing_written(ws)


def test_corrupt_jpeg_skip_is_reported(tmp_path: Path):
    bad = _image_folder_with_corrupt_jpeg(tmp_path / "imgs")
    ws = tmp_path / "ws"
    proc = run_kibble("import", "source=image_folder", f"source.root={tmp_path / 'imgs'}", f"workspace={ws}", "on_bad_image=skip")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((ws / "import_report.json").read_text())
    assert list(report["skipped"]) == [str(bad)]
    assert report["skipped"][str(bad)].startswith("unreadable")
    manifest = pd.read_parquet(Workspace(ws).manifest)
    assert len(manifest) == 9 and "dog/2.jpg" not in set(manifest["sample_id"])


def test_manifest_missing_a_column(fresh_digits_workspace: Path, tmp_path: Path):
    ws = fresh_digits_workspace
    manifest = pd.read_parquet(ws / "manifest.parquet")
    manifest.drop(columns=["split"]).to_parquet(ws / "manifest.parquet", index=False)
    line = error_line(run_kibble("train", f"workspace={ws}", "model=small", "debug=fast"), "train")
    assert f"{ws / 'manifest.parquet'}: missing column(s) ['split']" in line
    assert "a manifest needs ['sample_id', 'path', 'label', 'split']" in line
    # the same for a user's CSV table without a label column
    write_noise_jpegs(tmp_path / "pics", ["a.jpg"])
    csv = csv_source(tmp_path, {"path": ["pics/a.jpg"], "breed": ["cat"]})
    line = error_line(run_kibble("import", "source=csv", f"source.path={csv}", f"workspace={tmp_path / 'ws2'}"), "import")
    assert f"{csv}: no column 'label' for source.label_column; the CSV's columns: path, breed" in line
    assert_nothing_written(tmp_path / "ws2")


@pytest.mark.parametrize("source", ["image_folder", "stanford_dogs"])
def test_source_root_does_not_exist(tmp_path: Path, source: str):
    ws = tmp_path / "ws"
    line = error_line(run_kibble("import", f"source={source}", f"source.root={tmp_path / 'nope'}", f"workspace={ws}"), "import")
    assert f"source.root={tmp_path / 'nope'}:" in line and "does not exist; point source.root at it" in line
    assert_nothing_written(ws)


def test_failed_reimport_keeps_the_good_workspace(digits_workspace: Path, tmp_path: Path):
    ws = tmp_path / "ws"
    shutil.copytree(digits_workspace, ws)
    before = snapshot(ws)
    proc = run_kibble("import", "source=image_folder", f"source.root={tmp_path / 'nope'}", f"workspace={ws}", "overwrite=true")
    error_line(proc, "import")
    assert snapshot(ws) == before


def test_check_images_levels(tmp_path: Path):
    """decode finds the truncated JPEG; header and exists let it through (its header reads); exists still finds a
    missing file; none checks nothing. A bad check name is one line."""
    from kibble import KibbleError
    from kibble.data.images import scan_images

    bad = _image_folder_with_corrupt_jpeg(tmp_path / "imgs")
    good = tmp_path / "imgs" / "cat" / "0.jpg"
    gone = tmp_path / "imgs" / "cat" / "gone.jpg"
    paths = [good, bad, gone]
    found = {check: scan_images(paths, "skip", check=check) for check in ("decode", "header", "exists", "none")}
    assert set(found["decode"]) == {1, 2} and found["decode"][1].startswith("unreadable")
    assert found["header"] == {2: "missing"} and found["exists"] == {2: "missing"} and found["none"] == {}
    with pytest.raises(KibbleError, match=r"check_images='fast'; use one of"):
        scan_images(paths, "skip", check="fast")
    ws = tmp_path / "ws"  # through the task: the truncated JPEG is imported under header checks
    proc = run_kibble("import", "source=image_folder", f"source.root={tmp_path / 'imgs'}", f"workspace={ws}", "check_images=header")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(pd.read_parquet(Workspace(ws).manifest)) == 10
