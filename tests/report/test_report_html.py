"""The evaluation report renders in headless Chromium: no console errors, the scripts ran, every image
loaded, and the screenshot shows the coloured target tables and the figures."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import write_noise_jpegs
from kibble.data.classes import ClassInfo, ClassList
from kibble.metrics.evaluation import evaluate_probs
from kibble.report.document import Section, table_html, write_report
from kibble.report.eval import example_kwargs, write_eval_report

CLASSES = ClassList(
    [ClassInfo("n02110063", "malamute", group="spitz", guideline="Heavier than a husky; brown eyes."), ClassInfo("n02110185", "Siberian husky", group="spitz"),
     ClassInfo("n02105855", "Shetland sheepdog", group="herding", weight=2.0), ClassInfo("n02106030", "collie", group="herding")],
    severity={"same_group": 0.5, "other_group": 1.0},
)


def colour_share(png: Path, rgb: tuple[int, int, int], tol: int = 3) -> float:
    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=int)
    return float((np.abs(pixels - np.array(rgb)).max(axis=2) <= tol).mean())


def assert_not_blank(png: Path) -> None:
    pixels = np.asarray(Image.open(png).convert("L"), dtype=float)
    assert pixels.std() > 20, f"{png} looks blank (pixel std {pixels.std():.1f})"


@pytest.fixture
def eval_report(tmp_path: Path) -> tuple[Path, dict]:
    """An evaluation of 80 images (noise JPEGs) of 4 breeds, a collie/sheltie mix-up, written as a report."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 20)
    pred = y.copy()
    pred[40:52] = 3  # sheltie -> collie: a failing class, within its group
    pred[0:3] = 2  # malamute -> sheltie: across groups
    probs = np.full((80, 4), 0.05)
    probs[np.arange(80), pred] = rng.uniform(0.55, 0.85, 80)
    probs /= probs.sum(axis=1, keepdims=True)
    names = [f"img_{i:03d}.jpg" for i in range(80)]
    write_noise_jpegs(tmp_path / "images", names, size=48)
    rows = pd.DataFrame({"sample_id": names, "path": names, "environment": np.where(np.arange(80) % 2, "indoor", "outdoor")})
    result = evaluate_probs(y, probs, CLASSES, CLASSES.severity_matrix(), metadata=rows, slice_by=["environment"])
    result.update(split="test", workspace="(test)", source="(generated)")
    path = write_eval_report(tmp_path / "out" / "report.html", result, CLASSES, example_kwargs(rows, y, probs, tmp_path / "images"))
    return path, result


def test_eval_report_renders_without_errors(eval_report, chromium, tmp_path: Path):
    path, result = eval_report
    assert not result["passed"] and "n02105855" in result["targets"]["failing_classes"]
    page = chromium(path, tmp_path, height=3000)
    assert page["console"] == [], page["console"]
    assert 'data-scripted="yes"' in page["dom"]
    loaded = re.search(r'data-images="(\d+)/(\d+)"', page["dom"])
    assert loaded and loaded.group(1) == loaded.group(2) and int(loaded.group(2)) >= 5  # figures + pair thumbnails
    assert page["dom"].count('<table class="sortable">') >= 5
    png = page["png"]
    assert_not_blank(png)
    # the per-class table's pass/fail row colours and the reliability bars are on screen
    assert colour_share(png, (0xfd, 0xe7, 0xe9)) > 0.002  # failing rows
    assert colour_share(png, (0xe6, 0xf4, 0xea)) > 0.002  # passing rows
    for name in ("f1_per_class.png", "confusion_matrix.png", "reliability.png", "group_confusion.png"):
        assert (path.parent / name).is_file()


def test_report_with_a_script_error_is_caught(chromium, tmp_path: Path):
    """The console check itself works: a broken page is reported."""
    path = write_report(tmp_path / "broken.html", "broken", [Section("x", "<script>undefinedFunction()</script>" + table_html(pd.DataFrame({"a": [1]})))])
    page = chromium(path, tmp_path)
    assert any("undefinedFunction" in line for line in page["console"])
