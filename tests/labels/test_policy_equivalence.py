"""The vectorised `resolve_labels` against the policy rule written as a plain loop, on random histories.

`loop_resolve` is the implementation kibble shipped before resolution was vectorised for 10^6-row
workspaces (issue 13's merge benchmark); it reads like the module docstring of kibble.labels.policy,
so it is the reference: every random history must resolve to exactly the same table.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kibble.labels.history import make_events
from kibble.labels.policy import RESOLVED_COLUMNS, _timestamps, _weight, normalise_policy, resolve_labels
from kibble.values import is_missing

OUT, AMBIGUOUS = object(), object()


def loop_resolve(events: pd.DataFrame, policy=None) -> pd.DataFrame:
    pol = normalise_policy(policy)
    rank = {src: i for i, src in enumerate(pol["authority"])}
    ev = pd.DataFrame({
        "sample_id": events["sample_id"].astype(str).to_numpy(), "label": events["label"].to_numpy(dtype=object),
        "verdict": events["verdict"].astype(str).to_numpy(), "source": events["source"].astype(str).to_numpy(),
        "annotator": events["annotator"].to_numpy(dtype=object),
        "round": pd.to_numeric(events["round"], errors="coerce").fillna(-1).astype("int64").to_numpy(),
        "ts": _timestamps(events["created_at"]), "pos": np.arange(len(events)), "note": events["note"].to_numpy(dtype=object)})
    ev = ev[ev["source"].isin(rank)].sort_values(["ts", "pos"], kind="stable")
    by_round = pol["precedence"] == "round"
    imports, per_sample = {}, {}
    for sid, verdict, label, source, annotator, rnd, note in zip(ev["sample_id"], ev["verdict"], ev["label"], ev["source"],
                                                                 ev["annotator"], ev["round"], ev["note"]):
        label = None if is_missing(label) else str(label)
        if source == "import":
            imports[sid] = label
        key = (-int(rnd), rank[source]) if by_round else (rank[source], -int(rnd))
        who = "" if is_missing(annotator) else str(annotator)
        per_sample.setdefault(sid, {}).setdefault(key, {})[who] = (verdict, label, source, _weight(note, pol["annotator_weighting"]))
    rows = [_one(sid, groups, imports.get(sid)) for sid, groups in per_sample.items()]
    out = pd.DataFrame(rows, columns=RESOLVED_COLUMNS).sort_values("sample_id", kind="stable").reset_index(drop=True)
    for col in ("sample_id", "label", "status"):
        out[col] = out[col].astype(object).where(out[col].notna(), None)
    out["excluded"] = out["excluded"].astype(bool)
    return out


def _one(sid, groups, import_label):
    status, excluded = None, None
    for key in sorted(groups):
        answers = groups[key].values()
        votes = [(v, w) for v, w in ((_vote(verdict, label), w) for verdict, label, _, w in answers) if v is not None]
        known = [w for _, w in votes if w is not None]
        fill = float(np.mean(known)) if known else 1.0
        tally = Counter()
        for vote, w in votes:
            tally[vote] += fill if w is None else w
        counts = [(v, w) for v, w in tally.most_common() if w > 0]
        if not counts:
            continue
        tied = len(counts) > 1 and abs(counts[0][1] - counts[1][1]) <= 1e-9 * max(counts[0][1], 1.0)
        winner = counts[0][0]
        if tied or winner is AMBIGUOUS:
            status = status or "ambiguous"
            continue
        if winner is OUT:
            status = status or "out_of_scope"
            excluded = True
            continue
        if status is None:
            source = next(iter(answers))[2]
            status = "imported" if source == "import" else ("confirmed" if winner == import_label else "corrected")
        return sid, winner, bool(excluded), status
    return sid, None, bool(excluded), status or "unlabeled"


def _vote(verdict, label):
    return label if verdict in ("confirmed", "corrected") else OUT if verdict == "out_of_scope" else AMBIGUOUS if verdict == "ambiguous" else None


NOTES = [None, "", "blurry", "[kibble weight=2.000 gold_accuracy=0.900 gold_n=10]", "[kibble weight=0.500 gold_accuracy=0.600 gold_n=10 flagged]",
         "hm [kibble gold_item]", "[kibble weight=1.000 gold_accuracy=0.700 gold_n=10]"]
event = st.tuples(
    st.sampled_from(["s1", "s2", "s3", "s4"]),                              # sample
    st.sampled_from(["cat", "dog", "fox", None]),                           # label
    st.sampled_from(["confirmed", "corrected", "out_of_scope", "ambiguous", "skipped"]),
    st.sampled_from(["import", "review", "expert", "vendor", "simulated"]),
    st.sampled_from(["a", "b", "c", None]),                                 # annotator
    st.integers(-1, 2),                                                     # round
    st.sampled_from(NOTES),
    st.integers(0, 5),                                                      # created_at minute: ties and reorderings
)
policies = st.fixed_dictionaries({
    "precedence": st.sampled_from(["authority", "round"]),
    "annotator_weighting": st.sampled_from(["none", "gold", "discard_flagged"]),
    "authority": st.sampled_from([None, ["expert", "review", "vendor", "simulated", "import"], ["vendor", "import", "review"]]),
})


def frame(rows) -> pd.DataFrame:
    return make_events([{"sample_id": s, "label": lab, "verdict": v, "source": src, "annotator": who, "round": r, "note": note,
                         "created_at": f"2024-06-01T00:{m:02d}:00+00:00"} for s, lab, v, src, who, r, note, m in rows])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event, min_size=1, max_size=30), policies)
def test_vectorised_resolution_equals_the_loop(rows, policy):
    events = frame(rows)
    pd.testing.assert_frame_equal(resolve_labels(events, policy), loop_resolve(events, policy))


def test_equal_on_a_large_random_history():
    rng = np.random.default_rng(0)
    n = 20_000
    rows = list(zip(rng.choice([f"s{i}" for i in range(3000)], n), rng.choice(["cat", "dog", "fox", None], n),
                    rng.choice(["confirmed", "corrected", "out_of_scope", "ambiguous", "skipped"], n, p=[.3, .4, .1, .1, .1]),
                    rng.choice(["import", "review", "expert", "vendor"], n), rng.choice(["a", "b", "c", "d"], n),
                    rng.integers(-1, 4, n), rng.choice(NOTES, n), rng.integers(0, 60, n)))
    events = frame(rows)
    for policy in ({}, {"precedence": "round", "annotator_weighting": "gold"}):
        pd.testing.assert_frame_equal(resolve_labels(events, policy), loop_resolve(events, policy))
