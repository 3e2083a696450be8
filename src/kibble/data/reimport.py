"""`kibble import` as library code: build the whole import in memory, then write it under the workspace lock.

Why: an import used to delete the label history and the rounds before steps that could still fail
(the taxonomy lookup), so a typo lost answers people were paid for. Now `plan_import` does everything
that can fail — the source's rows, the manifest checks, the pool, every image opened, the taxonomy —
without touching the workspace; `apply_import` then only writes. Three modes:

- `new`: a fresh workspace (an imported one is refused with one line);
- `replace` (`overwrite=true`): the previous history, manifest, classes, state and rounds are archived
  under `W/history/NNN-<timestamp>/` (kibble.labels.archive) and the human answers about samples that
  still exist are carried over (unless `keep_history=false`), their labels re-resolved by the saved policy;
- `append`: source rows with a new sample_id are added (with their split and label; `pool.folder`
  images as `pool`); existing rows, labels, events and rounds stay as they are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from kibble import KibbleError
from kibble.data.classes import ClassList
from kibble.data.images import scan_images
from kibble.data.manifest import classes_without_train, load_manifest, resolve_image_path, save_manifest, validate_manifest
from kibble.data.sources import inject_noise, make_pool, pool_from_folder
from kibble.data.taxonomy import taxonomy_for
from kibble.io import atomic_write_json, atomic_write_parquet, read_json
from kibble.labels.archive import archive_workspace, carried_history
from kibble.labels.history import append_events, initial_events
from kibble.labels.lock import DEFAULT_TIMEOUT, workspace_transaction
from kibble.labels.merge import label_view
from kibble.labels.policy import resolve_labels
from kibble.labels.policy_file import read_policy_file
from kibble.paths import Workspace
from kibble.queue.new_labels import pool_rows

MODES = ("new", "replace", "append")


@dataclass
class ImportPlan:
    """Everything an import will write, checked: the rows, the class list, what was skipped and said."""

    mode: str
    frame: pd.DataFrame
    classes: ClassList
    taxonomy: str | None
    data_root: Path
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    n_existing: int = 0  # append: rows already in the workspace (left as they are)
    source: str = "source"


def check_workspace(ws: Workspace, mode: str) -> None:
    """The mode fits the workspace: `new` needs an empty one, `append` an imported one (before reading any source)."""
    if mode == "new" and ws.manifest.is_file():
        raise KibbleError(f"{ws.manifest}: workspace already imported; use a new workspace, mode=append to add images, "
                          "or overwrite=true to re-import (the history is archived and its answers carried over)")
    if mode == "append" and not ws.manifest.is_file():
        raise KibbleError(f"{ws.manifest}: mode=append adds to an imported workspace, and {ws.root} has none; import it first (mode=new)")


def import_mode(mode: str | None, overwrite: bool) -> str:
    """The mode of `kibble import mode=... [overwrite=true]`; overwrite=true is `replace`."""
    mode = str(mode or "new")
    if mode not in MODES:
        raise KibbleError(f"mode={mode}: use one of {list(MODES)} (append adds new images, replace re-imports keeping the answers)")
    if overwrite and mode == "append":
        raise KibbleError("mode=append adds images and replaces nothing; drop overwrite=true (or use mode=replace)")
    return "replace" if overwrite else mode


def plan_import(ws: Workspace, frame: pd.DataFrame, names: list[str], display: Mapping[str, str] | None, data_root: str | Path, *,
                mode: str = "new", source: str = "source", pool: Mapping[str, Any] | None = None, on_bad_image: str = "fail",
                noise: Mapping[str, Any] | None = None, taxonomy: str | None = "auto", origin: str | None = None,
                check_images: str = "decode") -> ImportPlan:
    """Check the whole import without writing: rows, pool, images, classes (taxonomy). Raises one line.

    `origin`: what the report names as the source (the importer's dotted path)."""
    check_workspace(ws, mode)
    notes = list(frame.attrs.get("notes", []))  # e.g. a test split drawn at random: said, not silent
    data_root = Path(data_root).resolve()
    frame = validate_manifest(frame, names, source=source)
    pool_rows(frame, source=source)  # a labelled pool row is an error
    pool = dict(pool or {})
    existing = None
    if mode == "append":
        classes, found = ClassList.load(ws.classes), None
        existing = load_manifest(ws.manifest, classes.names)
    if pool.get("folder"):  # new, unlabeled images for active learning
        if "true_label" not in frame.columns:
            frame["true_label"] = frame["label"]
        pool_names = classes.names if existing is not None else names
        frame = validate_manifest(pd.concat([frame, pool_from_folder(pool["folder"], pool_names)], ignore_index=True), None,
                                  source=f"pool.folder={pool['folder']}")
    if existing is not None:
        frame = _new_rows(frame, existing, data_root, ws.data_root.resolve(), source)
        frame = validate_manifest(frame, classes.names, source=f"{source} (rows new to {ws.root})")
        data_root = ws.data_root.resolve()
    paths = [resolve_image_path(p, data_root) for p in frame["path"]] if check_images != "none" else []
    bad = scan_images(paths, on_bad_image, progress=True, check=check_images)
    if bad:
        frame = frame.drop(frame.index[list(bad)]).reset_index(drop=True)
    if pool.get("fraction") or pool.get("labels_per_class") is not None:
        frame = make_pool(frame, pool.get("fraction"), pool.get("labels_per_class"), int(pool.get("seed", 0)))
    noise = dict(noise or {})
    if float(noise.get("rate", 0.0)) > 0:
        frame = inject_noise(frame, classes.names if existing is not None else names, float(noise["rate"]), int(noise.get("seed", 0)))
    if existing is None:  # a shipped taxonomy (Stanford Dogs / Imagewoof breed groups) when the class set matches
        classes, found = taxonomy_for(names, dict(display or {}), taxonomy)
    frame = validate_manifest(frame, classes.names, source=source)
    empty = classes_without_train(frame if existing is None else pd.concat([existing, frame], ignore_index=True), classes.names)
    if empty:
        notes.append(f"warning: {len(empty)} class(es) without train images: {empty[:5]}{' ...' if len(empty) > 5 else ''}; "
                     "a model cannot learn them until some are labelled")
    return ImportPlan(mode, frame, classes, found, data_root, {str(paths[i]): r for i, r in bad.items()}, notes,
                      0 if existing is None else len(existing), origin or source)


def _new_rows(frame: pd.DataFrame, existing: pd.DataFrame, source_root: Path, ws_root: Path, source: str) -> pd.DataFrame:
    """The source rows whose sample_id is new, their paths made relative to the workspace's data root.

    A sample_id already in the workspace must name the same file; another file under an old id is
    refused (appending never replaces an image)."""
    absolute = [os.path.normpath(resolve_image_path(p, source_root)) for p in frame["path"]]
    old = {sid: os.path.normpath(resolve_image_path(p, ws_root)) for sid, p in zip(existing["sample_id"], existing["path"])}
    clashes = [(sid, old[sid], a) for sid, a in zip(frame["sample_id"], absolute) if sid in old and old[sid] != a]
    if clashes:
        sid, was, now = clashes[0]
        raise KibbleError(f"{source}: sample_id {sid!r} is already in the workspace as {was}, not {now} ({len(clashes)} such); "
                          "mode=append only adds new sample_ids, give the new images ids of their own")
    new = ~frame["sample_id"].isin(old)
    rows = frame[new].copy()
    rows["path"] = [_relative_to(a, ws_root) for a, keep in zip(absolute, new) if keep]
    return rows.reset_index(drop=True)


def _relative_to(path: str, root: Path) -> str:
    p = Path(path)
    return p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p)


def stored_root(data_root: Path, ws: Workspace) -> str:
    """The data root as state.json keeps it: relative inside the workspace (movable), else absolute."""
    try:
        return os.path.relpath(data_root, ws.root) if data_root.is_relative_to(ws.root) else str(data_root)
    except ValueError:
        return str(data_root)


def apply_import(ws: Workspace, plan: ImportPlan, *, keep_history: bool = True, task: str = "kibble import",
                 lock_timeout: float | None = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """Write a checked plan under the workspace lock; returns the import report (also in import_report.json).

    Everything it writes (and the archive of a re-import) is one transaction: a crash leaves the old
    workspace or the new one."""
    with workspace_transaction(ws, task, lock_timeout):  # nobody merges into what is being replaced
        imported = ws.manifest.is_file()
        if plan.mode == "new" and imported:  # another import got here first
            raise KibbleError(f"{ws.manifest}: workspace already imported meanwhile; use mode=append or overwrite=true")
        if plan.mode == "append":
            return _append(ws, plan)
        return _replace(ws, plan, keep_history) if imported or ws.label_events.is_file() else _create(ws, plan)


def _report(plan: ImportPlan, **extra: Any) -> dict[str, Any]:
    frame = plan.frame
    noisy = int((frame["label"].notna() & (frame["label"] != frame["true_label"])).sum()) if "true_label" in frame else 0
    notes = list(plan.notes)
    if "true_label" in frame and frame["true_label"].notna().any():
        notes.append(f"true_label kept ({noisy} labels differ from it): read only by the simulated annotator and detection metrics")
    return {"source": plan.source, "mode": plan.mode, "n_images": int(len(frame)), "n_classes": len(plan.classes), "taxonomy": plan.taxonomy,
            "splits": frame["split"].value_counts().to_dict(), "skipped": plan.skipped, "noisy_labels": noisy, "notes": notes, **extra}


def _create(ws: Workspace, plan: ImportPlan) -> dict[str, Any]:
    ws.root.mkdir(parents=True, exist_ok=True)
    plan.classes.save(ws.classes)
    atomic_write_parquet(ws.label_events, initial_events(plan.frame))
    save_manifest(plan.frame, ws.manifest, plan.classes.names)
    ws.update_state(round=0, data_root=stored_root(plan.data_root, ws))
    report = _report(plan)
    atomic_write_json(ws.root / "import_report.json", report)
    return report


def _replace(ws: Workspace, plan: ImportPlan, keep_history: bool) -> dict[str, Any]:
    """Archive the old generation, carry its human answers about surviving samples, write the new one."""
    carried, left = carried_history(ws, plan.frame, plan.classes.names)
    if not keep_history:
        carried, left = carried.iloc[0:0], left + len(carried)
    saved = read_policy_file(ws)
    events = initial_events(plan.frame)
    if len(carried):
        events = pd.concat([events, carried[events.columns]], ignore_index=True)
    manifest, _ = label_view(plan.frame, resolve_labels(events, saved["policy"] if saved else None))
    manifest = validate_manifest(manifest, plan.classes.names, source=f"{ws.manifest} (re-import)")
    old_round = ws.current_round()
    archive = archive_workspace(ws)  # copies first: the live history is replaced below, never removed
    plan.classes.save(ws.classes)
    atomic_write_parquet(ws.label_events, events)
    save_manifest(manifest, ws.manifest, plan.classes.names)
    ws.update_state(round=old_round if len(carried) else 0, data_root=stored_root(plan.data_root, ws))  # round numbers go on
    report = _report(plan, archive=str(archive.relative_to(ws.root)), events_carried=int(len(carried)), events_left_in_archive=int(left))
    atomic_write_json(ws.root / "import_report.json", report)
    return report


def _append(ws: Workspace, plan: ImportPlan) -> dict[str, Any]:
    """Add the plan's (new) rows; the manifest and the history are read here, inside the lock."""
    classes = ClassList.load(ws.classes)
    existing = load_manifest(ws.manifest, classes.names)
    clash = sorted(set(existing["sample_id"]) & set(plan.frame["sample_id"]))
    if clash:  # added by another writer since the plan was made
        raise KibbleError(f"sample_id {clash[0]!r} was added to {ws.manifest} meanwhile; run the append again")
    report = _report(plan, n_existing=int(len(existing)))
    if len(plan.frame):
        rows = plan.frame.copy()
        if "excluded" in existing.columns:
            rows["excluded"] = False
        append_events(ws.label_events, initial_events(rows))
        save_manifest(pd.concat([existing, rows], ignore_index=True), ws.manifest, classes.names)
    path = ws.root / "import_report.json"
    first = read_json(path) if path.is_file() else {}
    atomic_write_json(path, {**first, "appends": list(first.get("appends") or []) + [report]})
    return report
