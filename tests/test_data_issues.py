"""kibble.data_issues on small arrays and images: planted duplicates, outliers, blank / huge / odd images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kibble import KibbleError
from kibble.data_issues import find_data_issues, image_issues, image_stats, issue_queue_order, near_duplicates, outliers


def _clusters(n=60, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((3, d)) * 3
    return (centres[np.arange(n) % 3] + rng.standard_normal((n, d))).astype(np.float32)


def test_planted_near_duplicates_are_grouped():
    emb = _clusters()
    emb[10] = emb[3] * 1.5 + 1e-4  # same direction: cosine 1
    emb[20] = emb[3] + 1e-3
    emb[40] = emb[41]
    dup = near_duplicates(emb, threshold=0.999)
    assert set(dup["row"]) == {10, 20, 41}
    assert dict(zip(dup["row"], dup["of"])) == {10: 3, 20: 3, 41: 40}
    assert (dup["similarity"] >= 0.999).all()


def test_planted_outlier_is_flagged():
    emb = _clusters()
    emb[7] = np.random.default_rng(1).standard_normal(16) * 0.01 + 50 * np.eye(16)[15]
    score, flagged = outliers(emb, k=5)
    assert flagged[7] and int(np.argmax(score)) == 7 and flagged.sum() <= 6


def test_identical_rows_flag_no_outlier():
    score, flagged = outliers(np.ones((10, 4), dtype=np.float32), k=3)
    assert not flagged.any() and np.allclose(score, 0, atol=1e-6)


@pytest.mark.parametrize("call, message", [
    (lambda: near_duplicates(np.zeros((1, 3))), "N >= 2"),
    (lambda: near_duplicates(np.full((4, 3), np.nan)), "finite"),
    (lambda: near_duplicates(np.ones((4, 3)), threshold=1.5), "threshold"),
    (lambda: outliers(np.ones((4, 3)), k=10), "N >= 11"),
    (lambda: outliers(np.ones((4, 3)), k=0), "positive integer"),
    (lambda: image_stats("one.png"), "list of image paths"),
    (lambda: image_issues(pd.DataFrame({"std": [1.0]})), "lack columns"),
    (lambda: find_data_issues(["a"], checks=["blur"]), "unknown checks"),
])
def test_bad_input_is_one_line_error(call, message):
    with pytest.raises(KibbleError, match=message) as err:
        call()
    assert "\n" not in str(err.value)


def _photo(path, size=(64, 48), seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_solid_image_is_blank_and_a_normal_one_is_not(tmp_path):
    paths = [_photo(tmp_path / f"p{i}.png", seed=i) for i in range(5)]
    Image.new("RGB", (64, 48), (30, 120, 200)).save(tmp_path / "solid.png")
    two_tone = np.zeros((48, 64), dtype=np.uint8)
    two_tone[:, 48:] = 255  # a quarter white: 0.81 bits
    Image.fromarray(two_tone).save(tmp_path / "two_tone.png")
    paths += [tmp_path / "solid.png", tmp_path / "two_tone.png"]
    stats = image_stats(paths)
    assert stats["readable"].all() and stats["decoded"].all()
    found = image_issues(stats)
    assert set(zip(found["row"], found["issue"])) == {(5, "blank"), (6, "low_information")}


def test_huge_images_are_never_decoded_in_full(tmp_path, monkeypatch):
    Image.new("RGB", (6000, 6000), (200, 200, 200)).save(tmp_path / "huge.png")
    Image.new("RGB", (6000, 6000), (200, 200, 200)).save(tmp_path / "huge.jpg", quality=90)
    paths = [_photo(tmp_path / f"p{i}.png", seed=i) for i in range(4)] + [tmp_path / "huge.png", tmp_path / "huge.jpg"]
    decoded_sizes = []
    from PIL import ImageFile

    real_load = ImageFile.ImageFile.load

    def spy(self):
        decoded_sizes.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    stats = image_stats(paths)
    assert max(w * h for w, h in decoded_sizes) <= 750 * 750  # the JPEG at 1/8 scale; the PNG not at all
    assert stats.loc[4, ["width", "height"]].tolist() == [6000, 6000] and not stats.loc[4, "decoded"]
    assert stats.loc[5, "decoded"] and stats.loc[5, "std"] < 2.0
    found = image_issues(stats)
    assert set(found.loc[found["row"] == 4, "issue"]) == {"odd_size"}
    assert set(found.loc[found["row"] == 5, "issue"]) == {"blank", "odd_size"}


def test_exif_rotation_swaps_width_and_height(tmp_path):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 60, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "rot.jpg", exif=exif)
    stats = image_stats([tmp_path / "rot.jpg", tmp_path / "missing.jpg"])
    assert stats.loc[0, ["width", "height"]].tolist() == [20, 60]
    assert not stats.loc[1, "readable"]


def test_find_data_issues_table_and_queue_order(tmp_path):
    paths = [_photo(tmp_path / f"p{i}.png", seed=i) for i in range(20)]
    Image.new("L", (64, 48), 0).save(paths[4])
    emb = _clusters(20)
    emb[9] = emb[4]
    ids = [f"s{i:02d}" for i in range(20)]
    table = find_data_issues(ids, paths, emb, checks=["blank", "near_duplicate"], near_duplicate_threshold=0.98)  # tight toy clusters
    assert list(table.columns) == ["sample_id", "issue", "score", "detail"]
    assert table.iloc[0]["sample_id"] == "s04" and table.iloc[0]["issue"] == "blank"
    assert ("s09", "near_duplicate") in set(zip(table["sample_id"], table["issue"]))
    assert "of s04" in table.loc[table["sample_id"] == "s09", "detail"].iloc[0]
    order = issue_queue_order(table, exclude={"s04"})
    assert "s04" not in set(order["sample_id"]) and order["sample_id"].is_unique


def test_image_stats_are_cached_and_a_replaced_image_is_read_again(tmp_path, monkeypatch):
    import os

    from PIL import Image

    import kibble.data_issues as di

    paths = []
    for i, colour in enumerate([(0, 0, 0), (200, 10, 10)]):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (40, 30), colour).save(path)
        paths.append(path)
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(noise)
    paths.append(noise)
    cache = tmp_path / "cache" / "image_stats.parquet"
    first = di.cached_image_stats(paths, cache)
    pd.testing.assert_frame_equal(first, di.image_stats(paths), check_dtype=False)
    read = []
    original = di.image_stats
    monkeypatch.setattr(di, "image_stats", lambda p, **kw: read.append(list(p)) or original(p, **kw))
    assert di.cached_image_stats(paths, cache).equals(first) and read == []  # nothing read again
    Image.new("RGB", (40, 30), (0, 0, 0)).save(noise)  # replaced: now blank
    os.utime(noise, ns=(os.stat(noise).st_atime_ns, os.stat(noise).st_mtime_ns + 10**9))
    again = di.cached_image_stats(paths + [tmp_path / "gone.png"], cache)
    assert read == [[str(noise), str(tmp_path / "gone.png")]] and again.loc[2, "std"] == 0 and not again.loc[3, "readable"]
