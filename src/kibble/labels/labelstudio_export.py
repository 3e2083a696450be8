"""A Label Studio JSON export (Export -> JSON) -> kibble's reviews table (kibble.labels.reviews validates it).

The export is a list of tasks; each carries `data.sample_id` (kibble's queue.labelstudio.json puts it
there) and `annotations[]`. Per task and annotator the latest non-cancelled annotation counts (by
`updated_at`/`created_at`); an annotator whose only annotations were cancelled ("Skip" in the UI) is
recorded as verdict `skipped`, and so is an annotation submitted with an empty result. Results are
read by control name: `label` (choices), `verdict` (choices), `note` (textarea).

The structure is checked, not trusted: a `result` that is a string, entries that are not objects,
choices that are not a list, or a result made only of other controls (another labeling config) are
refused with one line naming the task and annotation. Read leniently, each of them would look like
a skip: the round would advance and the answer would be lost without a word.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from kibble import KibbleError
from kibble.labels.reviews import REVIEW_COLUMNS, _UNSET
from kibble.queue.formats import LABEL_CONTROL, NOTE_CONTROL, VERDICT_CONTROL


def parse_labelstudio(path: Path) -> tuple[pd.DataFrame, list[str]]:
    try:
        tasks = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise KibbleError(f"{path}: invalid JSON at line {err.lineno} column {err.colno} ({err.msg}); re-export it from Label Studio") from None
    except UnicodeDecodeError as err:
        raise KibbleError(f"{path}: not UTF-8 text (byte {err.start}); re-export it from Label Studio (JSON is UTF-8)") from None
    except RecursionError:
        raise KibbleError(f"{path}: JSON nested too deeply to be a Label Studio export; re-export it from Label Studio") from None
    return parse_labelstudio_tasks(tasks, path)


def parse_labelstudio_tasks(tasks: Any, path: Any) -> tuple[pd.DataFrame, list[str]]:
    if isinstance(tasks, dict) and "data" in tasks:
        tasks = [tasks]
    if not isinstance(tasks, list):
        raise KibbleError(f"{path}: expected a list of Label Studio tasks; use Export -> JSON in Label Studio")
    rows: list[dict] = []
    where: list[str] = []
    for ti, task in enumerate(tasks):
        loc = f"task {ti}" + (f" (id {task.get('id')})" if isinstance(task, dict) and task.get("id") is not None else "")
        if not isinstance(task, dict):
            raise KibbleError(f"{path} {loc}: not a JSON object; use Export -> JSON in Label Studio")
        if "data" not in task and "annotations" not in task:
            raise KibbleError(
                f"{path} {loc}: no `data`/`annotations`; this looks like a JSON-MIN or CSV export, "
                "export with the `JSON` format instead"
            )
        data = task.get("data") or {}
        if not isinstance(data, dict):
            raise KibbleError(f"{path} {loc}: `data` is {_kind(data)}, not an object; use Export -> JSON in Label Studio")
        sample_id = data.get("sample_id")
        if sample_id is None or str(sample_id).strip() == "":
            raise KibbleError(
                f"{path} {loc}: no data.sample_id; import tasks from kibble's queue.labelstudio.json "
                "so every task carries its sample_id"
            )
        given = data["given_label"] if "given_label" in data else _UNSET
        annotations = task.get("annotations", task.get("completions")) or []
        if not isinstance(annotations, list):
            raise KibbleError(f"{path} {loc}: `annotations` is {_kind(annotations)}, not a list; use Export -> JSON in Label Studio")
        latest: dict[str, tuple[int, dict, tuple]] = {}
        cancelled_only: dict[str, dict] = {}
        for ai, ann in enumerate(annotations):
            if not isinstance(ann, dict):
                raise KibbleError(f"{path} {loc} annotation {ai}: not a JSON object; re-export from Label Studio")
            who = _annotator(ann, f"{path} {loc} annotation {ai}" + (f" (id {ann['id']})" if ann.get("id") is not None else ""))
            if ann.get("was_cancelled"):
                cancelled_only.setdefault(who, ann)
                continue
            key = (_timestamp(ann.get("updated_at") or ann.get("created_at")), ai)
            if who not in latest or key > latest[who][2]:
                latest[who] = (ai, ann, key)
        for who, ann in cancelled_only.items():
            if who not in latest:
                rows.append(_row(sample_id, data, None, "skipped", who, "", ann, given))
                where.append(loc)
        for who, (ai, ann, _) in latest.items():
            label, verdict, note = _read_result(ann.get("result"), path, f"{loc} annotation {ai}")
            if label is None and verdict is None:
                verdict = "skipped"  # submitted with nothing chosen
            rows.append(_row(sample_id, data, label, verdict, who, note, ann, given))
            where.append(loc)
    # given_label: the task's data.given_label, or _UNSET to fall back to the manifest's label
    return pd.DataFrame(rows, columns=REVIEW_COLUMNS + ["given_label"]), where


def _row(sample_id, data, label, verdict, who, note, ann, given) -> dict:
    return {
        "sample_id": str(sample_id).strip(),
        "label": label,
        "verdict": verdict,
        "annotator": who,
        "note": note or "",
        "queue_id": data.get("queue_id"),
        "created_at": ann.get("updated_at") or ann.get("created_at"),
        "lead_time": ann.get("lead_time"),
        "round": data.get("round"),
        "given_label": given,
    }


def _annotator(ann: dict, loc: str) -> str:
    """The user's e-mail when the export carries it (completed_by as an object), else their id.

    An annotation without one cannot be attributed (overlap, gold scoring and the policy's one vote
    per annotator all need it), so it is an error rather than an anonymous vote.
    """
    who = ann.get("completed_by")
    if isinstance(who, dict):
        name = who.get("email") or who.get("username")
        if name:
            return str(name)
        who = who.get("id")
    if who is None or str(who).strip() == "":
        raise KibbleError(
            f"{loc}: no annotator (completed_by is empty); re-export the project with Export -> JSON "
            "from Label Studio, which names the user of every annotation"
        )
    return f"labelstudio-user-{who}"


def _timestamp(value: Any) -> pd.Timestamp:
    """When an annotation was made; anything that is not a time sorts first."""
    try:
        ts = pd.to_datetime(value, utc=True, errors="coerce") if isinstance(value, (str, int, float)) and value else pd.NaT
    except (TypeError, ValueError, OverflowError):
        ts = pd.NaT
    return pd.Timestamp.min.tz_localize("UTC") if pd.isna(ts) else ts


def _read_result(result: Any, path: Any, loc: str) -> tuple[str | None, str | None, str]:
    """(label, verdict, note) of one annotation's `result` list; a malformed one is refused, not read as skipped.

    An empty result (submitted with nothing chosen) is a skip. A result that holds items but none of
    kibble's controls (`label`, `verdict`, `note`) comes from another labeling config: reading it as a
    skip would silently drop the answer, so it is an error too.
    """
    if result is None:
        return None, None, ""
    fix = "re-export the project with Export -> JSON from Label Studio"
    if not isinstance(result, list):
        raise KibbleError(f"{path} {loc}: `result` is {_kind(result)}, not a list of results; {fix}")
    label = verdict = None
    notes: list[str] = []
    names: list[str] = []
    for item in result:
        if not isinstance(item, dict):
            raise KibbleError(f"{path} {loc}: a result entry is {_kind(item)}, not an object; {fix}")
        name, value = item.get("from_name"), item.get("value")
        names.append(str(name))
        if name not in (LABEL_CONTROL, VERDICT_CONTROL, NOTE_CONTROL):
            continue
        if not isinstance(value, dict):
            raise KibbleError(f"{path} {loc}: the {name} result has `value` {_kind(value)}, not an object; {fix}")
        if name in (LABEL_CONTROL, VERDICT_CONTROL):
            choices = value.get("choices") if value.get("choices") is not None else []
            if not isinstance(choices, list) or not all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in choices):
                raise KibbleError(f"{path} {loc}: the {name} result has choices {_kind(choices)} {_short(choices)}; "
                                  f"expected a list of class names; {fix}")
            if len(choices) > 1:
                raise KibbleError(f"{path} {loc}: several {name}s chosen {choices}; choose exactly one")
            if choices:
                if name == LABEL_CONTROL:
                    label = str(choices[0])
                else:
                    verdict = str(choices[0])
        else:
            text = value.get("text")
            if text is not None and not isinstance(text, (str, list)):
                raise KibbleError(f"{path} {loc}: the note result has text {_kind(text)}; expected text; {fix}")
            notes += [str(t) for t in text] if isinstance(text, list) else ([str(text)] if text else [])
    if names and not set(names) & {LABEL_CONTROL, VERDICT_CONTROL, NOTE_CONTROL}:
        raise KibbleError(f"{path} {loc}: no `{LABEL_CONTROL}`, `{VERDICT_CONTROL}` or `{NOTE_CONTROL}` result (from_name {sorted(set(names))[:5]}); "
                          "this project was not made from kibble's labeling config: push the queue with `kibble labelstudio push`")
    return label, verdict, "\n".join(notes)


def _kind(value: Any) -> str:
    return "null" if value is None else {str: "a string", list: "a list", dict: "an object", bool: "a boolean"}.get(type(value), f"a {type(value).__name__}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
