"""A review for a round the workspace does not have is refused with one line; nothing is written."""

from __future__ import annotations

import pytest

from kibble import KibbleError
from kibble.paths import Workspace

from test_merge import make_workspace, merge, snapshot, write_csv


@pytest.mark.parametrize("column,override", [("7", None), ("-1", None), ("", "round=5")], ids=["beyond", "negative", "override"])
def test_a_review_for_a_round_that_does_not_exist_is_refused(tmp_path, column, override):
    ws = make_workspace(tmp_path / "ws")
    merge(ws, write_csv(tmp_path / "first.csv", "sample_id,label,verdict,annotator\ns1,dog,corrected,alice\n"))  # now round 1
    before = snapshot(ws)
    reviews = write_csv(tmp_path / "typo.csv", f"sample_id,label,verdict,annotator,round\ns2,fox,corrected,bob,{column}\n")
    expected = r"round=5" if override else rf"the review of sample 's2' is for round {column}"
    with pytest.raises(KibbleError, match=expected + r", but .* has rounds 0\.\.1 \(1 review\(s\) outside\); fix the round to one of 0\.\.1$") as err:
        merge(ws, reviews, *([override] if override else []))
    assert "\n" not in str(err.value)
    assert snapshot(ws) == before and Workspace(ws.root).current_round() == 1


def test_reviews_for_the_current_and_earlier_rounds_merge(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    merge(ws, write_csv(tmp_path / "first.csv", "sample_id,label,verdict,annotator\ns1,dog,corrected,alice\n"))
    summary = merge(ws, write_csv(tmp_path / "late.csv", "sample_id,label,verdict,annotator,round\ns2,fox,corrected,bob,0\ns3,cat,corrected,bob,1\n"))
    assert summary["n_events_added"] == 2 and summary["rounds"] == [0, 1] and summary["next_round"] == 2
