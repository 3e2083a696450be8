"""The merge transaction: validated reviews -> new label events -> the manifest's label view -> the next round.

Library code, called by `kibble merge`, `kibble labelstudio pull`, the loops and the simulated crowd.
Answers get deterministic event ids (merging the same answers twice adds nothing). Everything is
checked before the first write, and the whole read-decide-write runs inside the workspace lock
(`kibble.labels.lock`), so concurrent merges serialise instead of losing answers. Its writes (policy,
history, manifest, quality files, round state) are one transaction (`kibble.transaction`): a crash at
any moment leaves the workspace as before or as after the merge, never a mix.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kibble import KibbleError
from kibble.annotation.assess import assess_rounds, tagged_notes, write_assessments
from kibble.data.classes import ClassList
from kibble.data.manifest import classes_without_train, load_manifest, validate_manifest
from kibble.io import atomic_write_parquet
from kibble.labels.answers import event_id, new_answers  # noqa: F401  (event_id: merge's public name since the start)
from kibble.labels.history import SOURCES, append_events, load_events, make_events, now_utc
from kibble.labels.lock import DEFAULT_TIMEOUT, default_task, workspace_transaction
from kibble.labels.policy import resolve_labels
from kibble.labels.policy_file import policy_for_merge, record_policy
from kibble.labels.reviews import REVIEW_COLUMNS
from kibble.paths import Workspace
from kibble.values import is_in, is_missing, map_distinct, positions

log = logging.getLogger(__name__)
REVIEW_SOURCES = tuple(s for s in SOURCES if s != "import")


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
    reviews = reviews.astype(object)
    review_ids = map_distinct(reviews["sample_id"], str)
    unknown = sorted(set(review_ids[~is_in(review_ids, manifest["sample_id"])]))
    if unknown:
        raise KibbleError(f"{origin}: unknown sample_id {unknown[0]!r} ({len(unknown)} unknown); reviews must refer to manifest samples")
    bad_labels = sorted({v for v in map_distinct(reviews["label"], _opt) if v is not None} - set(classes.names))
    if bad_labels:
        raise KibbleError(f"{origin}: unknown class {bad_labels[0]!r} ({len(bad_labels)} unknown); use class names from classes.yaml "
                          "(read files with kibble.labels.reviews.read_reviews, which checks every row)")

    current_round = ws.current_round()
    old = load_events(ws.label_events)
    step = _StepLog(len(reviews), len(old), len(manifest))
    column = _columns(reviews)  # each column converted once (10^5-row files), not cell by cell
    answers = {"sample_id": column("sample_id", str), "label": column("label"), "verdict": column("verdict", str),
               "annotator": column("annotator"), "note": column("note"), "round": column("round", None),
               "queue_id": column("queue_id"), "created_at": column("created_at"), "lead_time": column("lead_time", None)}
    batch, merged_rounds, n_duplicates = new_answers(answers, source, round_index, current_round, old, origin, ws.root)
    batch["previous_label"] = manifest["label"].to_numpy(dtype=object)[positions(batch["sample_id"], manifest["sample_id"])]
    created_at = batch["created_at"].to_numpy(dtype=object).copy()
    created_at[pd.isna(created_at)] = now_utc()
    batch["created_at"] = created_at
    step("new events", f"{len(batch):,} new answers of {len(reviews):,}")
    assessed = assess_rounds(ws, old, batch, len(classes.names), quality)  # annotator quality per round (gold, agreement)
    batch["note"] = tagged_notes(batch, assessed)  # the quality tag on each new answer's note (ids above hash the human note only)
    new = make_events(batch)  # checks verdicts and sources
    step("annotator quality")
    # The manifest is the saved policy's view of the history (every writer of either keeps it so), and a
    # sample's label depends on its own events only: with the policy unchanged, only the samples this batch
    # answers can change. A reapplied policy re-resolves every sample; so does the first merge, which
    # adopts a policy, unless the history holds import events only (every policy resolves those alike).
    incremental = policy_change is None or (policy_change["from"] is None and not _has_answers(old))
    touched = pd.unique(answers["sample_id"])  # every sample the file answers (new or not): its status is reported
    mine = old[is_in(old["sample_id"], touched)] if incremental and len(old) and len(touched) else (old.iloc[:0] if incremental else old)
    events = pd.concat([mine, new], ignore_index=True) if len(new) and len(mine) else (new if len(new) else mine)
    resolved = resolve_labels(events, pol)
    step("labels resolved", f"{len(events):,} events of {'the answered samples' if incremental else 'all samples'}")
    updated, to_train = label_view(manifest, resolved, partial=incremental)
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
    flagged = write_assessments(ws, assessed, _round_events(old, new, assessed)) if assessed and write else {}
    empty = classes_without_train(updated, classes.names) if write and manifest_changed else []
    if empty:
        log.warning("%s: %d class(es) without train images after this merge: %s; a model cannot learn them", ws.manifest, len(empty), empty[:5])
    step("written", "history, manifest and round files staged")
    next_round = max([current_round] + [int(r) + 1 for r in merged_rounds])
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
        "n_ambiguous": int((resolved["status"].to_numpy() == "ambiguous")[is_in(resolved["sample_id"], touched)].sum()),  # answered samples
        "rounds": sorted({int(r) for r in merged_rounds}),
        "annotators_flagged": sorted({a for names in flagged.values() for a in names}),
        "round": current_round,
        "next_round": next_round,
        "policy": pol,
        "policy_changed": policy_change is not None and policy_change["from"] is not None,
        "written": bool(write),
    }
    return summary


def label_view(manifest: pd.DataFrame, resolved: pd.DataFrame, partial: bool = False) -> tuple[pd.DataFrame, pd.Series]:
    """(the manifest with `label`/`excluded` from the resolved history, which pool rows moved to train).

    A pool image that got a label (a kind=new review) joins the training set. Used by the merge and
    by a re-import that carries answers over (kibble.data.reimport). `partial`: `resolved` holds only
    some samples (an incremental merge); the others keep their exclusion as well as their label
    (otherwise a sample without events is not excluded).
    """
    updated = manifest.copy()
    where = positions(updated["sample_id"], resolved["sample_id"])  # hashed in Arrow: 10^6 rows in milliseconds
    hit = where >= 0
    new_labels = updated["label"].to_numpy(dtype=object).copy()
    new_labels[hit] = resolved["label"].to_numpy(dtype=object)[where[hit]]
    new_labels[pd.isna(new_labels)] = None
    updated["label"] = pd.Series(new_labels, index=updated.index, dtype=object)
    if partial and "excluded" in manifest:
        excluded = manifest["excluded"].fillna(False).to_numpy(dtype=bool).copy()
    else:
        excluded = np.zeros(len(updated), dtype=bool)
    excluded[hit] = resolved["excluded"].to_numpy(dtype=bool)[where[hit]]
    updated["excluded"] = excluded
    to_train = (updated["split"] == "pool") & updated["label"].notna()
    updated.loc[to_train, "split"] = "train"
    return updated, to_train


_na = is_missing


def _has_answers(events: pd.DataFrame) -> bool:
    """Does the history hold any event other than an import?"""
    return bool(len(events)) and bool((events["source"].astype(str) != "import").any())


def _round_events(old: pd.DataFrame, new: pd.DataFrame, assessed: dict) -> pd.DataFrame:
    """The history's events of the assessed rounds, the new ones included (guideline feedback reads them)."""
    rounds = list(assessed)
    parts = [frame[pd.to_numeric(frame["round"], errors="coerce").isin(rounds).to_numpy(dtype=bool)] for frame in (old, new) if len(frame)]
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else (parts[0] if parts else new)


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
