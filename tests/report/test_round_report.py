"""The per-round report of a real k-fold round: core sections, the queue gallery (thumbnails of every
queued image, sortable and filterable), loop curves, `kibble report`, and `kibble eval round=N`."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import compose_config, run_kibble
from kibble.report import round as round_report
from kibble.report.round import write_round_report
from kibble.tasks import evaluate

pytestmark = pytest.mark.slow  # a real k-fold round on digits

CARD = re.compile(r'<div class="card" data-rank="(\d+)" data-score="([0-9.]*)" data-strategy="([a-z_]+)"[^>]*?( style="display: none;")?>\s*<img [^>]*src="data:image/jpeg;base64,')


def test_round_callback_writes_the_report_with_the_queue_gallery(digits_round: dict, chromium, tmp_path: Path):
    round_dir = digits_round["round_dir"]
    assert digits_round["result"]["callbacks"]["report"] == {"report": str(round_dir / "report.html")}
    queue = pd.read_csv(round_dir / "queue.csv")
    assert len(queue) == 40
    html = (round_dir / "report.html").read_text()
    for title in ("Round summary", "Out-of-fold precision and recall", "Test set (fold ensemble): Per-class metrics and targets", "Queue gallery"):
        assert title in html
    assert (round_dir / "test_confusion_matrix.png").is_file() and (round_dir / "test_reliability.png").is_file()

    page = chromium(round_dir / "report.html", tmp_path, query="?sort=score", height=3000)
    assert page["console"] == [], page["console"]
    loaded = re.search(r'data-images="(\d+)/(\d+)"', page["dom"])
    assert loaded and loaded.group(1) == loaded.group(2)
    gallery = page["dom"][page["dom"].index('id="queue-cards"'):]
    cards = CARD.findall(gallery)
    assert len(cards) == len(queue)  # every queued image, as an embedded thumbnail
    assert sorted(int(c[0]) for c in cards) == sorted(queue["rank"])
    # ?sort=score ran the sort script: score descending, ties by rank
    expected = queue.assign(score6=queue["score"].round(6)).sort_values(["score6", "rank"], ascending=[False, True])["rank"].tolist()
    assert [int(c[0]) for c in cards] == expected
    assert_visible_thumbnails(page["png"])

    filtered = chromium(round_dir / "report.html", tmp_path, query="?strategy=kfold", height=800)
    cards = CARD.findall(filtered["dom"][filtered["dom"].index('id="queue-cards"'):])
    hidden = {c[2] for c in cards if c[3]}
    shown = {c[2] for c in cards if not c[3]}
    assert shown == {"kfold"} and hidden == set(queue["strategy"]) - {"kfold"}


def assert_visible_thumbnails(png: Path) -> None:
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("L"), dtype=float)
    assert pixels.std() > 20
    # digit thumbnails are large dark strokes on white: the page has plenty of near-black pixels
    assert (pixels < 40).mean() > 0.01


def test_loop_curves_and_custom_sections(digits_round: dict, tmp_path: Path, monkeypatch):
    ws = tmp_path / "ws"
    shutil.copytree(digits_round["ws"], ws, ignore=shutil.ignore_patterns("cache", "runs"))
    pd.DataFrame({"round": [0, 1], "noise_before": [0.2, 0.1], "noise_remaining": [0.1, 0.05], "queue_precision": [0.7, 0.5], "test_accuracy": [0.8, 0.85]}).to_csv(ws / "loop_summary.csv", index=False)
    path = write_round_report(ws, 0)
    html = path.read_text()
    assert "Cleaning loop" in html and (path.parent / "loop_curves.png").is_file()
    loop_part = html.split('<section id="cleaning-loop">')[1].split("</section>")[0]
    assert "<td>0</td>" in loop_part and "<td>1</td>" not in loop_part  # only rounds up to this one
    monkeypatch.setattr(round_report, "ROUND_SECTIONS", [*round_report.ROUND_SECTIONS, "kibble.report.no_such_module:sections"])
    with pytest.raises(ModuleNotFoundError):
        write_round_report(ws, 0)


def test_eval_of_a_fold_ensemble_and_the_report_task(digits_round: dict, tmp_path: Path):
    ws = digits_round["ws"]
    result = evaluate.run(compose_config("eval", [f"workspace={ws}", "round=0", "eval.check_duplicates=false"], output_dir=tmp_path / "eval"))
    assert result["source"] == str(ws / "rounds" / "000" / "predictions.parquet") and result["n"] == 359
    assert (tmp_path / "eval" / "report.html").is_file()
    proc = run_kibble("report", f"workspace={ws}", f"hydra.run.dir={tmp_path / 'run'}", check=True)
    assert f"report -> {ws / 'rounds' / '000' / 'report.html'}" in proc.stdout
    proc = run_kibble("report", f"workspace={ws}", "round=7", f"hydra.run.dir={tmp_path / 'run7'}")
    assert proc.returncode == 1 and "round 7 does not exist" in proc.stderr.strip().splitlines()[-1]
