"""Queue files for humans: queue.csv, queue.labelstudio.json and the Label Studio labeling config.

The queue table (DESIGN §3) has the columns in `QUEUE_COLUMNS` (+ optional `kind`: relabel|new).
`write_queue_files` writes, atomically, into a round directory:

- `queue.csv`                the table itself (open it in a spreadsheet, or fill in a reviews CSV); after
                             `QUEUE_COLUMNS`, whose `given_label`/`suggested_label` are class ids (what programs
                             read), `given_name`/`suggested_name` hold the names humans read (`ClassList.shown_names`);
- `queue.labelstudio.json`   a list of Label Studio tasks: `data.image` (a URL Label Studio can
                             serve), `data.sample_id`, `data.queue_id`, `data.given_label`,
                             `data.given_name`, `data.round`, ... and the model's suggestion as a `predictions` entry,
                             so it shows pre-selected and the annotator only confirms or changes it;
- `labeling_config.xml`      the matching labeling interface: one `label` choice per class (the
                             button and the filter show the class's name, `alias` carries its id
                             into the export), a `verdict` choice and a free-text `note`.

Image URLs: kibble.queue.image_urls (Label Studio's local-files scheme by default). See docs/labels.md.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring  # json.dumps(ensure_ascii=False)'s C encoder for str
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np
import pandas as pd

from kibble import KibbleError
from kibble.values import json_text, json_texts, map_distinct
from kibble.data.classes import ClassList
from kibble.io import atomic_path, atomic_write_csv, atomic_write_text
from kibble.labels.history import VERDICTS
from kibble.queue.image_urls import ImageUrl, image_url_builder

QUEUE_COLUMNS = [
    "queue_id", "round", "rank", "sample_id", "path", "given_label",
    "suggested_label", "score", "strategy", "reason",
]
NAME_COLUMNS = {"given_label": "given_name", "suggested_label": "suggested_name"}  # id column -> human column
NO_CLASS = "none"  # what the Label Studio header shows for a missing given label or suggestion
KINDS = ("relabel", "new", "data_issue")  # data_issue: an image problem (kibble.data_issues), not a label
QUEUE_CSV = "queue.csv"
QUEUE_LABELSTUDIO = "queue.labelstudio.json"
LABELING_CONFIG = "labeling_config.xml"
PUSH_RECORD = "labelstudio.json"  # written by `kibble labelstudio push`: the round's queue is in annotators' hands
VERSIONED = (QUEUE_CSV, QUEUE_LABELSTUDIO, "gold.csv")  # what a rebuilt pushed queue keeps as queue.vN.csv, ...

# Names of the controls in labeling_config.xml; reviews.py reads them back from the export.
IMAGE_NAME = "image"
LABEL_CONTROL = "label"
VERDICT_CONTROL = "verdict"
NOTE_CONTROL = "note"


def versioned_name(name: str, version: int) -> str:
    """`queue.csv` -> `queue.v1.csv`, `queue.labelstudio.json` -> `queue.labelstudio.v1.json`."""
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}.v{int(version)}.{suffix}" if dot else f"{name}.v{int(version)}"


def queue_versions(round_dir: str | Path) -> list[int]:
    """The replaced versions of a round's queue kept beside it (queue.v1.csv, ...), oldest first."""
    found = []
    for path in Path(round_dir).glob("queue.v*.csv"):
        number = path.name[len("queue.v"):-len(".csv")]
        if number.isdigit():
            found.append(int(number))
    return sorted(found)


def is_pushed(round_dir: str | Path) -> bool:
    """True when the round's queue went to Label Studio (`kibble labelstudio push` recorded it)."""
    return (Path(round_dir) / PUSH_RECORD).is_file() and (Path(round_dir) / QUEUE_CSV).is_file()


def keep_queue_version(round_dir: str | Path) -> int:
    """Copy the round's queue files (queue.csv, queue.labelstudio.json, gold.csv) to the next `.vN` names.

    Why: a pushed queue is in annotators' hands; rebuilding it must not erase what they were shown (or
    which rows were gold), so answers to the old version still resolve. Returns N. Call it under the
    workspace lock, before writing the new version.
    """
    round_dir = Path(round_dir)
    version = 1 + max(queue_versions(round_dir), default=0)
    for name in VERSIONED:
        if (round_dir / name).is_file():
            with atomic_path(round_dir / versioned_name(name, version)) as tmp:
                shutil.copyfile(round_dir / name, tmp)
    return version


def load_queues(rounds_dir: str | Path) -> pd.DataFrame:
    """Every `rounds/NNN/queue.csv` under `rounds_dir` (replaced versions first), stacked: queue_id, round, sample_id, given_label.

    Used to map reviews back to the queue they answer (their round and the label the human saw); the
    current version comes after the replaced ones of its round, so it wins where both hold a sample.
    """
    frames = []
    paths = []
    for round_dir in sorted(p for p in Path(rounds_dir).glob("*") if p.is_dir()):
        paths += [round_dir / versioned_name(QUEUE_CSV, v) for v in queue_versions(round_dir)]
        paths += [round_dir / QUEUE_CSV] if (round_dir / QUEUE_CSV).is_file() else []
    for path in paths:
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise KibbleError(f"{path}: unreadable queue file ({str(err).splitlines()[0]}); rewrite it with `kibble queue`") from err
        if "sample_id" not in frame.columns:
            continue
        if "round" not in frame.columns or (frame["round"] == "").all():
            frame["round"] = path.parent.name
        frames.append(frame.reindex(columns=["queue_id", "round", "sample_id", "given_label"]))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in ["queue_id", "round", "sample_id", "given_label"]})
    out = pd.concat(frames, ignore_index=True).astype(object)
    out = out.where(out.notna() & (out != ""), None)
    out["round"] = pd.to_numeric(out["round"], errors="coerce").astype("Int64")
    return out


def validate_queue(queue: pd.DataFrame, source: str = "queue") -> pd.DataFrame:
    """Check the queue columns; return a copy with `kind` validated when present."""
    missing = [c for c in QUEUE_COLUMNS if c not in queue.columns]
    if missing:
        raise KibbleError(f"{source}: missing column(s) {missing}; a queue needs {QUEUE_COLUMNS} (+ optional kind)")
    queue = queue.reset_index(drop=True).copy()
    if queue["sample_id"].isna().any():
        row = int(queue.index[queue["sample_id"].isna()][0])
        raise KibbleError(f"{source}: row {row} has no sample_id")
    if queue["queue_id"].isna().any():
        row = int(queue.index[queue["queue_id"].isna()][0])
        raise KibbleError(f"{source}: row {row} (sample_id {queue.loc[row, 'sample_id']!r}) has no queue_id; give every row an id")
    dup = queue["queue_id"].duplicated(keep=False)
    if dup.any():
        row = int(queue.index[dup][0])
        raise KibbleError(f"{source}: duplicate queue_id {queue.loc[row, 'queue_id']!r}; queue ids must be unique")
    if "kind" in queue.columns:
        bad = queue["kind"].notna() & ~queue["kind"].isin(KINDS)
        if bad.any():
            row = int(queue.index[bad][0])
            raise KibbleError(f"{source}: row {row} has kind {queue.loc[row, 'kind']!r}; use one of {list(KINDS)}")
    return queue


def with_names(queue: pd.DataFrame, names: Mapping[str, str]) -> pd.DataFrame:
    """The queue with `given_name`/`suggested_name` (what humans read) right after `QUEUE_COLUMNS` (which stay first,
    in order: programs read the id columns)."""
    queue = queue.drop(columns=[c for c in NAME_COLUMNS.values() if c in queue.columns])
    at = max(queue.columns.get_loc(c) for c in QUEUE_COLUMNS if c in queue.columns) + 1 if set(QUEUE_COLUMNS) & set(queue.columns) else 0
    for col, name_col in NAME_COLUMNS.items():
        shown = map_distinct(queue[col], lambda v: names.get(str(v), str(v)))  # once per class, not per row
        queue.insert(at, name_col, pd.Series(shown, index=queue.index, dtype=object))
        at += 1
    return queue


def labelstudio_tasks(queue: pd.DataFrame, image_url: ImageUrl, model_version: str | None = None,
                      names: Mapping[str, str] | None = None) -> list[dict]:
    """The queue as Label Studio tasks with the suggested label as a pre-annotation (the objects of `task_lines`).

    names: class id -> the name humans see (`ClassList.shown_names`), for the header's `given_name` and
    `suggested_name`; without it the queue's own name columns (or the ids) are used."""
    return [json.loads(line) for line in task_lines(queue, image_url, model_version, names)]


def task_lines(queue: pd.DataFrame, image_url: ImageUrl, model_version: str | None = None,
               names: Mapping[str, str] | None = None) -> list[str]:
    """Each queue row as one Label Studio task, as the JSON text `json.dumps(task, ensure_ascii=False)` gives.

    Task: {"data": {image, sample_id, queue_id, round, rank, given_label, suggested_label, score, strategy, reason,
    [kind], given_name, suggested_name}, "predictions": [{model_version, result: [one `choices` result with the
    suggested label], score}]} (no predictions without a suggestion; no prediction score without a score).
    Built column-wise: each column's JSON fragments once per distinct value, one join per row (a 10^5-item
    queue: under a second, where a dict per task and an indented dump took tens of seconds)."""
    extra = [c for c in ("kind",) if c in queue.columns]
    if names is not None or any(c not in queue.columns for c in NAME_COLUMNS.values()):
        queue = with_names(queue, names or {})
    n = len(queue)

    def column(col: str, missing: str = "null") -> np.ndarray:
        return json_texts(queue[col], missing) if col in queue.columns else np.full(n, missing, dtype=object)

    many = getattr(image_url, "many", None)
    if many is not None:
        image = np.array([encode_basestring(u) for u in many(queue["path"].astype(str))], dtype=object)
    else:
        image = map_distinct(queue["path"].astype(str).astype(object), lambda p: encode_basestring(image_url(p)))
    parts = [np.full(n, '{"data": {"image": ', dtype=object), image]
    for col in ["sample_id", "queue_id", "round", "rank", "given_label", "suggested_label", "score", "strategy", "reason", *extra]:
        parts += [np.full(n, f', "{col}": ', dtype=object), column(col)]
    for name_col in NAME_COLUMNS.values():
        shown = queue[name_col].astype(object).where(queue[name_col].notna() & (queue[name_col].astype(object) != ""), NO_CLASS)
        parts += [np.full(n, f', "{name_col}": ', dtype=object), map_distinct(shown, json_text)]
    parts.append(np.full(n, "}", dtype=object))
    suggested = queue["suggested_label"].notna().to_numpy(dtype=bool) if "suggested_label" in queue.columns else np.zeros(n, dtype=bool)
    if model_version:
        version = np.full(n, json.dumps(model_version, ensure_ascii=False), dtype=object)
    else:
        version = map_distinct(queue["round"].astype(object), lambda r: json.dumps(f"kibble-round-{int(r):03d}"), missing='"kibble"')
    result_id = map_distinct(queue["queue_id"].astype(str).astype(object), lambda q: encode_basestring(f"q{q[-20:]}"))
    score = (json_texts(pd.to_numeric(queue["score"], errors="coerce").astype(np.float64), missing="") if "score" in queue.columns
             else np.full(n, "", dtype=object))
    choice = map_distinct(queue["suggested_label"], lambda v: encode_basestring(str(v))) if suggested.any() else np.full(n, "", dtype=object)
    prediction = np.full(n, "", dtype=object)
    where = np.flatnonzero(suggested)
    prediction[where] = [
        f', "predictions": [{{"model_version": {v}, "result": [{{"id": {i}, "from_name": "{LABEL_CONTROL}", "to_name": "{IMAGE_NAME}", '
        f'"type": "choices", "value": {{"choices": [{c}]}}}}]' + (f', "score": {sc}' if sc else "") + "}]"
        for v, i, c, sc in zip(version[where], result_id[where], choice[where], score[where])
    ]
    parts += [prediction, np.full(n, "}", dtype=object)]
    return ["".join(row) for row in zip(*parts)]


def tasks_file_text(lines: list[str]) -> str:
    """A JSON array with one task per line: readable, diffable."""
    return "[\n" + ",\n".join(lines) + "\n]\n"


def labeling_config(class_list: ClassList) -> str:
    """Label Studio XML: image, one single-choice `label` per class, verdict, note; names shown, ids exported.

    Each class's `Choice` has the name humans read as its `value` (the button, and what the Filter box
    matches) and its id as `alias`, which Label Studio writes into the export and matches predictions
    against; a class whose name is its id has no alias. The header shows the task's `given_name` and
    `suggested_name` (`labelstudio_tasks`)."""
    shown = class_list.shown_names()
    lines = [
        "<View>",
        '  <Header value="Given label: $given_name   (model suggests: $suggested_name)"/>',
        f'  <Image name="{IMAGE_NAME}" value="$image" zoom="true" zoomControl="true"/>',
        f'  <Filter name="filter" toName="{LABEL_CONTROL}" hotkey="shift+f" minlength="1" placeholder="Filter classes"/>',
        f'  <Choices name="{LABEL_CONTROL}" toName="{IMAGE_NAME}" choice="single" showInline="true">',
    ]
    for info in class_list.classes:
        display = info.display_name or info.name
        guideline = " ".join(str(info.guideline).split()) if info.guideline else ""
        attrs = f"value={quoteattr(shown[info.name])}"
        if shown[info.name] != info.name:  # the export carries the alias: the class id
            attrs += f" alias={quoteattr(info.name)}"
        # the hint shows on hover: the class's guideline (classes.yaml) tells annotators where its border is
        attrs += f" hint={quoteattr(f'{display}: {guideline}' if guideline else display)}"
        lines.append(f"    <Choice {attrs}/>")
    lines += [
        "  </Choices>",
        '  <Header value="Verdict on the given label" size="5"/>',
        f'  <Choices name="{VERDICT_CONTROL}" toName="{IMAGE_NAME}" choice="single" showInline="true">',
        *[f"    <Choice value={quoteattr(v)}/>" for v in VERDICTS],
        "  </Choices>",
        f'  <TextArea name="{NOTE_CONTROL}" toName="{IMAGE_NAME}" editable="true" maxSubmissions="1" '
        'rows="2" placeholder="Note (optional)"/>',
    ]
    guided = [c for c in class_list.classes if c.guideline]
    if guided:  # the guidelines once more, readable in full, in a collapsed panel under the controls
        lines += ["  <Collapse>", '    <Panel value="Guidelines">']
        for info in guided:
            text = " ".join(str(info.guideline).split())
            lines.append(f"      <Header value={quoteattr(f'{info.display_name or info.name}: {text}')} size=\"6\"/>")
        lines += ["    </Panel>", "  </Collapse>"]
    lines.append("</View>")
    return "\n".join(lines) + "\n"


def write_queue_files(
    queue: pd.DataFrame,
    round_dir: str | Path,
    class_list: ClassList,
    image_url: Any = None,
    *,
    data_root: str | Path | None = None,
    model_version: str | None = None,
) -> dict[str, Path]:
    """Write queue.csv, queue.labelstudio.json and labeling_config.xml into `round_dir` (atomically).

    image_url: a callable `path -> url`, a URL prefix string, or a mapping (see `image_url_builder`);
    data_root: where relative manifest paths live (needed for the local-files scheme).
    Returns {"csv": ..., "labelstudio": ..., "labeling_config": ...}.
    """
    queue = validate_queue(queue)
    known = set(class_list.names)
    for col in ("given_label", "suggested_label"):
        bad = queue[col].notna() & ~queue[col].astype(object).isin(known)
        if bad.any():
            row = int(queue.index[bad][0])
            raise KibbleError(f"queue row {row} (sample_id {queue.loc[row, 'sample_id']!r}): {col} "
                              f"{queue.loc[row, col]!r} is not a class in classes.yaml")
    url = image_url_builder(image_url, data_root)
    queue = with_names(queue[QUEUE_COLUMNS + [c for c in queue.columns if c not in QUEUE_COLUMNS]], class_list.shown_names())
    tasks = task_lines(queue, url, model_version)  # build everything before writing anything
    round_dir = Path(round_dir)
    paths = {
        "csv": atomic_write_csv(round_dir / QUEUE_CSV, queue),
        "labelstudio": atomic_write_text(round_dir / QUEUE_LABELSTUDIO, tasks_file_text(tasks)),
        "labeling_config": atomic_write_text(round_dir / LABELING_CONFIG, labeling_config(class_list)),
    }
    return paths
