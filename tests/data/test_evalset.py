"""Evaluation-set checks: images per class, metadata coverage, train/test duplicates, empty classes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from helpers import write_noise_jpegs
from kibble import KibbleError
from kibble.data.evalset import check_eval_set, metadata_columns


@pytest.fixture
def evalset(tmp_path: Path) -> tuple[pd.DataFrame, Path]:
    """3 classes: 'a' has 12 test images (indoor + outdoor), 'b' 4 (indoor only), 'c' none; one test image copies a train image."""
    rows = []
    for cls, n_test in (("a", 12), ("b", 4), ("c", 0)):
        for i in range(6):
            rows.append({"sample_id": f"{cls}/train_{i}.jpg", "path": f"{cls}/train_{i}.jpg", "label": cls, "split": "train", "environment": "indoor"})
        for i in range(n_test):
            env = "outdoor" if (cls == "a" and i % 2) else "indoor"
            rows.append({"sample_id": f"{cls}/test_{i}.jpg", "path": f"{cls}/test_{i}.jpg", "label": cls, "split": "test", "environment": env})
    frame = pd.DataFrame(rows)
    frame.loc[len(frame)] = {"sample_id": "pool_0.jpg", "path": "pool_0.jpg", "label": None, "split": "test", "environment": "outdoor"}
    for seed, path in enumerate(frame["path"]):
        write_noise_jpegs(tmp_path, [path], seed=seed)
    shutil.copy(tmp_path / "b/train_2.jpg", tmp_path / "b/test_1.jpg")  # a leaked duplicate
    frame["lighting"] = [f"l{i % 30}" for i in range(len(frame))]  # too many values to be a coverage column
    return frame, tmp_path


def test_checks_find_every_problem(evalset):
    frame, root = evalset
    checks = check_eval_set(frame, ["a", "b", "c"], split="test", min_per_class=10, data_root=root)
    assert checks["n"] == 16 and not checks["passed"]
    assert checks["images_per_class"] == {"a": 12, "b": 4, "c": 0}
    assert checks["classes_without_images"] == ["c"]
    assert checks["classes_below_min"] == {"b": 4}
    [coverage] = checks["coverage"]  # environment found automatically; lighting has too many values
    assert coverage["column"] == "environment" and coverage["values"] == ["indoor", "outdoor"]
    assert coverage["classes_missing_values"] == {"b": ["outdoor"]}
    assert coverage["counts"]["a"] == {"indoor": 6, "outdoor": 6}
    assert checks["train_duplicates"] == [{"sample_id": "b/test_1.jpg", "train_sample_id": "b/train_2.jpg", "sha1": checks["train_duplicates"][0]["sha1"]}]
    problems = "\n".join(checks["problems"])
    assert "1 classes have no test images: ['c']" in problems
    assert "fewer than 10 test images: b (4)" in problems
    assert "lack some `environment` values (e.g. b: ['outdoor'])" in problems
    assert "1 test images are byte-identical to train images (e.g. b/test_1.jpg = b/train_2.jpg)" in problems


def test_a_good_evaluation_set_passes(evalset):
    frame, root = evalset
    frame = frame[frame["label"] != "c"]
    good = frame[~((frame["label"] == "b") & (frame["split"] == "test"))]
    checks = check_eval_set(good, ["a"], split="test", min_per_class=10, coverage_columns=["environment"], data_root=root)
    assert checks["passed"] and checks["problems"] == []
    no_dups = check_eval_set(frame, ["a", "b"], min_per_class=2, coverage_columns=[], check_duplicates=False)
    assert not no_dups["duplicates_checked"] and no_dups["problems"] == []


def test_metadata_columns_and_bad_input(evalset):
    frame, root = evalset
    assert metadata_columns(frame) == ["environment"]
    with pytest.raises(KibbleError, match="manifest has no column 'weather'"):
        check_eval_set(frame, ["a", "b", "c"], coverage_columns=["weather"], data_root=root)
    with pytest.raises(KibbleError, match="min_per_class=-1"):
        check_eval_set(frame, ["a"], min_per_class=-1)
