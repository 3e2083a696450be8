"""The label policy: authority, majority, ties, out-of-scope, later rounds."""

from __future__ import annotations

import pandas as pd
import pytest

from kibble import KibbleError
from kibble.labels.history import initial_events, make_events
from kibble.labels.policy import resolve_labels

MANIFEST = pd.DataFrame({"sample_id": ["s1", "s2", "s3"], "path": ["a", "b", "c"],
                         "label": ["cat", "dog", None], "split": ["train", "train", "pool"]})


def history(*answers) -> pd.DataFrame:
    """answers: (sample_id, label, verdict, source, annotator, round); created_at increases in order."""
    events = make_events([
        {"sample_id": s, "label": l, "verdict": v, "source": src, "annotator": who, "round": r,
         "created_at": f"2024-06-01T00:{i:02d}:00+00:00"}
        for i, (s, l, v, src, who, r) in enumerate(answers)
    ])
    return pd.concat([initial_events(MANIFEST), events], ignore_index=True)


def row(resolved: pd.DataFrame, sid: str) -> tuple:
    r = resolved.set_index("sample_id").loc[sid]
    return r["label"], bool(r["excluded"]), r["status"]


def test_import_only():
    resolved = resolve_labels(initial_events(MANIFEST))
    assert list(resolved.columns) == ["sample_id", "label", "excluded", "status"]
    assert resolved["sample_id"].tolist() == ["s1", "s2"]  # unlabelled pool sample has no events
    assert row(resolved, "s1") == ("cat", False, "imported")


def test_majority_of_annotators():
    resolved = resolve_labels(history(("s1", "dog", "corrected", "review", "a", 0),
                                      ("s1", "dog", "corrected", "review", "b", 0),
                                      ("s1", "cat", "confirmed", "review", "c", 0),
                                      ("s2", "dog", "confirmed", "review", "a", 0)))
    assert row(resolved, "s1") == ("dog", False, "corrected")
    assert row(resolved, "s2") == ("dog", False, "confirmed")


def test_tie_is_ambiguous_and_label_stays():
    resolved = resolve_labels(history(("s1", "dog", "corrected", "review", "a", 0),
                                      ("s1", "fox", "corrected", "review", "b", 0)))
    assert row(resolved, "s1") == ("cat", False, "ambiguous")


def test_tie_falls_back_to_the_earlier_round():
    resolved = resolve_labels(history(("s1", "fox", "corrected", "review", "a", 0),
                                      ("s1", "dog", "corrected", "review", "a", 1),
                                      ("s1", "fox", "corrected", "review", "b", 1)))
    assert row(resolved, "s1") == ("fox", False, "ambiguous")


def test_same_annotator_latest_answer_counts():
    resolved = resolve_labels(history(("s1", "dog", "corrected", "review", "a", 0),
                                      ("s1", "fox", "corrected", "review", "a", 0)))
    assert row(resolved, "s1") == ("fox", False, "corrected")


def test_out_of_scope_excludes_but_keeps_the_row():
    resolved = resolve_labels(history(("s1", None, "out_of_scope", "review", "a", 0),
                                      ("s3", None, "out_of_scope", "review", "a", 0)))
    assert row(resolved, "s1") == ("cat", True, "out_of_scope")
    assert row(resolved, "s3") == (None, True, "out_of_scope")


def test_skipped_and_ambiguous_do_not_change_labels():
    resolved = resolve_labels(history(("s1", None, "skipped", "review", "a", 0),
                                      ("s2", None, "ambiguous", "review", "a", 0)))
    assert row(resolved, "s1") == ("cat", False, "imported")
    assert row(resolved, "s2") == ("dog", False, "ambiguous")


def test_later_round_supersedes_at_equal_authority():
    resolved = resolve_labels(history(("s1", "dog", "corrected", "vendor", "v1", 0),
                                      ("s1", "fox", "corrected", "vendor", "v2", 1)))
    assert row(resolved, "s1") == ("fox", False, "corrected")


def test_expert_beats_vendor_even_when_vendor_is_later():
    events = history(("s1", "dog", "corrected", "expert", "e", 0),
                     ("s1", "fox", "corrected", "vendor", "v1", 1),
                     ("s1", "fox", "corrected", "vendor", "v2", 1))
    assert row(resolve_labels(events), "s1") == ("dog", False, "corrected")
    # precedence: round -> the latest answer wins whoever gave it
    assert row(resolve_labels(events, {"precedence": "round"}), "s1") == ("fox", False, "corrected")
    # a custom authority order puts vendors above experts
    custom = {"authority": ["vendor", "expert", "review", "simulated", "import"]}
    assert row(resolve_labels(events, custom), "s1") == ("fox", False, "corrected")


def test_sources_left_out_of_the_authority_list_are_ignored():
    events = history(("s1", "dog", "corrected", "simulated", "sim", 0))
    assert row(resolve_labels(events, {"authority": ["expert", "review", "import"]}), "s1") == ("cat", False, "imported")


@pytest.mark.parametrize(
    "policy, message",
    [
        ({"authority": ["expert", "boss", "import"]}, "unknown source"),
        ({"authority": ["expert", "review"]}, "must include `import`"),
        ({"precedence": "newest"}, "precedence"),
        ({"autority": ["import"]}, "unknown key"),
    ],
)
def test_bad_policy(policy, message):
    with pytest.raises(KibbleError, match=message):
        resolve_labels(initial_events(MANIFEST), policy)
