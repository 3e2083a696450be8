"""Data issues through the round's queue step: data_issues.csv, kind=data_issue rows, the report section."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import synthetic_oof
from kibble import KibbleError
from kibble.data.classes import ClassList
from kibble.paths import Workspace
from kibble.queue.callback import BuildQueue
from kibble.report.round import data_issue_sections, write_round_report
from kibble.rounds import RoundContext

CLASSES = ["a", "b", "c"]
BLANK = "s005"


def _ctx(tmp_path, n=60):
    rng = np.random.default_rng(0)

    def blank_looks_mislabelled(probs):
        probs[5] = [0.01, 0.98, 0.01]  # the blank image (given a) looks confidently mislabelled as b

    oof, manifest, _, _, _ = synthetic_oof(rng, n, CLASSES, blank_looks_mislabelled)
    ids = oof["sample_id"].tolist()
    ws = Workspace(tmp_path / "ws")
    (ws.root / "img").mkdir(parents=True)
    for i, sid in enumerate(ids):
        pixels = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) if sid != BLANK else np.full((24, 32, 3), 90, np.uint8)
        Image.fromarray(pixels).save(ws.root / "img" / f"{sid}.png")
    manifest.to_parquet(ws.manifest)
    classes = ClassList.from_names(CLASSES)
    classes.save(ws.classes)
    ws.round_dir(0).mkdir(parents=True)
    return RoundContext(ws, 0, ws.round_dir(0), manifest, classes, oof)


@pytest.mark.parametrize("budget", [0.1, 0.0])
def test_blank_image_enters_the_queue_as_data_issue(tmp_path, budget):
    ctx = _ctx(tmp_path)
    result = BuildQueue(strategies=["self_confidence"], budget=10, data_issues={"budget": budget})(ctx)
    issues = pd.read_csv(ctx.round_dir / "data_issues.csv", dtype={"sample_id": str})
    assert list(issues.columns) == ["sample_id", "issue", "score", "detail"]
    assert ((issues["sample_id"] == BLANK) & (issues["issue"] == "blank")).any()
    queue = pd.read_csv(ctx.round_dir / "queue.csv", dtype={"sample_id": str})
    assert len(queue) == result["queue_size"] == 10 and queue["sample_id"].is_unique
    row = queue[queue["sample_id"] == BLANK].iloc[0]
    assert row["kind"] == "data_issue" and row["reason"].startswith("blank")
    assert result["data_issues"]["blank"] == 1 and result["queue_data_issue"] >= 1
    if budget:  # its own share of the queue, not a strategy's pick
        assert row["strategy"] == "data_issues" and pd.isna(row["suggested_label"])
    else:  # the strategy's pick, re-tagged: its suggestion and score stay
        assert row["strategy"] == "self_confidence" and "self_confidence" in row["reason"]
    (section,) = data_issue_sections(ctx.workspace, ctx.round_dir)
    assert "blank: 1 images" in section.body and "data:image/jpeg;base64," in section.body and BLANK in section.body
    html = write_round_report(ctx.workspace, 0).read_text()
    assert "Data issues" in html and html.index("Queue gallery") < html.index("Data issues")


def test_bad_data_issue_settings_fail_at_construction():
    with pytest.raises(KibbleError, match="unknown keys"):
        BuildQueue(strategies=["kfold"], data_issues={"budegt": 0.1})
    with pytest.raises(KibbleError, match="checks names"):
        BuildQueue(strategies=["kfold"], data_issues={"checks": ["blurry"]})


def test_embedding_issues_are_reported_and_queued_only_on_request(tmp_path):
    ctx = _ctx(tmp_path)
    rng = np.random.default_rng(1)  # 32 dimensions: random rows of one class stay well below cosine 0.98 (toy clusters: pass 0.98)
    emb = (3 * rng.standard_normal((3, 32))[np.arange(60) % 3] + rng.standard_normal((60, 32))).astype(np.float32)
    emb[30] = emb[33] = emb[36]  # three copies of one image (all class a)
    ctx.oof["embedding"] = list(emb)
    BuildQueue(strategies=["self_confidence"], budget=10, data_issues={"budget": 0.5, "near_duplicate_threshold": 0.98})(ctx)
    issues = pd.read_csv(ctx.round_dir / "data_issues.csv", dtype={"sample_id": str})
    dups = issues[issues["issue"] == "near_duplicate"]
    assert set(dups["sample_id"]) == {"s033", "s036"} and dups["detail"].str.startswith("of s030").all()
    queue = pd.read_csv(ctx.round_dir / "queue.csv", dtype={"sample_id": str})
    assert set(queue.loc[queue["strategy"] == "data_issues", "sample_id"]) == {BLANK}  # only the image check by default
    BuildQueue(strategies=["self_confidence"], budget=10, data_issues={"budget": 0.5, "queue": ["blank", "near_duplicate"], "near_duplicate_threshold": 0.98})(ctx)
    queue = pd.read_csv(ctx.round_dir / "queue.csv", dtype={"sample_id": str})
    assert {BLANK, "s033", "s036"} <= set(queue.loc[queue["kind"] == "data_issue", "sample_id"]) and len(queue) == 10
