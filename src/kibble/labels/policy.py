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

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from kibble import KibbleError
from kibble.values import is_missing, map_distinct
from kibble.labels.history import SOURCES
from kibble.annotation.quality import parse_tag

DEFAULT_AUTHORITY = ["expert", "review", "vendor", "simulated", "import"]
DEFAULT_POLICY: dict[str, Any] = {"authority": DEFAULT_AUTHORITY, "precedence": "authority", "annotator_weighting": "none"}
PRECEDENCES = ("authority", "round")
WEIGHTINGS = ("none", "gold", "discard_flagged")  # how annotators' votes count (annotation/quality.py tags in the note)
STATUSES = ("imported", "confirmed", "corrected", "ambiguous", "out_of_scope", "unlabeled")
RESOLVED_COLUMNS = ["sample_id", "label", "excluded", "status"]
_OUT_CODE, _AMBIGUOUS_CODE, _ABSTAIN = -2, -3, -9  # vote codes besides a class (codes >= 0)


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
    """The manifest's view of the history: one row per sample with events (see module docstring).

    Vectorised on integer codes (each text column factorised once; group-bys on integers, no Python
    loop over events or samples): a million-event history resolves in a few seconds.
    tests/labels/test_policy_equivalence.py checks it against the rule written as a plain loop.
    """
    pol = normalise_policy(policy)
    rank = {src: i for i, src in enumerate(pol["authority"])}
    if events is None or not len(events):
        return _resolved_frame(pd.DataFrame({"sample_id": [], "label": [], "excluded": [], "status": []}))
    sid, sid_names = pd.factorize(events["sample_id"].astype(str), sort=True)  # code order = sample_id order
    label, label_names = _codes(events["label"])
    verdict = events["verdict"].astype(str)
    source_code, source_names = pd.factorize(events["source"].astype(str))
    authority = np.array([rank.get(str(n), -1) for n in source_names], dtype=np.int64)[source_code]
    who, _ = _codes(events["annotator"].astype(object).replace({"": None}))  # no annotator and "" are one voter
    rnd = pd.to_numeric(events["round"], errors="coerce").fillna(-1).astype("int64").to_numpy()
    vote = np.where(verdict.isin(["confirmed", "corrected"]).to_numpy(), label, _ABSTAIN)
    vote = np.where((verdict == "out_of_scope").to_numpy(), _OUT_CODE, np.where((verdict == "ambiguous").to_numpy(), _AMBIGUOUS_CODE, vote))
    vote[vote == -1] = _ABSTAIN  # a confirmed answer without a label abstains
    ev = pd.DataFrame({"sid": sid, "label": label, "auth": authority, "who": who, "round": rnd, "vote": vote,
                       "weight": _weights(events["note"] if "note" in events.columns else None, len(events), pol["annotator_weighting"])})
    ts = _timestamps(events["created_at"]).astype("int64")
    ev = ev.iloc[np.lexsort((np.arange(len(ev)), ts))]  # oldest first (created_at, then position in the history)
    ev = ev[ev["auth"].to_numpy() >= 0]  # sources outside the authority list are ignored
    samples = np.unique(ev["sid"].to_numpy())
    n = len(sid_names)
    resolved_label = np.full(n, -1, dtype=np.int64)
    excluded = np.zeros(n, dtype=bool)
    status = np.full(n, "unlabeled", dtype=object)
    # most samples of a large workspace have one event, their import: it decides, nothing to vote on
    one = np.bincount(ev["sid"].to_numpy(), minlength=n)[ev["sid"].to_numpy()] == 1
    trivial = one & (ev["auth"].to_numpy() == rank["import"]) & (ev["vote"].to_numpy() >= 0) & ~(ev["weight"].to_numpy() <= 0)
    resolved_label[ev["sid"].to_numpy()[trivial]] = ev["vote"].to_numpy()[trivial]
    status[ev["sid"].to_numpy()[trivial]] = "imported"
    ev = ev[~trivial]
    imports = ev[ev["auth"].to_numpy() == rank["import"]].drop_duplicates("sid", keep="last").set_index("sid")["label"]
    ev["k1"], ev["k2"] = (-ev["round"], ev["auth"]) if pol["precedence"] == "round" else (ev["auth"], -ev["round"])
    group = ["sid", "k1", "k2"]  # ascending (k1, k2) = highest priority first
    last = ev.drop_duplicates(group + ["who"], keep="last")  # each annotator once per group: their latest answer
    votes = last[last["vote"].to_numpy() != _ABSTAIN]  # skipped and label-less answers abstain
    fill = votes.groupby(group, sort=False)["weight"].transform("mean").fillna(1.0)  # untagged: the group's mean weight
    votes = votes.assign(w=votes["weight"].fillna(fill))
    tally = votes.groupby(group + ["auth", "vote"], sort=False)["w"].sum().reset_index()
    tally = tally[tally["w"].to_numpy() > 0].sort_values(group + ["w"], ascending=[True, True, True, False], kind="stable")
    place = tally.groupby(group, sort=False).cumcount().to_numpy()
    outcome = tally[place == 0].merge(tally.loc[place == 1, group + ["w"]].rename(columns={"w": "w2"}), on=group, how="left")
    top, runner_up = outcome["w"].to_numpy(), outcome["w2"].fillna(-np.inf).to_numpy()
    tied = np.abs(top - runner_up) <= 1e-9 * np.maximum(top, 1.0)  # no strict majority: the group decides nothing
    won = outcome["vote"].to_numpy()
    kind = np.where(tied | (won == _AMBIGUOUS_CODE), _AMBIGUOUS_CODE, np.where(won == _OUT_CODE, _OUT_CODE, 0))  # 0: a class won
    is_label = kind == 0
    upto = outcome.assign(n=is_label).groupby("sid", sort=False)["n"].cumsum().to_numpy() - is_label == 0  # up to the deciding group
    out_sid = outcome["sid"].to_numpy()
    resolved_label[out_sid[is_label & upto]] = won[is_label & upto]
    excluded[out_sid[(kind == _OUT_CODE) & upto]] = True
    first = np.r_[True, out_sid[1:] != out_sid[:-1]][: len(out_sid)]  # the first outcome met sets the status
    head_sid, head_kind, head_vote = out_sid[first], kind[first], won[first]
    imported = imports.reindex(head_sid).fillna(-1).to_numpy()
    from_import = outcome["auth"].to_numpy()[first] == rank["import"]
    status[head_sid] = np.where(head_kind == _AMBIGUOUS_CODE, "ambiguous", np.where(head_kind == _OUT_CODE, "out_of_scope",
                                np.where(from_import, "imported", np.where(head_vote == imported, "confirmed", "corrected"))))
    names = np.append(np.asarray(label_names, dtype=object), None)  # code -1 -> None
    return _resolved_frame(pd.DataFrame({"sample_id": np.asarray(sid_names, dtype=object)[samples], "label": names[resolved_label[samples]],
                                         "excluded": excluded[samples], "status": status[samples]}))


def _resolved_frame(out: pd.DataFrame) -> pd.DataFrame:
    out = out.sort_values("sample_id", kind="stable").reset_index(drop=True)[RESOLVED_COLUMNS]
    for col in ("sample_id", "label", "status"):
        out[col] = out[col].astype(object).where(out[col].notna(), None)
    out["excluded"] = out["excluded"].astype(bool)
    return out


def _codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(integer code per row, -1 where missing; the distinct values as str), factorised once."""
    codes, uniq = pd.factorize(values.to_numpy(dtype=object) if values.dtype == object else values, use_na_sentinel=True)
    names = np.array([str(v) for v in uniq], dtype=object)
    if len(names) != len(set(names)):  # distinct objects with one text (1 and "1"): one label
        merged, names = pd.factorize(names)
        codes = np.where(codes >= 0, merged[np.maximum(codes, 0)], -1)
        names = np.asarray(names, dtype=object)
    return np.asarray(codes, dtype=np.int64), names


def _weights(notes: pd.Series | None, n: int, weighting: str) -> np.ndarray:
    """Each event's vote weight (NaN = not known: the group's mean), computed once per distinct note."""
    def weight(note) -> float:
        w = _weight(note, weighting)
        return np.nan if w is None else float(w)

    if notes is None:
        return np.full(n, weight(None))
    return map_distinct(notes, weight, missing=weight(None)).astype(float)


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


def _timestamps(values: pd.Series) -> np.ndarray:
    """created_at as UTC datetime64[ns]; unparseable or missing -> the earliest time. Parsed once per
    distinct text (a history's import events share one timestamp)."""
    codes, uniq = pd.factorize(values.to_numpy(dtype=object) if values.dtype == object else values, use_na_sentinel=True)
    parsed = pd.to_datetime(pd.Series(np.asarray(uniq, dtype=object)), utc=True, errors="coerce", format="ISO8601")
    table = np.append(parsed.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]"), np.datetime64("NaT", "ns"))
    table[np.isnat(table)] = pd.Timestamp.min.to_datetime64().astype("datetime64[ns]")
    return table[codes]


_missing = is_missing
