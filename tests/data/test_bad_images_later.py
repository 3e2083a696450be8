"""Images that go bad after import follow on_bad_image in every reader: `fail` is one line naming the file
and the option (also from a DataLoader worker, which would otherwise wrap it in a traceback), `skip`
leaves them out with a count; decompression bombs name the knob that allows them (issue 13, item 7)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from helpers import compose_config, run_kibble
from kibble import KibbleError
from kibble.data.dataset import ManifestDataset
from kibble.data.datamodule import drop_unreadable
from kibble.paths import Workspace
from kibble.data.images import DEFAULT_MAX_PIXELS, BadImageError, max_image_pixels, read_rgb, scan_images, set_max_image_pixels


@pytest.fixture(autouse=True)
def default_pixel_limit():
    yield
    set_max_image_pixels(DEFAULT_MAX_PIXELS)


def _images(folder: Path, n: int = 4, size: tuple[int, int] = (16, 12)) -> pd.DataFrame:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "path": [f"{i}.png" for i in range(n)], "label": ["a"] * n})


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


@pytest.mark.parametrize("workers", [0, 2])
def test_a_truncated_image_in_a_loader_is_one_line_naming_it(tmp_path, workers):
    rows = _images(tmp_path / "img")
    _truncate(tmp_path / "img" / "2.png")
    dataset = ManifestDataset(rows, tmp_path / "img", ["a"], lambda x: x.copy(), option_prefix="data.")
    with pytest.raises(BadImageError) as err:
        list(DataLoader(dataset, batch_size=2, num_workers=workers))
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message and "DataLoader worker" not in message
    assert message.startswith(f"{tmp_path / 'img' / '2.png'}: image cannot be decoded") and "data.on_bad_image=skip" in message


def test_a_deleted_image_is_one_line(tmp_path):
    rows = _images(tmp_path / "img")
    (tmp_path / "img" / "1.png").unlink()
    dataset = ManifestDataset(rows, tmp_path / "img", ["a"], lambda x: x.copy())
    with pytest.raises(KibbleError, match=r"1\.png: image file is missing; .*on_bad_image=skip$"):
        list(DataLoader(dataset, batch_size=4, num_workers=1))


def test_skip_drops_bad_images_with_their_reasons_and_fail_passes_rows_through(tmp_path):
    rows = _images(tmp_path / "img")
    _truncate(tmp_path / "img" / "0.png")
    (tmp_path / "img" / "3.png").unlink()
    kept, skipped = drop_unreadable(rows, tmp_path / "img", "skip")
    assert kept["sample_id"].tolist() == ["s1", "s2"]
    assert skipped["s3"] == "missing" and skipped["s0"].startswith("unreadable")
    assert drop_unreadable(rows, tmp_path / "img", "fail")[0] is rows  # no up-front scan: the reader says it
    with pytest.raises(BadImageError, match=r"0\.png: image is unreadable.*data\.on_bad_image=skip"):
        drop_unreadable(rows, tmp_path / "img", "fail", verify=True)


@pytest.mark.parametrize("pixels", ["warning band", "error"])
def test_a_decompression_bomb_is_one_line_naming_the_knob(tmp_path, pixels):
    _images(tmp_path / "img", n=1, size=(20, 10))  # 200 pixels
    path = tmp_path / "img" / "0.png"
    # PIL warns between its limit and twice it and fails above; kibble refuses both, in one line
    set_max_image_pixels(150 if pixels == "warning band" else 90)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a promoted DecompressionBombWarning is no traceback either
        with pytest.raises(BadImageError) as err:
            read_rgb(path, prefix="data.")
    line = str(err.value)
    assert line.startswith(f"{path}: image has 200 pixels, over data.max_image_pixels=") and "\n" not in line
    assert "raise data.max_image_pixels (null = no limit)" in line and "data.on_bad_image=skip" in line
    reason = scan_images([path], "skip")[0]
    assert reason.startswith("too large: 200 pixels")
    with pytest.raises(BadImageError, match=r"image is too large: 200 pixels"):
        scan_images([path], "fail")
    set_max_image_pixels(None)  # the user trusts the file
    assert read_rgb(path).shape == (10, 20, 3) and max_image_pixels() is None


def test_a_bad_pixel_limit_is_one_line():
    with pytest.raises(KibbleError, match=r"max_image_pixels='lots'; use a whole number"):
        set_max_image_pixels("lots")
    assert set_max_image_pixels("null") is None and set_max_image_pixels(10) == 10


def test_train_on_an_image_deleted_after_import_fails_in_one_line(fresh_digits_workspace: Path):
    ws = fresh_digits_workspace
    manifest = pd.read_parquet(ws / "manifest.parquet")
    row = manifest[manifest["split"] == "train"].iloc[0]
    image = Workspace(ws).data_root / row["path"]
    _truncate(image)
    proc = run_kibble("train", f"workspace={ws}", "model=small", "model.backbone=test_resnet", "model.input_size=32", "debug=fast",
                      "data.num_workers=2", "data.batch_size=2000")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("kibble train: error: ")]
    assert len(lines) == 1 and f"{image}: image cannot be decoded" in lines[0] and "data.on_bad_image=skip" in lines[0], proc.stderr[-3000:]


def test_kfold_with_skip_leaves_a_deleted_image_out_of_every_fold(fresh_digits_workspace: Path, caplog):
    from kibble.training.kfold import KFoldRound

    ws = fresh_digits_workspace
    manifest = pd.read_parquet(ws / "manifest.parquet")
    row = manifest[manifest["split"] == "train"].iloc[3]
    (Workspace(ws).data_root / row["path"]).unlink()
    cfg = compose_config("kfold", [f"workspace={ws}", "data.on_bad_image=skip", "cv=kfold3"], output_dir=ws.parent / "out")
    with caplog.at_level("WARNING"):
        kround = KFoldRound(cfg)
    assert row["sample_id"] not in set(kround.folds["sample_id"]) and len(kround.folds) == (manifest["split"] == "train").sum() - 1
    assert any("skipping 1 unreadable images" in r.getMessage() and "missing" in r.getMessage() for r in caplog.records)


def test_the_feature_embedder_says_a_bad_image_in_one_line(tmp_path):
    from kibble.data.features import Embedder

    rows = _images(tmp_path / "img", size=(32, 32))
    _truncate(tmp_path / "img" / "3.png")
    embedder = Embedder("test_resnet", pretrained="none", input_size=32, batch_size=2, num_workers=2, device="cpu")
    with pytest.raises(BadImageError) as err:
        embedder.features_for(rows, tmp_path / "img", tmp_path / "cache", progress=False)
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{tmp_path / 'img' / '3.png'}: image cannot be decoded")
