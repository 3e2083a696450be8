"""Push a round's queue to a Label Studio project; pull its annotations back into the label history.

push: the labeling config for classes.yaml (guidelines as hints, example images in the project's
      instructions), the round's queue.csv as tasks with the model's suggestion as a prediction,
      and `rounds/NNN/labelstudio.json` recording the server, project id and queue_id -> task id.
      Pushing again reuses the project (by the recorded id, else by title) and imports only the
      queue rows it does not hold yet.
pull: the project's JSON export -> checks (right project, right class list, tasks kibble pushed) ->
      the same reviews ingest and merge as `kibble merge` (deterministic event ids: pulling twice
      adds nothing) -> the export kept as `rounds/NNN/labelstudio_export.json`. Every check runs
      before the first write.
"""

from __future__ import annotations

import html
import json
import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from kibble import KibbleError
from kibble.data.classes import ClassList
from kibble.data.manifest import load_manifest
from kibble.io import atomic_write_json
from kibble.paths import Workspace
from kibble.progress import Progress
from kibble.queue.image_urls import image_url_builder
from kibble.queue.formats import (
    LABEL_CONTROL,
    PUSH_RECORD,
    QUEUE_CSV,
    labeling_config,
    labelstudio_tasks,
    load_queues,
    validate_queue,
)
from kibble.labels.history import now_utc
from kibble.labels.lock import DEFAULT_TIMEOUT, workspace_transaction
from kibble.labels.merge import merge_reviews
from kibble.labels.reviews import reviews_from_labelstudio

log = logging.getLogger(__name__)

RECORD = PUSH_RECORD  # labelstudio.json
IMPORT_BATCH = 200  # tasks per import request: progress per request, and a failed push loses one batch at most
EXPORT = "labelstudio_export.json"
DEFAULT_TITLE = "kibble {workspace} round {round:03d}"


# ------------------------------------------------------------------------------ pure helpers
def project_title(ws: Workspace, round_index: int, template: str | None = None) -> str:
    return (template or DEFAULT_TITLE).format(workspace=ws.root.resolve().name, round=int(round_index))


def label_choices(label_config: str, where: str = "labeling config") -> list[str]:
    """The class ids offered by the `label` control of a labeling config: each choice's `alias` (the id, when
    the button shows a display name), else its `value` (configs pushed before names were shown)."""
    try:
        root = ET.fromstring(label_config)
    except ET.ParseError as err:
        raise KibbleError(f"{where}: not valid XML ({err}); push the project again with `kibble labelstudio push`") from None
    control = next((el for el in root.iter("Choices") if el.get("name") == LABEL_CONTROL), None)
    if control is None:
        raise KibbleError(f"{where}: no <Choices name=\"{LABEL_CONTROL}\">; this is not a project kibble pushed")
    return [str(c.get("alias") or c.get("value")) for c in control.iter("Choice")]


def check_class_list(offered: list[str], class_names: list[str], where: str) -> None:
    """The annotators chose from `offered`; the workspace's classes must be exactly those."""
    if list(offered) == list(class_names):
        return
    extra = [c for c in offered if c not in class_names]
    missing = [c for c in class_names if c not in offered]
    detail = (f"not in classes.yaml: {extra[:5]}; " if extra else "") + (f"missing: {missing[:5]}; " if missing else "")
    raise KibbleError(
        f"{where}: its class list differs from the workspace's classes.yaml ({detail or 'different order; '}"
        "{n} vs {m} classes); pull from the project pushed for this workspace, or push again".format(n=len(offered), m=len(class_names))
    )


def guidelines_html(classes: ClassList, image_url: Any = None) -> str:
    """The project's instructions: each class's guideline and example images (classes.yaml)."""
    parts = []
    for info in classes.classes:
        if not info.guideline and not info.examples:
            continue
        name = html.escape(info.display_name or info.name)
        block = f"<h4>{name}</h4>"
        if info.guideline:
            block += f"<p>{html.escape(str(info.guideline))}</p>"
        for path in info.examples:
            block += f'<img src="{html.escape(image_url(path))}" alt="{name}" style="max-height:120px;margin:2px"/>'
        parts.append(block)
    return "".join(parts)


def check_export(export: Any, record: Mapping[str, Any], where: str, other_rounds: set[int] = frozenset()) -> list[dict]:
    """An export must come from the recorded project and hold only tasks kibble pushed there.

    other_rounds: ids of tasks other rounds pushed into the same project (one project reused across
    rounds via `title=`); they are left out here, for their own round's pull.
    """
    if isinstance(export, dict) and "data" in export:
        export = [export]
    if not isinstance(export, list):
        raise KibbleError(f"{where}: expected a list of Label Studio tasks (JSON export)")
    project_id = int(record["project_id"])
    task_queue = {int(tid): str(qid) for qid, tid in (record.get("tasks") or {}).items()}
    kept = []
    for i, task in enumerate(export):
        loc = f"{where} task {i}" + (f" (id {task.get('id')})" if isinstance(task, dict) and task.get("id") is not None else "")
        if not isinstance(task, dict):
            raise KibbleError(f"{loc}: not a JSON object; export with the JSON format")
        projects = {task.get("project")} | {a.get("project") for a in task.get("annotations") or [] if isinstance(a, dict)}
        projects = {int(p) for p in projects if p is not None}
        if projects and projects != {project_id}:
            raise KibbleError(
                f"{loc}: belongs to Label Studio project {sorted(projects)[0]}, not project {project_id} recorded in "
                f"{RECORD}; export the project this round was pushed to"
            )
        tid = task.get("id")
        if tid is not None and int(tid) not in task_queue and int(tid) in other_rounds:
            continue
        if tid is not None and int(tid) not in task_queue:
            raise KibbleError(f"{loc}: not a task kibble pushed for this round (unknown to {RECORD}); delete it in "
                              "Label Studio or push the round again")
        qid = (task.get("data") or {}).get("queue_id")
        if tid is not None and qid is not None and str(qid) != task_queue[int(tid)]:
            raise KibbleError(f"{loc}: data.queue_id {qid!r} but {RECORD} recorded {task_queue[int(tid)]!r} for this task")
        kept.append(task)
    return kept


def other_rounds_tasks(ws: Workspace, round_index: int, project_id: int) -> set[int]:
    """Task ids that other rounds pushed into the same project."""
    ids: set[int] = set()
    for path in (ws.root / "rounds").glob(f"*/{RECORD}"):
        if path.parent.name.isdigit() and int(path.parent.name) != int(round_index):
            other = load_record(path.parent) or {}
            if int(other.get("project_id", -1)) == int(project_id):
                ids |= {int(t) for t in (other.get("tasks") or {}).values()}
    return ids


def name_annotators(export: list[dict], users: Mapping[int, str]) -> list[dict]:
    """A copy of the export with each `completed_by` user id replaced by {id, email} (the history's annotator)."""
    out = []
    for task in export:
        task = dict(task)
        anns = []
        for ann in task.get("annotations") or []:
            if isinstance(ann, dict) and isinstance(ann.get("completed_by"), int) and ann["completed_by"] in users:
                ann = {**ann, "completed_by": {"id": ann["completed_by"], "email": users[ann["completed_by"]]}}
            anns.append(ann)
        task["annotations"] = anns
        out.append(task)
    return out


def read_queue(path: Path) -> pd.DataFrame:
    """A round's queue.csv: text columns as text (class names like `0`), round/rank/score as numbers."""
    try:
        queue = pd.read_csv(path, dtype=str, keep_default_na=False).astype(object)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise KibbleError(f"{path}: unreadable queue file ({str(err).splitlines()[0]}); rebuild it with `kibble queue`") from None
    queue = queue.where(queue != "", None)
    for col in ("round", "rank", "score"):
        if col in queue.columns:
            values = pd.to_numeric(queue[col], errors="coerce")
            queue[col] = [None if pd.isna(v) else (float(v) if col == "score" else int(v)) for v in values]
    return validate_queue(queue, source=str(path))


def load_record(round_dir: Path) -> dict[str, Any] | None:
    path = round_dir / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise KibbleError(f"{path}: unreadable ({err.msg}); delete it and push the round again") from None
    if not isinstance(record, dict) or "project_id" not in record:
        raise KibbleError(f"{path}: no project_id; delete it and push the round again")
    return record


def latest_pushed_round(ws: Workspace) -> int:
    rounds = sorted(int(p.parent.name) for p in (ws.root / "rounds").glob(f"*/{RECORD}") if p.parent.name.isdigit())
    if not rounds:
        raise KibbleError(f"{ws.root}: no round was pushed to Label Studio; run `kibble labelstudio push workspace={ws.root}` first")
    return rounds[-1]


# ---------------------------------------------------------------------------------- push
def serves_local_files(image_url: Any) -> bool:
    """True when the image URLs are Label Studio local-files URLs (see image_urls.image_url_builder)."""
    if image_url is None:
        return True
    if callable(image_url) or isinstance(image_url, str):
        return False
    spec = dict(image_url)
    return (spec.get("scheme") or ("url" if spec.get("url_prefix") else "local_files")) == "local_files"


def image_folder(paths: list[str], data_root: Path) -> str:
    """The deepest folder holding every image: the Local Files storage to attach."""
    full = [os.path.dirname(os.path.abspath(p if os.path.isabs(p) else data_root / p)) for p in paths]
    return os.path.commonpath(full) if full else os.path.abspath(data_root)


def push(ws: Workspace, round_index: int, server: Any, *, title: str | None = None, image_url: Any = None,
         overlap: int = 1, model_version: str | None = None, local_storage: bool = True) -> dict[str, Any]:
    """Create or reuse the round's project, import the queue rows it does not hold yet, record the ids.

    local_storage: in local-files mode, attach the images' folder to the project as a Local Files
    storage (Label Studio serves /data/local-files/ URLs only from such folders).
    """
    round_dir = ws.round_dir(round_index)
    queue_path = round_dir / QUEUE_CSV
    if not queue_path.is_file():
        raise KibbleError(f"{queue_path}: round {round_index} has no queue; build it with `kibble queue workspace={ws.root} round={round_index}`")
    if int(overlap) < 1:
        raise KibbleError(f"overlap={overlap}: each task needs at least 1 annotator")
    queue = read_queue(queue_path)
    classes = ClassList.load(ws.classes)
    url = image_url_builder(image_url, ws.data_root)
    config = labeling_config(classes)
    instructions = guidelines_html(classes, url)
    tasks = labelstudio_tasks(queue, url, model_version or f"kibble-round-{int(round_index):03d}", classes.shown_names())
    title = project_title(ws, round_index, title)
    server.whoami()  # a clear error before anything else when the server or the key is wrong

    record = load_record(round_dir)
    previous = dict(record or {})
    project_id = None
    if record is not None and record.get("server") == server.url and server.project(record["project_id"]) is not None:
        project_id = int(record["project_id"])
    project_id = project_id or server.find_project(title)
    created = project_id is None
    if created:
        project_id = server.create_project(title, config, description=f"kibble queue of {ws.root} round {round_index}",
                                           instructions=instructions, overlap=overlap)
    else:
        current = server.project(project_id) or {}
        if (str(current.get("label_config") or "").strip() != config.strip()  # classes or guidelines changed
                or current.get("maximum_annotations") != int(overlap)):
            server.update_project(project_id, label_config=config, expert_instruction=instructions,
                                  show_instruction=bool(instructions), maximum_annotations=int(overlap))
    if local_storage and serves_local_files(image_url):
        folder = image_folder([str(p) for p in queue["path"]] + [e for c in classes.classes for e in c.examples], ws.data_root)
        attached = [os.path.abspath(p) for p in server.local_storages(project_id)]
        if not any(folder == p or folder.startswith(p.rstrip(os.sep) + os.sep) for p in attached):
            server.add_local_storage(project_id, folder)
    held = {str(t["data"].get("queue_id")): t["id"] for t in server.tasks(project_id) if t["data"].get("queue_id") is not None}
    new = [t for t in tasks if str(t["data"]["queue_id"]) not in held]
    new_ids: list[int] = []
    # in batches, for progress; a push that fails half-way is resumed by pushing again (only the missing rows go)
    with Progress("Label Studio push", len(new), "tasks", logger=log) as bar:
        for start in range(0, len(new), IMPORT_BATCH):
            batch = new[start:start + IMPORT_BATCH]
            new_ids += server.import_tasks(project_id, batch)
            bar.advance(len(batch))
    ids = {**held, **{str(t["data"]["queue_id"]): tid for t, tid in zip(new, new_ids)}}
    queue_ids = [str(q) for q in queue["queue_id"]]
    # tasks of a replaced queue version stay in the record: their answers are still pulled and merged
    earlier = {str(q): int(t) for q, t in (previous.get("tasks") or {}).items()} if int(previous.get("project_id", -1)) == int(project_id) else {}
    record = {
        "server": server.url,
        "project_id": int(project_id),
        "project_title": title,
        "round": int(round_index),
        "classes": classes.names,
        "overlap": int(overlap),
        "pushed_at": now_utc(),
        "tasks": {**earlier, **{q: int(ids[q]) for q in queue_ids}},
    }
    atomic_write_json(round_dir / RECORD, record)
    return {"project_id": int(project_id), "title": title, "created": created, "n_tasks": len(queue_ids),
            "n_imported": len(new), "record": str(round_dir / RECORD), "url": f"{server.url}/projects/{project_id}/data"}


# ---------------------------------------------------------------------------------- pull
def merge_export(ws: Workspace, round_index: int, export: Any, record: Mapping[str, Any], label_config: str,
                 users: Mapping[int, str] | None = None, *, source: str = "review",
                 policy: Mapping | None = None, quality: Mapping | None = None,
                 lock_timeout: float | None = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """Check an export against the round's record and classes, merge it, keep it (the pull minus the network).

    Reading the manifest, the merge and keeping the export run inside the workspace lock; the merge's
    files and the kept export are one transaction."""
    round_dir = ws.round_dir(round_index)
    where = f"Label Studio project {record['project_id']}"
    with workspace_transaction(ws, "kibble labelstudio pull", lock_timeout):
        classes = ClassList.load(ws.classes)
        if list(record.get("classes") or classes.names) != classes.names:
            raise KibbleError(f"{round_dir / RECORD}: pushed with another class list than classes.yaml now has; push the round again")
        check_class_list(label_choices(label_config, f"{where} labeling config"), classes.names, f"{where} labeling config")
        others = other_rounds_tasks(ws, round_index, int(record["project_id"]))
        export = name_annotators(check_export(export, record, f"{where} export", others), users or {})
        manifest = load_manifest(ws.manifest, classes.names)
        reviews = reviews_from_labelstudio(export, manifest, classes.names, queue=load_queues(ws.root / "rounds"),
                                           source=f"{where} export", display_names=classes.display_names)
        summary = merge_reviews(ws, reviews, source=source, policy=policy, origin=f"{where} (round {round_index})", quality=quality,
                                task="kibble labelstudio pull")
        atomic_write_json(round_dir / EXPORT, export)
    return {**summary, "project_id": int(record["project_id"]), "export": str(round_dir / EXPORT)}


def pull(ws: Workspace, round_index: int, server: Any, *, source: str = "review", policy: Mapping | None = None,
         quality: Mapping | None = None, lock_timeout: float | None = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """Export the round's project and merge its annotations (idempotent)."""
    round_dir = ws.round_dir(round_index)
    record = load_record(round_dir)
    if record is None:
        raise KibbleError(f"{round_dir / RECORD}: round {round_index} was not pushed; run `kibble labelstudio push "
                          f"workspace={ws.root} round={round_index}` first")
    if record.get("server") and record["server"] != server.url:
        raise KibbleError(f"{round_dir / RECORD}: round {round_index} was pushed to {record['server']}, not {server.url}; "
                          "set LABEL_STUDIO_URL to that server")
    server.whoami()
    project = server.project(record["project_id"])
    if project is None:
        raise KibbleError(f"Label Studio project {record['project_id']} (recorded in {round_dir / RECORD}) no longer exists "
                          f"on {server.url}; push the round again")
    export = server.export(record["project_id"])
    return merge_export(ws, round_index, export, record, project["label_config"], server.users(),
                        source=source, policy=policy, quality=quality, lock_timeout=lock_timeout)
