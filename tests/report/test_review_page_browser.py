"""The review page in a real browser: Playwright drives the system Chromium over file://, a reviewer answers five
items with the keyboard (confirm, out of scope with a note, ambiguous, a number key, the type-ahead box), downloads
reviews.csv, and the real `kibble merge` task folds exactly those five answers into the label history."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from helpers import compose_config
from kibble.labels.history import load_events
from kibble.report.review_page import write_review_page
from review_round import make_review_round


def _browser_executable() -> str:
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install 'kibble[dev]'); the review page is not driven")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("chromium is not on PATH (apt-get install chromium); the review page is not driven")
    return binary


def test_answer_five_items_download_and_merge(digits_workspace: Path, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    binary = _browser_executable()
    r = make_review_round(digits_workspace, tmp_path / "ws")
    page_path = write_review_page(r["ws"], r["round_dir"])
    queue = r["queue"]
    csv = tmp_path / "download" / "reviews.csv"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(accept_downloads=True)
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(page_path.resolve().as_uri())
            page.wait_for_selector("body[data-scripted='yes']")
            # every thumbnail loaded, and kept its aspect ratio (object-fit: contain)
            assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
            assert page.evaluate("getComputedStyle(document.querySelector('.shot')).objectFit") == "contain"
            first = page.locator(".item").nth(0)
            assert first.locator(".examples").nth(0).locator("img").count() == 3  # given-class examples cloned in
            assert first.locator(".examples").nth(1).locator("img").count() == 3  # and the suggested class's
            page.fill("#annotator", "alice@example.com")
            page.locator("main").click(position={"x": 1, "y": 1})  # leave the annotator box: keys go to the page
            page.keyboard.press("c")                              # item 0: confirm the given label
            page.keyboard.press("n")                              # item 1: a note, then out of scope
            page.keyboard.type("a scanned page, not a digit")
            page.keyboard.press("Enter")
            page.keyboard.press("o")
            page.keyboard.press("a")                              # item 2: ambiguous
            page.keyboard.press("j")                              # item 3: skipped, left unanswered
            page.keyboard.press("1")                              # item 4: corrected to class number 1 (id '0')
            page.keyboard.press("/")                              # item 5: corrected through the type-ahead box
            page.keyboard.type("digit 9")
            page.keyboard.press("Enter")
            assert page.get_attribute("body", "data-answered") == "5"
            assert page.locator(".item").nth(4).locator(".answer").inner_text() == "corrected to digit 0 (0)"
            with page.expect_download() as info:
                page.click("#download")
            download = info.value
            assert download.suggested_filename == "reviews.csv"
            csv.parent.mkdir()
            download.save_as(csv)
            assert errors == [], errors
        finally:
            browser.close()

    rows = pd.read_csv(csv, dtype=str, keep_default_na=False)
    assert list(rows.columns) == ["sample_id", "label", "verdict", "annotator", "note", "queue_id", "round"]
    from kibble.tasks import merge

    summary = merge.run(compose_config("merge", [f"workspace={r['ws'].root}", f"reviews={csv}"], output_dir=tmp_path / "merge_out"))
    assert summary["n_reviews"] == 5
    events = load_events(r["ws"].label_events)
    events = events[events["source"] == "review"].set_index("queue_id").sort_index()
    q = queue.set_index("queue_id")
    expected = {
        q.index[0]: ("confirmed", q["given_label"].iloc[0], ""),
        q.index[1]: ("out_of_scope", None, "a scanned page, not a digit"),
        q.index[2]: ("ambiguous", None, ""),
        q.index[4]: ("corrected", "0", ""),
        q.index[5]: ("corrected", "9", ""),
    }
    assert sorted(events.index) == sorted(expected)
    for qid, (verdict, label, note) in expected.items():
        event = events.loc[qid]
        assert event["verdict"] == verdict, qid
        assert (event["label"] if isinstance(event["label"], str) else None) == label, qid
        assert event["sample_id"] == q.loc[qid, "sample_id"] and event["annotator"] == "alice@example.com"
        assert int(event["round"]) == 0 and (event["note"] or "") == note
