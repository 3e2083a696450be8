"""The merge transaction: validated reviews -> new label events -> the manifest's label view -> the next round.

Library code, called by `kibble merge`, `kibble labelstudio pull`, the loops and the simulated crowd.
Answers get deterministic event ids (merging the same answers twice adds nothing). Everything is
checked before the first write, and the whole read-decide-write runs inside the workspace lock
(`kibble.labels.lock`), so concurrent merges serialise instead of losing answers. Its writes (policy,
history, manifest, quality files, round state) are one transaction (`kibble.transaction`): a crash at
any moment leaves the workspace as before or as after the merge, never a mix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kibble import KibbleError
from kibble.annotation.assess import assess_rounds, tag_records, write_assessments
from kibble.annotation.quality import human_notes
from kibble.data.classes import ClassList
from kibble.data.manifest import classes_without_train, load_manifest, validate_manifest
from kibble.io import atomic_write_parquet
from kibble.labels.history import SOURCES, append_events, load_events, make_events, now_utc
from kibble.labels.lock import DEFAULT_TIMEOUT, default_task, workspace_transaction
from kibble.labels.policy import resolve_labels
from kibble.labels.policy_file import policy_for_merge, record_policy
from kibble.labels.reviews import REVIEW_COLUMNS
from kibble.paths import Workspace
from kibble.values import is_missing, map_distinct

log = logging.getLogger(__name__)
REVIEW_SOURCES = tuple(s for s in SOURCES if s != "import")


def event_id(sample_id: str, label: str | None, verdict: str, annotator: str | None, source: str,
             round_index: int, note: str | None) -> str:
    """Deterministic id of a reviewed answer: the same answer merged twice gets the same id.

    `confirmed` and `corrected` hash alike: they differ only by the label they are compared with,
    which can change between two merges of the same file; the answer (this label) is the same.
    """
    kind = "label" if verdict in ("confirmed", "corrected") else verdict
    return hashlib.sha256(json.dumps(
        [str(sample_id), label, kind, annotator, source, int(round_index), note or ""], ensure_ascii=False
    ).encode()).hexdigest()[:32]


def _answer_key(sample_id, label, verdict, annotator, source, note) -> str:
    return event_id(sample_id, label, verdict, annotator, source, -1, note)


def merge_reviews(
    workspace: str | Path | Workspace,
    reviews: pd.DataFrame,
    source: str = "review",
    round_index: int | None = None,
    policy: Mapping | None = None,
    *,
    origin: str = "reviews",
    quality: Mapping | None = None,
    task: str | None = None,
    lock_timeout: float | None = DEFAULT_TIMEOUT,
    manifest: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Fold a validated reviews table (`read_reviews`, `SimulatedAnnotator.review`) into the workspace.

    Round of each answer: `round_index` if given, else the review's own `round` (Label Studio
    `data.round`, a CSV `round` column), else the workspace's current round. Answers without an
    explicit round that are identical (sample, label, verdict, annotator, source, note) to one
    already recorded from the same source count as already merged, so re-merging a CSV after the
    round advanced adds nothing either.

    `policy`: None = the workspace's saved policy (`W/policy.yaml`; the default before the first
    merge). Another policy than the saved one is refused unless it has `reapply: true`; the first merge
    and every reapplied change are recorded in that file (kibble.labels.policy_file).

    The workspace lock is held from the first read of the manifest and the history to the last
    write (`task` names the holder for a writer that has to wait; `lock_timeout` seconds, None = no
    limit); a caller that already holds it (the loop, `kibble merge`) re-enters it without waiting.
    Every file the merge writes is committed together when it returns (or not at all); inside a
    caller's transaction (the loop, a pull) it joins that one. `manifest`: the manifest as a caller
    that holds the lock already loaded it (`kibble merge` reads it to parse the reviews), so a
    10^6-row file is not read and checked twice.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    ws.require()
    with workspace_transaction(ws, task, lock_timeout):
        return _merge_locked(ws, reviews, source, round_index, policy, origin, quality, task, manifest)


def _merge_locked(ws: Workspace, reviews: pd.DataFrame, source: str, round_index: int | None, policy: Mapping | None,
                  origin: str, quality: Mapping | None, task: str | None = None, manifest: pd.DataFrame | None = None) -> dict[str, Any]:
    """The merge proper; the caller holds the workspace lock, so what it reads is what it overwrites."""
    if source not in REVIEW_SOURCES:
        raise KibbleError(f"review_source={source!r}: use one of {list(REVIEW_SOURCES)} for reviews")
    pol, policy_change = policy_for_merge(ws, policy)  # the workspace's saved policy; another one only with reapply
    missing = [c for c in ("sample_id", "label", "verdict", "annotator") if c not in reviews.columns]
    if missing:
        raise KibbleError(f"{origin}: missing column(s) {missing}; reviews need {REVIEW_COLUMNS}")
    classes = ClassList.load(ws.classes)
    if manifest is None:
        manifest = load_manifest(ws.manifest, classes.names)
    # numpy object arrays before any Python loop: iterating pandas' Arrow-backed strings costs microseconds per item
    current_labels = dict(zip(manifest["sample_id"].to_numpy(dtype=object), manifest["label"].to_numpy(dtype=object)))
    reviews = reviews.astype(object)
    unknown = sorted(set(reviews["sample_id"].astype(str)) - set(current_labels))
    if unknown:
        raise KibbleError(f"{origin}: unknown sample_id {unknown[0]!r} ({len(unknown)} unknown); reviews must refer to manifest samples")
    bad_labels = sorted({str(v) for v in reviews["label"] if not _na(v) and str(v) != ""} - set(classes.names))
    if bad_labels:
        raise KibbleError(f"{origin}: unknown class {bad_labels[0]!r} ({len(bad_labels)} unknown); use class names from classes.yaml "
                          "(read files with kibble.labels.reviews.read_reviews, which checks every row)")

    current_round = ws.current_round()
    old = load_events(ws.label_events)
    existing_ids = set(old["event_id"].astype(str).to_numpy(dtype=object))
    same_source = old[old["source"].astype(str) == source]
    implicit = round_index is None and ("round" not in reviews.columns or bool(reviews["round"].isna().any()))
    recorded_answers = {  # only answers without a round are matched this way (a hash per earlier answer: skip when none)
        _answer_key(*(None if _na(v) else v for v in vals))
        for vals in zip(*(same_source[c].to_numpy(dtype=object) for c in ("sample_id", "label", "verdict", "annotator", "source")),
                        human_notes(same_source["note"]))
    } if len(same_source) and implicit else set()
    created = now_utc()
    step = _StepLog(len(reviews), len(old), len(manifest))
    records, batch_ids = [], set()
    merged_rounds: list[int] = []
    n_duplicates = 0
    out_of_range: list[tuple[str, int]] = []
    column = _columns(reviews)  # each column converted once (10^5-row files), not cell by cell
    for sid, label, verdict, annotator, note, own_round, queue_id, created_at, lead_time in zip(
        column("sample_id", str), column("label"), column("verdict", str), column("annotator"), column("note"),
        column("round", None), column("queue_id"), column("created_at"), column("lead_time", None),
    ):
        note = note or ""
        explicit = round_index is not None or not _na(own_round)
        rnd = int(round_index) if round_index is not None else (int(own_round) if not _na(own_round) else current_round)
        if not 0 <= rnd <= current_round:
            out_of_range.append((sid, rnd))
            continue
        eid = event_id(sid, label, verdict, annotator, source, rnd, note)
        if eid in existing_ids or eid in batch_ids:
            n_duplicates += 1
            merged_rounds.append(rnd)
            continue
        if not explicit and _answer_key(sid, label, verdict, annotator, source, note) in recorded_answers:
            n_duplicates += 1  # merged before, when the workspace was at an earlier round
            continue
        batch_ids.add(eid)
        merged_rounds.append(rnd)
        records.append({
            "event_id": eid, "sample_id": sid, "label": label, "previous_label": current_labels[sid],
            "verdict": verdict, "source": source, "annotator": annotator, "round": rnd,
            "queue_id": queue_id, "created_at": created_at or created, "note": note,
            "lead_time": None if _na(lead_time) else float(lead_time),  # seconds (answers/hour)
        })
    if out_of_range:  # a typo in a round column must not move the workspace to that round + 1
        sid, rnd = out_of_range[0]
        where = f"round={round_index}" if round_index is not None else f"the review of sample {sid!r} is for round {rnd}"
        raise KibbleError(f"{origin}: {where}, but {ws.root} has rounds 0..{current_round} ({len(out_of_range)} review(s) outside); "
                          f"fix the round to one of 0..{current_round}")
    step("new events", f"{len(records):,} new answers of {len(reviews):,}")
    assessed = assess_rounds(ws, old, records, len(classes.names), quality)  # annotator quality per round (gold, agreement)
    tag_records(records, assessed)  # the quality tag on each new answer's note (ids above hash the human note only)
    new = make_events(records)  # checks verdicts and sources
    events = pd.concat([old, new], ignore_index=True) if len(new) and len(old) else (new if len(new) else old)
    step("annotator quality")
    resolved = resolve_labels(events, pol)
    step("labels resolved", f"{len(events):,} events")
    updated, to_train = label_view(manifest, resolved)
    updated = validate_manifest(updated, classes.names, source=f"{ws.manifest} (after merging {origin})")

    changed = _differs(manifest["label"], updated["label"])
    old_excluded = manifest["excluded"].fillna(False).astype(bool) if "excluded" in manifest else pd.Series(False, index=manifest.index)
    manifest_changed = bool(changed.any()) or "excluded" not in manifest or bool((old_excluded != updated["excluded"]).any())

    # an empty reviews file (a header only, an export without annotations) writes nothing, unless it carries
    # a deliberate policy change (policy.reapply=true): "merged 0 reviews" must not rewrite the manifest
    write = len(reviews) > 0 or (policy_change is not None and policy_change["from"] is not None)
    # all checks passed: write the policy, the history, then the manifest view, then the round
    if write and policy_change is not None:
        record_policy(ws, policy_change, task or default_task(), int(changed.sum()))
    if len(new):
        append_events(ws.label_events, new)
    if write and manifest_changed:
        atomic_write_parquet(ws.manifest, updated)  # validated above (save_manifest would check it again)
    flagged = write_assessments(ws, assessed, events) if assessed and write else {}
    empty = classes_without_train(updated, classes.names) if write and manifest_changed else []
    if empty:
        log.warning("%s: %d class(es) without train images after this merge: %s; a model cannot learn them", ws.manifest, len(empty), empty[:5])
    step("written", "history, manifest and round files staged")
    next_round = max([current_round] + [r + 1 for r in merged_rounds])
    if next_round != current_round:
        ws.set_current_round(next_round)
    summary = {
        "reviews": origin,
        "source": source,
        "n_reviews": int(len(reviews)),
        "n_events_added": int(len(new)),
        "n_duplicates": int(n_duplicates),
        "n_labels_changed": int(changed.sum()),
        "n_excluded": int(updated["excluded"].sum()),
        "n_pool_labelled": int(to_train.sum()),
        "n_ambiguous": int((resolved["status"] == "ambiguous").sum()),
        "rounds": sorted(set(merged_rounds)),
        "annotators_flagged": sorted({a for names in flagged.values() for a in names}),
        "round": current_round,
        "next_round": next_round,
        "policy": pol,
        "policy_changed": policy_change is not None and policy_change["from"] is not None,
        "written": bool(write),
    }
    return summary


def label_view(manifest: pd.DataFrame, resolved: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """(the manifest with `label`/`excluded` from the resolved history, which pool rows moved to train).

    A pool image that got a label (a kind=new review) joins the training set. Used by the merge and
    by a re-import that carries answers over (kibble.data.reimport).
    """
    updated = manifest.copy()
    # positions via an object-dtype index: Series.isin/map on Arrow-backed strings is slow at 10^6 rows
    where = pd.Index(resolved["sample_id"].to_numpy(dtype=object)).get_indexer(updated["sample_id"].to_numpy(dtype=object))
    hit = where >= 0
    new_labels = updated["label"].to_numpy(dtype=object).copy()
    new_labels[hit] = resolved["label"].to_numpy(dtype=object)[where[hit]]
    new_labels[pd.isna(new_labels)] = None
    updated["label"] = pd.Series(new_labels, index=updated.index, dtype=object)
    excluded = np.zeros(len(updated), dtype=bool)
    excluded[hit] = resolved["excluded"].to_numpy(dtype=bool)[where[hit]]
    updated["excluded"] = excluded
    to_train = (updated["split"] == "pool") & updated["label"].notna()
    updated.loc[to_train, "split"] = "train"
    return updated, to_train


_na = is_missing


class _StepLog:
    """One log line per step of a large merge (>= 10,000 reviews or a 10^5-row workspace): seconds
    pass without output otherwise, and a user cannot tell a 20 s merge from a hang."""

    def __init__(self, n_reviews: int, n_events: int, n_rows: int):
        self._clock = time.perf_counter
        self._start = self._last = self._clock()
        self._on = n_reviews >= 10_000 or n_rows >= 100_000
        if self._on:
            log.info("merge: %s reviews into %s rows (%s events so far)", f"{n_reviews:,}", f"{n_rows:,}", f"{n_events:,}")

    def __call__(self, what: str, detail: str = "") -> None:
        if self._on:
            now = self._clock()
            log.info("merge: %s%s (%.1f s, %.1f s in all)", what, f": {detail}" if detail else "", now - self._last, now - self._start)
            self._last = now


def _columns(frame: pd.DataFrame):
    """column(name, convert=_opt) -> that column's values, converted once per distinct value (missing: None;
    convert=None: as they are; a column the table lacks: all None)."""
    def column(name: str, convert=_opt) -> np.ndarray:
        if name not in frame.columns:
            return np.full(len(frame), None, dtype=object)
        return frame[name].to_numpy(dtype=object) if convert is None else map_distinct(frame[name], convert)
    return column


def _differs(before: pd.Series, after: pd.Series) -> np.ndarray:
    """Row by row: does the label (None, NaN and "" all mean no label) differ?"""
    a = before.astype(object).where(before.notna(), None).replace({"": None}).to_numpy(dtype=object)
    b = after.astype(object).where(after.notna(), None).replace({"": None}).to_numpy(dtype=object)
    return np.asarray(a != b, dtype=bool)


def _opt(value: Any) -> str | None:
    return None if _na(value) or str(value) == "" else str(value)
