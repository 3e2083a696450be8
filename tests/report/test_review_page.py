"""The review page builder (rounds/NNN/review.html): one card per queued item, confident examples of the given and
the suggested class embedded, ids in data attributes, nothing fetched from the network; the round report links it."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from kibble.report.review_page import example_rows, write_review_page
from kibble.report.round import write_round_report
from review_round import make_review_round


def test_review_page_has_one_card_per_queued_item_with_examples(digits_workspace: Path, tmp_path: Path):
    r = make_review_round(digits_workspace, tmp_path / "ws")
    path = write_review_page(r["ws"], r["round_dir"])
    assert path == r["round_dir"] / "review.html"
    html = path.read_text()
    queue = pd.read_csv(r["round_dir"] / "queue.csv", dtype=str)
    cards = re.findall(r'<div class="item" data-index="(\d+)" data-sample-id="([^"]+)" data-queue-id="([^"]+)" data-round="(\d+)" '
                       r'data-rank="(\d+)" data-given="([^"]*)" data-suggested="([^"]*)">', html)
    assert len(cards) == len(queue) == 8
    assert [c[1] for c in cards] == queue["sample_id"].tolist()
    assert [c[2] for c in cards] == queue["queue_id"].tolist()
    assert [(c[5], c[6]) for c in cards] == list(zip(queue["given_label"], queue["suggested_label"]))
    assert html.count('class="shot"') == 8 and html.count("data:image/jpeg;base64,") > 8
    # one example strip per class the queue names, each with 3 confident train images: never queued, never doubtful
    wanted = set(queue["given_label"]) | set(queue["suggested_label"])
    strips = re.findall(r'<div id="examples-(\d+)">(.*?)</div>', html)
    assert {r["classes"].names[int(i)] for i, _ in strips} == wanted
    examples = [sid for _, body in strips for sid in re.findall(r'class="example" alt="([^"]+)"', body)]
    assert len(examples) == 3 * len(wanted)
    assert not set(examples) & (set(queue["sample_id"]) | r["doubtful"])
    assert "A three has two bumps" in html and "digit 3 (3)" in html  # guideline and `display (id)`
    assert "http://" not in html and "https://" not in html and "src=\"/" not in html  # self-contained
    assert "Download reviews.csv" in html


def test_examples_without_an_oof_are_any_train_rows_of_the_class(digits_workspace: Path, tmp_path: Path):
    r = make_review_round(digits_workspace, tmp_path / "ws")
    train, classes = r["train"], r["classes"]
    got = example_rows(train, {"3"}, set(), None, classes, n=2)
    assert got["3"] == list(zip(train[train["label"] == "3"]["sample_id"].head(2), train[train["label"] == "3"]["path"].head(2)))
    with_oof = example_rows(train, {"3"}, set(), r["round_dir"] / "oof.parquet", classes, n=3)
    assert not {sid for sid, _ in with_oof["3"]} & r["doubtful"]


def test_the_round_report_writes_and_links_the_review_page(digits_workspace: Path, tmp_path: Path):
    r = make_review_round(digits_workspace, tmp_path / "ws")
    report = write_round_report(r["ws"], 0).read_text()
    assert (r["round_dir"] / "review.html").is_file() and 'href="review.html"' in report
