"""The merge's fast paths give what the plain rules give (issue 13, the 10^6-row target).

- `event_ids` (column-wise) equals `event_id` (one answer, the reference) on any text: the ids stored
  in every workspace's history must not change.
- A merge re-resolves only the samples its answers touch (the policy is saved and unchanged); after
  any sequence of merges the manifest (labels, exclusions, splits) equals the saved policy applied to
  the whole history, and `n_ambiguous` counts the answered samples the whole history calls ambiguous.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kibble.labels.answers import event_id, event_ids
from kibble.labels.history import load_events
from kibble.labels.merge import label_view, merge_reviews
from kibble.labels.policy import resolve_labels
from kibble.labels.policy_file import policy_for_merge

from test_merge import CLASSES, make_workspace

TEXT = st.one_of(st.none(), st.text(max_size=8), st.sampled_from(['a "quoted", b', "\\", "\u00e9\u4e2d", "\x00\n\t", "\ud7ff"]))
VERDICT = st.sampled_from(["confirmed", "corrected", "ambiguous", "out_of_scope", "skipped"])


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=8), TEXT, VERDICT, TEXT, st.integers(-1, 10 ** 6), st.text(max_size=8)),
                min_size=1, max_size=6), st.sampled_from(["review", "expert", "vendor"]))
def test_event_ids_equal_the_reference(rows, source):
    sid, label, verdict, annotator, rounds, note = (list(col) for col in zip(*rows))
    expected = [event_id(*row[:4], source, row[4], row[5]) for row in rows]
    got = event_ids(np.array(sid, dtype=object), np.array(label, dtype=object), np.array(verdict, dtype=object),
                    np.array(annotator, dtype=object), source, np.array(rounds), np.array(note, dtype=object))
    assert got.tolist() == expected


SAMPLES = ["s1", "s2", "s3", "s4", "s5"]
ANSWER = st.tuples(st.sampled_from(SAMPLES), st.sampled_from(CLASSES), VERDICT, st.sampled_from(["alice", "bob", "carol"]))
POLICY = st.sampled_from([None, {"precedence": "round"}, {"authority": ["expert", "review", "vendor", "simulated", "import"]}])


@settings(max_examples=25, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.tuples(st.lists(ANSWER, min_size=1, max_size=6), st.sampled_from(["review", "expert"])), min_size=1, max_size=4),
       policy=POLICY)
def test_incremental_merges_equal_a_full_resolution(tmp_path_factory, batches, policy):
    ws = make_workspace(tmp_path_factory.mktemp("ws") / "ws")
    for answers, source in batches:
        reviews = pd.DataFrame(answers, columns=["sample_id", "label", "verdict", "annotator"])
        reviews.loc[reviews["verdict"].isin(["ambiguous", "out_of_scope", "skipped"]), "label"] = None
        reviews["round"] = 0
        summary = merge_reviews(ws, reviews, source=source, policy=policy)
        manifest = pd.read_parquet(ws.manifest)
        saved, _ = policy_for_merge(ws, None)
        full = resolve_labels(load_events(ws.label_events), saved)
        view, _ = label_view(manifest, full)
        for col in ("label", "excluded", "split"):
            assert _plain(manifest[col]) == _plain(view[col]), col
        answered = full[full["sample_id"].isin(reviews["sample_id"])]
        assert summary["n_ambiguous"] == int((answered["status"] == "ambiguous").sum())


def _plain(values: pd.Series) -> list:
    return [None if pd.isna(v) else v for v in values.astype(object)]
