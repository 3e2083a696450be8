"""The label policy: how the append-only label history becomes the manifest's current labels.

`resolve_labels(events, policy)` returns one row per sample that has events:
`sample_id, label, excluded, status`.

The rule (default policy `{authority: [expert, review, vendor, simulated, import], precedence: authority}`):

1. Events are grouped by (source, round). Groups are tried in priority order: with
   `precedence: authority` (default) the highest-authority source first and, within a source, the
   latest round first; with `precedence: round` the latest round first and, within a round, the
   highest authority first. Sources missing from `authority` are ignored.
2. Inside a group each annotator counts once: their latest event (by `created_at`, then position
   in the history). Votes: `confirmed`/`corrected` vote for their label, `out_of_scope` votes
   "out of scope", `ambiguous` votes "ambiguous", `skipped` abstains.
3. The first group whose votes have a strict majority for a class decides the label. A group that
   ties, or whose majority is "ambiguous", decides nothing: the label stays what the groups below
   it say (what it was), and the status is `ambiguous`. A group whose majority is "out of scope"
   sets `excluded = True` (the row stays in the manifest) and the label again comes from below.
4. status: the first non-deciding outcome met (`ambiguous` or `out_of_scope`), else `imported`
   (decided by the import), `confirmed` (a review agrees with the imported label) or `corrected`
   (a review gave another label, or labelled an unlabelled sample).

`annotator_weighting` (none | gold | discard_flagged) sets what a vote counts in step 2-3: 1, the
annotator's gold log-odds weight, or 0 for flagged annotators — read from the quality tag merge
puts in the event's note (`annotation/quality.py`); answers on gold questions never vote.

Why authority before recency: an expert's answer is the reference a vendor is measured against;
a vendor answering the same image in a later round must not undo it. Only a later answer of the
same (or higher) authority supersedes it. Set `precedence: round` when the latest human answer
should always win, whoever gave it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from kibble import KibbleError
from kibble.values import is_missing
from kibble.labels.history import SOURCES
from kibble.annotation.quality import parse_tag

DEFAULT_AUTHORITY = ["expert", "review", "vendor", "simulated", "import"]
DEFAULT_POLICY: dict[str, Any] = {"authority": DEFAULT_AUTHORITY, "precedence": "authority", "annotator_weighting": "none"}
PRECEDENCES = ("authority", "round")
WEIGHTINGS = ("none", "gold", "discard_flagged")  # how annotators' votes count (annotation/quality.py tags in the note)
STATUSES = ("imported", "confirmed", "corrected", "ambiguous", "out_of_scope", "unlabeled")
RESOLVED_COLUMNS = ["sample_id", "label", "excluded", "status"]
_OUT, _AMBIGUOUS = object(), object()


def normalise_policy(policy: Mapping | None) -> dict[str, Any]:
    """Defaults filled in and checked; accepts a dict or an OmegaConf DictConfig."""
    raw = {k: v for k, v in dict(policy or {}).items() if k != "reapply"}  # a switch of the merge (labels/policy_file.py), not policy
    unknown = sorted(set(raw) - set(DEFAULT_POLICY))
    if unknown:
        raise KibbleError(f"policy: unknown key(s) {unknown}; known keys are {sorted(DEFAULT_POLICY)}")
    authority = [str(s) for s in (raw.get("authority") or DEFAULT_AUTHORITY)]
    bad = [s for s in authority if s not in SOURCES]
    if bad:
        raise KibbleError(f"policy.authority: unknown source(s) {bad}; use names from {list(SOURCES)}")
    if len(set(authority)) != len(authority):
        raise KibbleError(f"policy.authority: {authority} lists a source twice; list each source once")
    if "import" not in authority:
        raise KibbleError("policy.authority must include `import` (the labels a workspace starts from), usually last")
    precedence = str(raw.get("precedence") or "authority")
    if precedence not in PRECEDENCES:
        raise KibbleError(f"policy.precedence: {precedence!r}; use one of {list(PRECEDENCES)}")
    weighting = str(raw.get("annotator_weighting") or "none")
    if weighting not in WEIGHTINGS:
        raise KibbleError(f"policy.annotator_weighting: {weighting!r}; use one of {list(WEIGHTINGS)}")
    return {"authority": authority, "precedence": precedence, "annotator_weighting": weighting}


def resolve_labels(events: pd.DataFrame, policy: Mapping | None = None) -> pd.DataFrame:
    """The manifest's view of the history: one row per sample with events (see module docstring)."""
    pol = normalise_policy(policy)
    rank = {src: i for i, src in enumerate(pol["authority"])}
    if events is None or not len(events):
        return pd.DataFrame({"sample_id": pd.Series(dtype=object), "label": pd.Series(dtype=object),
                             "excluded": pd.Series(dtype=bool), "status": pd.Series(dtype=object)})
    ev = pd.DataFrame(
        {
            "sample_id": events["sample_id"].astype(str).to_numpy(),
            "label": events["label"].to_numpy(dtype=object),
            "verdict": events["verdict"].astype(str).to_numpy(),
            "source": events["source"].astype(str).to_numpy(),
            "annotator": events["annotator"].to_numpy(dtype=object),
            "round": pd.to_numeric(events["round"], errors="coerce").fillna(-1).astype("int64").to_numpy(),
            "ts": _timestamps(events["created_at"]),
            "pos": np.arange(len(events)),
            "note": events["note"].to_numpy(dtype=object) if "note" in events.columns else None,
        }
    )
    ev = ev[ev["source"].isin(rank)].sort_values(["ts", "pos"], kind="stable")  # oldest first
    by_round = pol["precedence"] == "round"
    imports: dict[str, str | None] = {}
    per_sample: dict[str, dict[tuple[int, int], dict[str, tuple[str, str | None, str]]]] = {}
    for sid, verdict, label, source, annotator, rnd, note in zip(
        ev["sample_id"], ev["verdict"], ev["label"], ev["source"], ev["annotator"], ev["round"], ev["note"]
    ):  # a later answer of the same annotator in the same group overwrites the earlier one
        label = None if _missing(label) else str(label)
        if source == "import":
            imports[sid] = label
        auth = rank[source]
        key = (-int(rnd), auth) if by_round else (auth, -int(rnd))
        who = "" if _missing(annotator) else str(annotator)
        per_sample.setdefault(sid, {}).setdefault(key, {})[who] = (verdict, label, source, _weight(note, pol["annotator_weighting"]))
    rows = [_resolve_one(sid, groups, imports.get(sid)) for sid, groups in per_sample.items()]
    out = pd.DataFrame(rows, columns=RESOLVED_COLUMNS).sort_values("sample_id", kind="stable").reset_index(drop=True)
    for col in ("sample_id", "label", "status"):
        out[col] = out[col].astype(object).where(out[col].notna(), None)
    out["excluded"] = out["excluded"].astype(bool)
    return out


def _resolve_one(sid: str, groups: dict, import_label: str | None) -> tuple:
    status: str | None = None
    excluded: bool | None = None
    for key in sorted(groups):  # highest priority first
        answers = groups[key].values()
        votes = [(v, w) for v, w in ((_vote(verdict, label), w) for verdict, label, _, w in answers) if v is not None]
        known = [w for _, w in votes if w is not None]
        fill = float(np.mean(known)) if known else 1.0  # an untagged answer in a weighted group: the group's mean weight
        tally: Counter = Counter()
        for vote, w in votes:
            tally[vote] += fill if w is None else w
        counts = [(v, w) for v, w in tally.most_common() if w > 0]
        if not counts:
            continue
        tied = len(counts) > 1 and abs(counts[0][1] - counts[1][1]) <= 1e-9 * max(counts[0][1], 1.0)
        winner = counts[0][0]
        if tied or winner is _AMBIGUOUS:
            status = status or "ambiguous"
            continue
        if winner is _OUT:
            status = status or "out_of_scope"
            excluded = True
            continue
        if status is None:
            source = next(iter(answers))[2]
            status = "imported" if source == "import" else ("confirmed" if winner == import_label else "corrected")
        return sid, winner, bool(excluded), status
    return sid, None, bool(excluded), status or "unlabeled"


def _weight(note, weighting: str) -> float | None:
    """A vote's weight from kibble's quality tag in the event note (None = not known: the group's mean).

    Answers on gold items never vote (gold measures annotators; its label is the expert's).
    """
    tag = parse_tag(note)
    if tag.get("gold_item"):
        return 0.0
    if weighting == "gold":
        return float(tag["weight"]) if "weight" in tag else None
    if weighting == "discard_flagged":
        return 0.0 if tag.get("flagged") else 1.0
    return 1.0


def _vote(verdict: str, label: str | None):
    if verdict in ("confirmed", "corrected"):
        return label  # None (a confirmed event without label) abstains
    if verdict == "out_of_scope":
        return _OUT
    if verdict == "ambiguous":
        return _AMBIGUOUS
    return None  # skipped


def _timestamps(values: pd.Series) -> np.ndarray:
    ts = pd.to_datetime(values.astype(object).where(values.notna(), None), utc=True, errors="coerce", format="ISO8601")
    return ts.fillna(pd.Timestamp.min.tz_localize("UTC")).to_numpy()


_missing = is_missing
