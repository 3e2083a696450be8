"""Which reviewed answers are new: deterministic event ids, duplicates, and the round of each answer.

Part of the merge transaction (`kibble.labels.merge`), split out because it is the merge's hot path:
a 10^5-row review file used to take seconds in a per-row Python loop (a JSON dump and a hash per
answer, set look-ups, dict records). Here every step is column-wise; only the hash itself runs per
row, on a string built once per row from JSON fragments encoded once per distinct value.
`event_id` (one answer) stays the reference: tests check `event_ids` against it on random text.
"""

from __future__ import annotations

import hashlib
import json
from json.encoder import encode_basestring  # the C encoder json.dumps(ensure_ascii=False) uses for str

import numpy as np
import pandas as pd

from kibble import KibbleError
from kibble.annotation.quality import LABEL_VERDICTS, human_notes  # confirmed/corrected: one answer kind, "this image shows <label>"
from kibble.values import is_in, is_missing, json_texts, map_distinct



def event_id(sample_id: str, label: str | None, verdict: str, annotator: str | None, source: str,
             round_index: int, note: str | None) -> str:
    """Deterministic id of a reviewed answer: the same answer merged twice gets the same id.

    `confirmed` and `corrected` hash alike: they differ only by the label they are compared with,
    which can change between two merges of the same file; the answer (this label) is the same.
    """
    kind = "label" if verdict in LABEL_VERDICTS else verdict
    return hashlib.sha256(json.dumps(
        [str(sample_id), label, kind, annotator, source, int(round_index), note or ""], ensure_ascii=False
    ).encode()).hexdigest()[:32]


def event_ids(sample_id, label, verdict, annotator, source: str, rounds, note) -> np.ndarray:
    """`event_id` of every row of these columns (text or None: `event_id`'s str() of the sample id is the caller's;
    `rounds` integers), as an object array.

    Builds the very string `json.dumps([...], ensure_ascii=False)` builds (", "-separated items,
    str through the same C encoder, None as null, int as its repr), so the ids are those `event_id`
    gives and those already stored in every workspace's history.
    """
    verdict = np.asarray(verdict, dtype=object)
    kind = np.where(np.isin(verdict, LABEL_VERDICTS), "label", verdict).astype(object)
    notes = np.asarray(note, dtype=object).copy()
    notes[pd.isna(notes)] = ""
    fragments = [
        json_texts(sample_id), json_texts(label), json_texts(kind), json_texts(annotator),
        np.full(len(kind), encode_basestring(source), dtype=object),
        np.asarray(rounds, dtype=np.int64).astype(str).astype(object), json_texts(notes),
    ]
    texts = ["[" + ", ".join(parts) + "]" for parts in zip(*fragments)]
    return np.array([hashlib.sha256(t.encode()).hexdigest()[:32] for t in texts], dtype=object)


def new_answers(reviews: dict[str, np.ndarray], source: str, round_index: int | None, current_round: int,
                old: pd.DataFrame, origin: str, root) -> tuple[pd.DataFrame, np.ndarray, int]:
    """(the new answers as event columns, the round of every merged-or-already-merged answer, n duplicates).

    `reviews`: the review columns (sample_id, label, verdict, annotator, note, round, queue_id,
    created_at, lead_time) as object arrays, text already normalised (None = missing). Round of an
    answer: `round_index`, else its own, else the current round; outside 0..current_round is refused
    (a typo must not move the workspace to that round + 1). An answer whose id is in the history or
    earlier in this batch is a duplicate; one without an explicit round that equals (sample, label,
    verdict, annotator, source, human note) an answer the history holds from this source is one too:
    it was merged when the workspace was at an earlier round.
    """
    n = len(reviews["sample_id"])
    own = pd.Series(reviews["round"], dtype=object)
    own_number = pd.to_numeric(own, errors="coerce")
    if bool((own_number.isna() & own.notna()).any()):
        bad = own[own_number.isna() & own.notna()].iloc[0]
        raise KibbleError(f"{origin}: round {bad!r} is not a number; fix the round column")
    explicit = np.full(n, round_index is not None) | own_number.notna().to_numpy()
    if round_index is not None:
        rounds = np.full(n, int(round_index), dtype=np.int64)
    else:
        rounds = own_number.fillna(current_round).to_numpy().astype(np.int64)
    outside = (rounds < 0) | (rounds > current_round)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        where = f"round={round_index}" if round_index is not None else f"the review of sample {reviews['sample_id'][i]!r} is for round {rounds[i]}"
        raise KibbleError(f"{origin}: {where}, but {root} has rounds 0..{current_round} ({int(outside.sum())} review(s) outside); "
                          f"fix the round to one of 0..{current_round}")
    notes = reviews["note"].copy()
    notes[pd.isna(notes)] = ""
    ids = event_ids(reviews["sample_id"], reviews["label"], reviews["verdict"], reviews["annotator"], source, rounds, notes)
    recorded = is_in(ids, old["event_id"]) if len(old) else np.zeros(n, dtype=bool)
    merged_before = np.zeros(n, dtype=bool)
    implicit = ~explicit & ~recorded
    same_source = old[old["source"].astype(str) == source] if len(old) and implicit.any() else old.iloc[:0]
    if len(same_source):  # answers without a round: compare with this source's earlier answers, round left out
        keys = event_ids(*(map_distinct(same_source[c], _text) for c in ("sample_id", "label", "verdict", "annotator")), source,
                         np.full(len(same_source), -1), human_notes(same_source["note"]))
        where = np.flatnonzero(implicit)
        merged_before[where] = is_in(event_ids(*(reviews[c][where] for c in ("sample_id", "label", "verdict", "annotator")), source,
                                             np.full(len(where), -1), notes[where]), keys)
    candidate = ~recorded & ~merged_before
    repeated = np.zeros(n, dtype=bool)
    repeated[candidate] = pd.Series(ids[candidate], dtype=object).duplicated(keep="first").to_numpy()
    new = candidate & ~repeated
    batch = pd.DataFrame({
        "event_id": ids[new], "sample_id": reviews["sample_id"][new], "label": reviews["label"][new],
        "verdict": reviews["verdict"][new], "source": source, "annotator": reviews["annotator"][new], "round": rounds[new],
        "queue_id": reviews["queue_id"][new], "created_at": reviews["created_at"][new], "note": notes[new],
        "lead_time": pd.to_numeric(pd.Series(reviews["lead_time"][new], dtype=object), errors="coerce").to_numpy(dtype=float),
    })
    return batch, rounds[~merged_before], int(n - new.sum())


def _text(value) -> str | None:
    return None if is_missing(value) else str(value)
