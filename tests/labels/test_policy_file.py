"""The saved policy (W/policy.yaml): the first merge saves it, later merges keep to it, a change needs reapply."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from kibble import KibbleError
from kibble.labels.merge import merge_reviews
from kibble.labels.policy import DEFAULT_POLICY, normalise_policy
from kibble.labels.policy_file import POLICY_FILE, read_policy_file

from test_merge import make_workspace  # tests/labels/test_merge.py: a five-sample workspace


def review(sample_id: str, label: str, annotator: str) -> pd.DataFrame:
    return pd.DataFrame({"sample_id": [sample_id], "label": [label], "verdict": ["corrected"], "annotator": [annotator]})


def test_first_merge_saves_the_policy_and_none_means_the_saved_one(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    assert read_policy_file(ws) is None  # an imported workspace has none yet
    merge_reviews(ws, review("s1", "dog", "a"), policy={"precedence": "round", "reapply": False})
    saved = read_policy_file(ws)
    assert saved["policy"] == normalise_policy({"precedence": "round"}) and saved["changes"][0]["from"] is None
    summary = merge_reviews(ws, review("s2", "fox", "a"))  # policy=None: the workspace's own
    assert summary["policy"]["precedence"] == "round" and not summary["policy_changed"]
    assert len(read_policy_file(ws)["changes"]) == 1


def test_a_different_policy_is_refused_before_anything_is_written(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    merge_reviews(ws, review("s1", "dog", "a"))
    files = {p.name: p.read_bytes() for p in ws.root.iterdir() if p.is_file()}
    with pytest.raises(KibbleError, match=r"annotator_weighting gold \(saved: none\); add policy.reapply=true .*"
                                          r"\(policy.annotator_weighting=none\)$"):
        merge_reviews(ws, review("s2", "fox", "b"), policy={"annotator_weighting": "gold"})
    assert {p.name: p.read_bytes() for p in ws.root.iterdir() if p.is_file()} == files
    with pytest.raises(KibbleError, match=r"policy.authority=\[expert,review,vendor,simulated,import\]\)$"):
        merge_reviews(ws, review("s2", "fox", "b"), policy={"authority": ["review", "import"]})


def test_reapply_records_each_change(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    merge_reviews(ws, review("s1", "dog", "a"))
    merge_reviews(ws, review("s2", "fox", "b"), policy={"annotator_weighting": "discard_flagged", "reapply": True}, task="kibble merge")
    merge_reviews(ws, review("s2", "fox", "b"), policy={"annotator_weighting": "discard_flagged", "reapply": True})  # same: nothing to record
    changes = read_policy_file(ws)["changes"]
    assert [(c["from"] or {}).get("annotator_weighting") for c in changes] == [None, "none"]
    assert changes[1]["to"]["annotator_weighting"] == "discard_flagged" and changes[1]["by"] == "kibble merge"
    assert changes[0]["to"] == DEFAULT_POLICY


def test_a_broken_policy_file_is_one_line(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    (ws.root / POLICY_FILE).write_text("policy: [unclosed\n")
    with pytest.raises(KibbleError, match=r"policy.yaml: not a kibble policy file \(\w+\); restore it"):
        merge_reviews(ws, review("s1", "dog", "a"))
    (ws.root / POLICY_FILE).write_text(yaml.safe_dump({"policy": {"precedence": "sideways"}}))
    with pytest.raises(KibbleError, match=r"policy.precedence: 'sideways'"):
        merge_reviews(ws, review("s1", "dog", "a"))
