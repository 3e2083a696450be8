"""Read what humans answered: a reviews CSV or a Label Studio JSON export -> one reviews table.

This module reads the CSV and validates every table; kibble.labels.labelstudio_export parses the
Label Studio JSON into the same columns.

Reviews table (`REVIEW_COLUMNS`), one row per (sample, annotator):
  sample_id, label, verdict, annotator, note, queue_id, created_at, lead_time, round

- CSV: `sample_id,label,verdict,annotator[,note]` (+ optional `queue_id, created_at, lead_time,
  round, given_label`). An empty verdict is inferred from the label (confirmed when it equals the
  given label, corrected otherwise).
- Label Studio JSON export (Export -> JSON): a list of tasks; each task carries `data.sample_id`
  (kibble's queue.labelstudio.json puts it there) and `annotations[]`. Per task and annotator the
  latest non-cancelled annotation counts (by `updated_at`/`created_at`); an annotator whose only
  annotations were cancelled ("Skip" in the UI) is recorded as verdict `skipped`. Results are read
  by control name: `label` (choices), `verdict` (choices), `note` (textarea). With overlap a task
  holds several annotators' answers: each becomes its own row (with its `lead_time`); an
  annotation without `completed_by` is an error (it could not be told apart from another's vote).

Reading never writes anything; every problem raises KibbleError naming the file, row or task, and fix.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kibble import KibbleError
from kibble.data.classes import class_lookup, shown_names
from kibble.values import iter_records, map_distinct, optional_text, positions
from kibble.labels.history import VERDICTS

REVIEW_COLUMNS = ["sample_id", "label", "verdict", "annotator", "note", "queue_id", "created_at", "lead_time", "round"]
CSV_REQUIRED = ["sample_id", "label", "verdict", "annotator"]
_CSV_OPTIONAL = ["note", "queue_id", "created_at", "lead_time", "round", "given_label"]
_UNSET = object()


def read_reviews(
    path: str | Path,
    manifest: pd.DataFrame,
    class_names: list[str],
    queue: pd.DataFrame | None = None,
    display_names: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Parse and validate a reviews CSV or Label Studio JSON export (format auto-detected).

    queue: optional queue rows (`formats.load_queues`: queue_id, round, sample_id, given_label).
    A review that does not say its round or the label the human saw (a bare CSV) takes them from
    the queue it answers: the row with its queue_id, else the latest queue holding its sample.
    Without a queue row the given label is the manifest's current label.
    display_names: class id -> display name (`ClassList.display_names`); a label may be either.
    """
    path = Path(path)
    if not path.is_file():
        raise KibbleError(f"{path}: reviews file not found; pass reviews=<CSV or Label Studio JSON export>")
    if _looks_like_json(path):
        from kibble.labels.labelstudio_export import parse_labelstudio

        frame, where = parse_labelstudio(path)
    else:
        frame, where = _parse_csv(path)
    if queue is not None and len(queue):
        frame = _fill_from_queue(frame, queue)
    return validate_reviews(frame, manifest, class_names, source=str(path), where=where, display_names=display_names)


def reviews_from_labelstudio(
    tasks: Any,
    manifest: pd.DataFrame,
    class_names: list[str],
    queue: pd.DataFrame | None = None,
    source: str = "Label Studio export",
    display_names: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Like `read_reviews` for a Label Studio JSON export already in memory (`kibble labelstudio pull`)."""
    from kibble.labels.labelstudio_export import parse_labelstudio_tasks

    frame, where = parse_labelstudio_tasks(tasks, source)
    if queue is not None and len(queue):
        frame = _fill_from_queue(frame, queue)
    return validate_reviews(frame, manifest, class_names, source=source, where=where, display_names=display_names)


def _fill_from_queue(frame: pd.DataFrame, queue: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for col in ("queue_id", "round"):
        if col not in frame.columns:
            frame[col] = None
    if "given_label" not in frame.columns:
        frame["given_label"] = [_UNSET] * len(frame)
    q = queue.copy()
    q["_round"] = pd.to_numeric(q["round"], errors="coerce").fillna(-1)
    q = q.sort_values("_round", kind="stable")
    by_qid = {str(k): r for k, r in zip(q["queue_id"], q.to_dict("records")) if _text(k) is not None}
    by_sid = {str(k): r for k, r in zip(q["sample_id"], q.to_dict("records"))}  # latest round last -> wins
    rounds, givens, qids = [], [], []
    for rec in frame.to_dict("records"):
        qid = _text(rec.get("queue_id"))
        hit = by_qid.get(qid) if qid is not None else None
        hit = hit or by_sid.get(str(rec.get("sample_id")).strip())
        rnd, given = rec.get("round"), rec.get("given_label")
        if hit is not None:
            if _text(rnd) is None and _text(hit.get("round")) is not None:
                rnd = int(hit["round"])
            if given is _UNSET:
                given = _text(hit.get("given_label"))
            qid = qid or _text(hit.get("queue_id"))
        rounds.append(rnd)
        givens.append(given)
        qids.append(qid)
    frame["round"], frame["given_label"], frame["queue_id"] = (
        pd.Series(rounds, index=frame.index, dtype=object),
        pd.Series(givens, index=frame.index, dtype=object),
        pd.Series(qids, index=frame.index, dtype=object),
    )
    return frame


def _looks_like_json(path: Path) -> bool:
    if path.suffix.lower() == ".json":
        return True
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        return False
    with path.open("rb") as fh:
        head = fh.read(256).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head[:1] in (b"[", b"{")


# --------------------------------------------------------------------------------------- CSV
def _parse_csv(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """The CSV as text cells. Read without a header first, so pandas cannot quietly take a row's extra
    field (a trailing comma) as an index and shift every column; the first row is then the header."""
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, header=None, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise KibbleError(f"{path}: not a readable CSV ({reason}); every line needs the header's fields; save it as a UTF-8 CSV") from None
    except pd.errors.EmptyDataError:
        raise KibbleError(f"{path}: empty file; a reviews CSV needs the header {','.join(CSV_REQUIRED)}[,note]") from None
    table = table.fillna("")  # a short line's missing cells are empty, not the text 'nan'
    columns = [str(c).strip().lower() for c in table.iloc[0]]
    raw = table.iloc[1:].reset_index(drop=True)
    raw.columns = columns
    missing = [c for c in CSV_REQUIRED if c not in raw.columns]
    if missing:
        raise KibbleError(
            f"{path}: missing column(s) {missing}; a reviews CSV needs {','.join(CSV_REQUIRED)}[,note] "
            f"(found {[c for c in columns if c][:10]})"
        )
    twice = sorted({c for c in columns if columns.count(c) > 1 and c in CSV_REQUIRED + _CSV_OPTIONAL})
    if twice:
        raise KibbleError(f"{path}: column(s) {twice} appear more than once in the header; keep one of each")
    frame = pd.DataFrame({c: raw[c] for c in CSV_REQUIRED + [c for c in _CSV_OPTIONAL if c in raw.columns]})
    for col in frame.columns:
        frame[col] = frame[col].astype(str).str.strip()
    frame = frame.astype(object).replace({"": None})
    where = [f"line {i + 2}" for i in range(len(frame))]  # line 1 is the header
    for i, value in enumerate(frame["annotator"]):
        if value is None:
            raise KibbleError(f"{path} {where[i]}: empty annotator; name who reviewed it (e.g. alice@example.com)")
    return frame, where


# -------------------------------------------------------------------------------- validation
def validate_reviews(
    frame: pd.DataFrame,
    manifest: pd.DataFrame,
    class_names: list[str],
    source: str = "reviews",
    where: list[str] | None = None,
    display_names: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Check and normalise a reviews table; returns `REVIEW_COLUMNS`. One clear KibbleError otherwise.

    Rules: sample_id must be in the manifest; a label must be a class id or display name (stored as the
    id; a display name two classes share is an error naming both); verdict in VERDICTS
    (empty -> inferred from label vs given label); `corrected` needs a label (equal to the given
    label it becomes `confirmed`); `confirmed` with no label takes the given label, with another
    label it is an error. The same annotator answering the same sample twice differently is an error.
    """
    frame = frame.reset_index(drop=True)
    where = where or [f"row {i}" for i in range(len(frame))]
    missing = [c for c in ("sample_id", "verdict", "annotator") if c not in frame.columns]
    if missing:
        raise KibbleError(f"{source}: missing column(s) {missing}; reviews need {CSV_REQUIRED}")
    if "label" in frame.columns:
        frame["label"] = _labels_to_ids(frame["label"], class_names, display_names, source, where)
    # numpy object arrays first: iterating pandas' Arrow-backed strings costs microseconds per item (1M-row manifests)
    checked = _checked_columns(frame, manifest, class_names, where)
    out = checked if checked is not None else _checked_rows(frame, manifest, class_names, source, where, display_names)
    result = pd.DataFrame(out, columns=REVIEW_COLUMNS + ["_where"])
    result = _drop_duplicates(result, source)
    for col in ("sample_id", "label", "verdict", "annotator", "queue_id", "created_at"):
        result[col] = result[col].astype(object).where(result[col].notna(), None)
    result["note"] = result["note"].astype(object).fillna("")
    result["round"] = result["round"].astype("Int64")
    result["lead_time"] = result["lead_time"].astype("float64")
    return result[REVIEW_COLUMNS].reset_index(drop=True)


def _checked_columns(frame: pd.DataFrame, manifest: pd.DataFrame, class_names: list[str], where: list[str]) -> pd.DataFrame | None:
    """The rules of `_checked_rows`, column by column (10^5-row files in a fraction of a second); None when
    any row breaks one: the row-by-row pass then names the first such row in its own words."""
    n = len(frame)

    def column(name: str, convert=_text) -> np.ndarray:  # each distinct cell converted once; every convert gives None for a missing one
        return map_distinct(frame[name], convert) if name in frame.columns else np.full(n, None, dtype=object)

    try:
        lead_time = column("lead_time", lambda v: _float(v, "", "lead_time"))
        rounds = column("round", lambda v: _int(v, "", "round"))
    except KibbleError:
        return None
    sid, label, annotator = column("sample_id"), column("label"), column("annotator")
    verdict = column("verdict", lambda v: (_text(v) or "").lower() or None)
    position = positions(sid, manifest["sample_id"].astype(str))  # hashed in Arrow, not 10^6 Python strings
    if pd.isna(sid).any() or (position < 0).any() or pd.isna(annotator).any():
        return None
    has_label = ~pd.isna(label)
    if not pd.Series(label[has_label], dtype=object).isin(class_names).all():  # hashing, not np.isin's sort of objects
        return None
    given = manifest["label"].to_numpy(dtype=object)[position]
    if "given_label" in frame.columns:
        raw = frame["given_label"].to_numpy(dtype=object)
        given = np.where(np.array([v is _UNSET for v in raw], dtype=bool), given, raw)
    given = map_distinct(given, _text)
    has_given = ~pd.isna(given)
    same = has_label & has_given & (label == given)
    no_verdict = pd.isna(verdict)
    if (no_verdict & ~has_label).any():
        return None
    verdict = np.where(no_verdict, np.where(same, "confirmed", "corrected"), verdict)
    if not pd.Series(verdict, dtype=object).isin(list(VERDICTS)).all():
        return None
    corrected, confirmed = verdict == "corrected", verdict == "confirmed"
    if (corrected & ~has_label).any() or (confirmed & ~has_label & ~has_given).any() or (confirmed & has_label & ~same).any():
        return None
    verdict = np.where(corrected & same, "confirmed", verdict)
    label = np.where(confirmed & ~has_label, given, label)
    note = column("note")
    return pd.DataFrame({
        "sample_id": sid, "label": label, "verdict": verdict.astype(object), "annotator": annotator,
        "note": np.where(pd.isna(note), "", note), "queue_id": column("queue_id"), "created_at": column("created_at"),
        "lead_time": lead_time, "round": rounds, "_where": where,
    })


def _checked_rows(frame: pd.DataFrame, manifest: pd.DataFrame, class_names: list[str], source: str, where: list[str],
                  display_names: Mapping[str, str] | None) -> list[dict]:
    """The rules one row at a time, raising on the first row that breaks one (see `validate_reviews`)."""
    current = dict(zip(manifest["sample_id"].astype(str).to_numpy(dtype=object), manifest["label"].to_numpy(dtype=object)))
    known_classes = set(class_names)
    has_given = "given_label" in frame.columns
    out = []
    for i, rec in enumerate(iter_records(frame)):
        sid = _text(rec.get("sample_id"))
        loc = f"{source} {where[i]}"
        if sid is None:
            raise KibbleError(f"{loc}: empty sample_id; every review names the sample it is about")
        loc = f"{loc} (sample_id {sid!r})"
        if sid not in current:
            raise KibbleError(f"{loc}: unknown sample_id; it is not in the workspace manifest (check for typos or the wrong workspace)")
        label, verdict = _text(rec.get("label")), _text(rec.get("verdict"))
        verdict = verdict.lower() if verdict else None
        annotator = _text(rec.get("annotator"))
        if annotator is None:
            raise KibbleError(f"{loc}: empty annotator; name who reviewed it")
        if label is not None and label not in known_classes:
            raise KibbleError(f"{loc}: unknown class {label!r}; {_class_advice(label, class_names, display_names)}")
        given = rec["given_label"] if has_given and rec["given_label"] is not _UNSET else current[sid]
        given = _text(given)
        if verdict is None:
            if label is None:
                raise KibbleError(f"{loc}: neither label nor verdict; give a label or a verdict ({', '.join(VERDICTS)})")
            verdict = "confirmed" if label == given else "corrected"
        if verdict not in VERDICTS:
            raise KibbleError(f"{loc}: bad verdict {verdict!r}; use one of {', '.join(VERDICTS)}")
        if verdict == "corrected":
            if label is None:
                raise KibbleError(f"{loc}: verdict corrected but no label; put the right class in the label column")
            if label == given:
                verdict = "confirmed"
        elif verdict == "confirmed":
            if label is None:
                if given is None:
                    raise KibbleError(f"{loc}: verdict confirmed but the sample has no label to confirm; give its class and verdict corrected")
                label = given
            elif label != given:
                raise KibbleError(
                    f"{loc}: verdict confirmed but label {label!r} differs from the given label {given!r}; "
                    "use verdict corrected, or the given label"
                )
        out.append(
            {
                "sample_id": sid,
                "label": label,
                "verdict": verdict,
                "annotator": annotator,
                "note": _text(rec.get("note")) or "",
                "queue_id": _text(rec.get("queue_id")),
                "created_at": _text(rec.get("created_at")),
                "lead_time": _float(rec.get("lead_time"), loc, "lead_time"),
                "round": _int(rec.get("round"), loc, "round"),
                "_where": where[i],
            }
        )
    return out


def _labels_to_ids(labels: pd.Series, class_names: list[str], display_names: Mapping[str, str] | None,
                   source: str, where: list[str]) -> pd.Series:
    """The label column with display names replaced by class ids: resolved once per distinct value, then mapped.

    Ids and unknown values are left as they are (the row checks name an unknown one with its line); a
    display name that several classes share is refused here, naming the first line that uses it."""
    values = labels.to_numpy(dtype=object)
    found, ambiguous = class_lookup(pd.unique(values), class_names, display_names)
    if ambiguous:
        value, ids = next(iter(ambiguous.items()))
        row = int(np.flatnonzero(values == value)[0])
        raise KibbleError(f"{source} {where[row]}: label {value!r} is the display name of several classes ({', '.join(ids)}); "
                          "write the class id instead")
    found = {v: i for v, i in found.items() if v != i}
    if not found:
        return labels
    mapped = labels.map(found)
    return mapped.where(mapped.notna(), labels)


def _class_advice(label: str, class_names: list[str], display_names: Mapping[str, str] | None) -> str:
    """How to write a class: the display names closest to what was written, else a few display names and an id."""
    shown = list(shown_names(class_names, display_names).values())
    folded = {s.casefold(): s for s in shown}
    close = [folded[c] for c in difflib.get_close_matches(label.casefold(), list(folded), n=3, cutoff=0.6)]
    if close:
        return f"did you mean {' or '.join(repr(c) for c in close)}? Use a class id or display name from classes.yaml"
    examples = ", ".join(repr(s) for s in shown[:3])
    named = shown[0] != class_names[0]
    return f"use a class id or display name from classes.yaml, e.g. {examples}" + (f", or an id like {class_names[0]!r}" if named else "")


def _drop_duplicates(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Exact repeats of an answer dropped; the same annotator answering one sample twice differently refused.

    Only rows whose (sample, annotator, round) repeats are looked at one by one.
    """
    rounds = frame["round"].astype(object).where(frame["round"].notna(), None)
    repeated = pd.DataFrame({"s": frame["sample_id"], "a": frame["annotator"], "r": rounds}).duplicated(keep=False).to_numpy()
    if not repeated.any():
        return frame
    keep = list(np.flatnonzero(~repeated))
    seen: dict[tuple, int] = {}
    for i, rec in zip(np.flatnonzero(repeated), iter_records(frame[repeated])):
        key = (rec["sample_id"], rec["annotator"], rec["round"] if pd.notna(rec["round"]) else None)
        if key in seen:
            prev = frame.iloc[seen[key]]
            if (prev["label"], prev["verdict"], prev["note"]) != (rec["label"], rec["verdict"], rec["note"]):
                raise KibbleError(
                    f"{source} {prev['_where']} and {rec['_where']}: annotator {rec['annotator']!r} gave sample "
                    f"{rec['sample_id']!r} two different answers; keep one"
                )
            continue  # exact repeat
        seen[key] = i
        keep.append(i)
    return frame.iloc[sorted(keep)]


def _text(value: Any) -> str | None:
    if type(value) is str:
        return value.strip() or None
    return None if value is _UNSET else optional_text(value)


def _float(value: Any, loc: str, col: str) -> float | None:
    if _text(value) is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise KibbleError(f"{loc}: {col} {value!r} is not a number") from None


def _int(value: Any, loc: str, col: str) -> int | None:
    if _text(value) is None:
        return None
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise KibbleError(f"{loc}: {col} {value!r} is not a whole number") from None
    if not math.isfinite(as_float) or as_float != int(as_float):
        raise KibbleError(f"{loc}: {col} {value!r} is not a whole number")
    return int(as_float)
