"""The injected data issues of scripts/bench_data_issues.py, and its scoring helpers (the Imagewoof run takes ~15 min)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from kibble.benchmarks.image_injections import inject
from kibble.data_issues import image_issues, image_stats

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench_data_issues as bench  # noqa: E402


def photos(folder: Path, n: int) -> list[Path]:
    """Noisy colour 'photos' at 224 px, the size Imagewoof ships."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    out = []
    for i in range(n):
        path = folder / f"photo_{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(path, "JPEG", quality=90)
        out.append(path)
    return out


def test_injected_images_carry_the_issue_they_are_named_for(tmp_path: Path):
    originals = photos(tmp_path / "photos", 30)
    counts = {"near_duplicate": 4, "outlier": 7, "blank": 5, "low_information": 4, "odd_size": 6}  # every outlier make once
    injected = inject(originals, tmp_path / "injected", counts, seed=0)
    assert injected["kind"].value_counts().to_dict() == counts and all(Path(p).is_file() for p in injected["path"])
    copies = injected[injected["kind"] == "near_duplicate"]
    assert copies["source"].isin([str(p.resolve()) for p in originals]).all() and copies["source"].is_unique
    assert injected.loc[injected["kind"] != "near_duplicate", "source"].isna().all()
    # kibble's own image checks at their defaults find every blank and odd-size image and no photo; a two-tone image's
    # antialiased edge lifts its grey entropy to about 1 bit, the default line (the benchmark tunes it on dev)
    paths = [str(p) for p in originals] + injected["path"].tolist()
    kinds = np.array(["photo"] * len(originals) + injected["kind"].tolist())
    stats = image_stats(paths)
    found = image_issues(stats)
    flagged = dict(zip(found["row"], found["issue"]))
    assert all(kinds[r] in ("blank", "low_information", "odd_size") for r in flagged), [(kinds[r], i) for r, i in flagged.items()]
    for kind in ("blank", "odd_size"):
        assert all(r in flagged for r in np.flatnonzero(kinds == kind)), kind
    assert (stats["entropy"][kinds == "low_information"] < 1.5).all() and (stats["entropy"][kinds == "photo"] > 5).all()
    assert inject(originals, tmp_path / "again", counts, seed=0)["kind"].tolist() == injected["kind"].tolist()


def test_scoring_helpers():
    truth = np.array([True, True, False, False, True])
    assert bench.prf(np.array([True, False, True, False, True]), truth) == (2 / 3, 2 / 3, 2 / 3)
    assert bench.prf(np.zeros(5, dtype=bool), truth)[2] == 0.0
    score = np.array([0.9, 0.8, 0.85, 0.1, 0.7])
    assert bench.best_threshold(score, truth) == 0.7  # flags all three truths at the cost of one false alarm: F1 0.857
    half = bench.HalfSet(["a", "b", "c", "d", "e"], np.array(["photo", "photo", "near_duplicate", "outlier", "photo"]),
                         np.array([-1, -1, 0, -1, -1]), np.zeros((5, 2)))
    rows, truth = half.population("near_duplicate")
    assert rows.tolist() == [0, 1, 2, 4] and truth.tolist() == [True, False, True, False]  # the copy and its original
    rows, truth = half.population("outlier")
    assert rows.tolist() == [0, 1, 3, 4] and truth.tolist() == [False, False, True, False]
