"""Where a workspace stands, on one screen (`kibble status`): splits, round, labels changed, queues, flags, drift, next step.

Why a separate reader: after a few rounds the state of a workspace is spread over a dozen files
(state.json, the manifest, the label history, rounds/NNN/{round.json, fold_K/, oof.parquet,
queue.csv, labelstudio.json, labelstudio_export.json, annotator_quality.json, metrics.json},
monitor.json files), and the question a user comes back with is "what do I run next?".

Read-only by design: it never takes the workspace lock (a reader may look while `kibble kfold` holds it
for an hour), never finishes an interrupted transaction (`Workspace.require` would), and writes nothing.
Every file is read tolerantly: one that cannot be read is named in `problems` (with the lock holder,
when a writer is at work), and the rest of the screen still shows.

"Labels changed" means what a user means by it: images whose label now (the label history resolved by
the policy, i.e. the manifest) differs from the label they were imported with. Human answers and the
answers that said `corrected` are counted beside it, since a correction can be outvoted or undone.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from kibble.annotation.assess import QUALITY_FILE
from kibble.labels.lock import describe_holder, read_holder
from kibble.paths import Workspace
from kibble.predictions.store import sidecar_path
from kibble.queue.formats import PUSH_RECORD, QUEUE_CSV, queue_versions
from kibble.transaction import journal_path

EXPORT = "labelstudio_export.json"  # kibble.labelstudio.sync.EXPORT (that module needs the SDK's helpers)
SPLITS = ("train", "val", "test", "pool")
MONITOR_SKIP = {"images", "cache", "history", "rounds", ".kibble", ".hydra", "checkpoints"}  # never hold monitor.json
MONITOR_DEPTH = 4
MONITOR_SHOWN = 3
KFOLD_OVERRIDES_DROPPED = ("workspace", "round", "cv.fold", "cv.assemble_only", "cv.assemble", "hydra")


def workspace_status(ws: Workspace, name: str | None = None) -> dict[str, Any]:
    """Everything `format_status` prints, as a JSON-ready dict; reads files only. `name`: how the user
    wrote the workspace (shown in the next command), default its absolute path."""
    problems: list[str] = []
    holder = _writer(ws)
    where = f" (being written by {holder['text']})" if holder and holder["alive"] else ""

    def read(path: Path, reader: Callable[[Path], Any], default: Any = None) -> Any:
        if not path.is_file():
            return default
        try:
            return reader(path)
        except Exception as err:  # noqa: BLE001 - a status screen shows what it can and names the rest
            why = where or f" ({type(err).__name__}: {(str(err).splitlines() or [''])[0]})"
            problems.append(f"{path.relative_to(ws.root)}: unreadable{why}")
            return default

    state = read(ws.state, _json, {}) or {}
    current = int(state.get("round", 0)) if isinstance(state, dict) else 0
    manifest = read(ws.manifest, pd.read_parquet)
    events = read(ws.label_events, pd.read_parquet)
    pending = read(journal_path(ws.root), _json) if journal_path(ws.root).is_file() else None
    status: dict[str, Any] = {
        "workspace": str(ws.root),
        "name": name or str(ws.root),
        "round": current,
        "writer": holder,
        "pending_transaction": (pending.get("task") if isinstance(pending, dict) else None) or ("a transaction" if journal_path(ws.root).is_file() else None),
        "splits": _splits(manifest),
        "labels": _labels(manifest, events),
    }
    humans = _human_events(events)
    indices = {current} | {int(p.name) for p in (ws.root / "rounds").glob("[0-9][0-9][0-9]") if p.is_dir()}
    indices |= {int(r) for r in humans["round"].dropna() if int(r) >= 0} if humans is not None else set()
    status["rounds"] = [_round(ws, r, humans, read) for r in sorted(indices)]
    status["flagged"] = {r["round"]: r["flagged"] for r in status["rounds"] if r["flagged"]}
    status["monitor"] = _monitors(ws, read)
    status["problems"] = problems
    status["next"] = next_step(status, _last_kfold_overrides(ws, read))
    return status


# ------------------------------------------------------------------------------ pieces
def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _writer(ws: Workspace) -> dict[str, Any] | None:
    """The lock holder file, and whether its process still runs (a killed writer leaves the file behind)."""
    holder = read_holder(ws)
    if not holder:
        return None
    alive = True
    if holder.get("host") in (None, socket.gethostname()) and isinstance(holder.get("pid"), int):
        try:
            os.kill(int(holder["pid"]), 0)
        except ProcessLookupError:
            alive = False
        except OSError:  # another user's live process
            pass
    return {**holder, "alive": alive, "text": describe_holder(holder)}


def _splits(manifest: pd.DataFrame | None) -> dict[str, dict[str, int]]:
    if manifest is None or "split" not in manifest.columns:
        return {}
    labelled = manifest["label"].notna() if "label" in manifest.columns else pd.Series(False, index=manifest.index)
    excluded = manifest["excluded"].fillna(False).astype(bool) if "excluded" in manifest.columns else pd.Series(False, index=manifest.index)
    names = [s for s in SPLITS if (manifest["split"] == s).any()] + sorted(set(manifest["split"].astype(str)) - set(SPLITS))
    out = {}
    for split in names:
        rows = manifest["split"].astype(str) == split
        out[split] = {"rows": int(rows.sum()), "labelled": int((rows & labelled).sum()),
                      "unlabelled": int((rows & ~labelled).sum()), "excluded": int((rows & excluded).sum())}
    return out


def _human_events(events: pd.DataFrame | None) -> pd.DataFrame | None:
    if events is None or not {"source", "sample_id"} <= set(events.columns):
        return None
    humans = events[events["source"].astype(str) != "import"].copy()
    humans["round"] = pd.to_numeric(humans["round"], errors="coerce") if "round" in humans.columns else float("nan")
    return humans


def _labels(manifest: pd.DataFrame | None, events: pd.DataFrame | None) -> dict[str, int] | None:
    if manifest is None or events is None or not {"sample_id", "label"} <= set(manifest.columns):
        return None
    imported = events[events["source"].astype(str) == "import"].drop_duplicates("sample_id", keep="last")
    joined = manifest[["sample_id", "label"]].merge(imported[["sample_id", "label"]], on="sample_id", how="left",
                                                    suffixes=("", "_imported"), indicator=True)
    was_imported = joined["_merge"] == "both"
    now, then = joined["label"].astype(object), joined["label_imported"].astype(object)
    differs = now.where(now.notna(), None).astype(str) != then.where(then.notna(), None).astype(str)
    humans = _human_events(events)
    verdicts = humans["verdict"].astype(str) if humans is not None and "verdict" in humans.columns else pd.Series(dtype=str)
    return {
        "imported": int(was_imported.sum()),
        "changed": int((was_imported & differs).sum()),
        "from_pool": int((~was_imported & now.notna()).sum()),
        "excluded": int(manifest["excluded"].fillna(False).astype(bool).sum()) if "excluded" in manifest.columns else 0,
        "answers": int(len(humans)) if humans is not None else 0,
        "answered_images": int(humans["sample_id"].nunique()) if humans is not None else 0,
        "corrected": int((verdicts == "corrected").sum()),
    }


def _round(ws: Workspace, r: int, humans: pd.DataFrame | None, read: Callable) -> dict[str, Any]:
    """One round's files: folds done, OOF, metrics, the queue and where it went (Label Studio, merged)."""
    rd = ws.round_dir(r)
    info = read(rd / "round.json", _json, {}) or {}
    done = sum(1 for meta in rd.glob("fold_*/heldout.meta.json") if (read(meta, _json, {}) or {}).get("complete"))
    oof_meta = read(sidecar_path(rd / "oof.parquet"), _json, {}) or {}
    metrics = read(rd / "metrics.json", _json, {}) or {}
    out: dict[str, Any] = {
        "round": r, "exists": rd.is_dir(), "n_folds": info.get("n_folds"), "folds_done": done,
        "oof": (rd / "oof.parquet").is_file() and oof_meta.get("complete", True) is not False,
        "metrics": {k: metrics[k] for k in ("oof_accuracy_given", "val_accuracy", "test_accuracy", "noise_in_train") if isinstance(metrics.get(k), (int, float))},
        "queue": None, "pushed": None, "pulled": None, "merged": None, "flagged": [],
    }
    queue = read(rd / QUEUE_CSV, lambda p: pd.read_csv(p, dtype=str, keep_default_na=False))
    if queue is not None:
        kinds = queue["kind"].value_counts().to_dict() if "kind" in queue.columns else {}
        gold = read(rd / "gold.csv", lambda p: pd.read_csv(p, dtype=str, keep_default_na=False))
        out["queue"] = {"n": int(len(queue)), "kinds": {str(k): int(v) for k, v in kinds.items() if k},
                        "versions": len(queue_versions(rd)), "gold": int(len(gold)) if gold is not None else 0}
    record = read(rd / PUSH_RECORD, _json)
    if isinstance(record, dict):
        out["pushed"] = {"tasks": len(record.get("tasks") or {}), "project_id": record.get("project_id"),
                         "server": record.get("server"), "at": record.get("pushed_at")}
    export = read(rd / EXPORT, _json)
    if isinstance(export, list):
        answered = [t for t in export if isinstance(t, dict) and any(not a.get("was_cancelled") for a in (t.get("annotations") or []))]
        out["pulled"] = {"tasks": len(export), "annotated": len(answered)}
    if humans is not None:
        mine = humans[humans["round"] == r]
        if len(mine):
            queued = set(queue["sample_id"]) if queue is not None and "sample_id" in queue.columns else set()
            out["merged"] = {"answers": int(len(mine)), "images": int(mine["sample_id"].nunique()),
                             "corrected": int((mine["verdict"].astype(str) == "corrected").sum()) if "verdict" in mine.columns else 0,
                             "queued_answered": len(queued & set(mine["sample_id"].astype(str))), "queued": len(queued)}
    quality = read(rd / QUALITY_FILE, _json, {}) or {}
    reasons = {str(a.get("annotator")): a.get("flag_reason") or "" for a in quality.get("annotators") or [] if isinstance(a, dict)}
    out["flagged"] = [{"annotator": str(a), "reason": reasons.get(str(a), "")} for a in quality.get("flagged") or []]
    return out


def _monitors(ws: Workspace, read: Callable) -> list[dict[str, Any]]:
    """monitor.json files under the workspace (`kibble monitor`'s run dir or an out_dir inside it), newest first."""
    found: list[Path] = []
    stack = [(ws.root, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.is_file() and entry.name == "monitor.json":
                found.append(Path(entry.path))
            elif entry.is_dir(follow_symlinks=False) and depth < MONITOR_DEPTH and entry.name not in MONITOR_SKIP and not entry.name.startswith("fold_"):
                stack.append((Path(entry.path), depth + 1))
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    out = []
    for path in found:
        result = read(path, _json, {}) or {}
        if "verdict" not in result:
            continue
        fired = [c.get("name") for c in result.get("checks") or [] if isinstance(c, dict) and c.get("drifted") and c.get("decides")]
        out.append({"path": str(path.parent.relative_to(ws.root)), "verdict": str(result["verdict"]), "drifted": bool(result.get("drifted")),
                    "n_current": result.get("n_current"), "n_reference": result.get("n_reference"), "fired": fired,
                    "queued": (result.get("queue") or {}).get("n"),
                    "at": datetime.fromtimestamp(path.stat().st_mtime).astimezone().isoformat(timespec="seconds")})
    return out


def _last_kfold_overrides(ws: Workspace, read: Callable) -> list[str]:
    """The overrides of the latest `kibble kfold` run (its Hydra record), minus the round-specific ones:
    the next round must train the same way (an interrupted fold refuses other settings)."""
    runs = sorted((ws.root / "runs" / "kfold").glob("*/.hydra/overrides.yaml"))
    if not runs:
        return []
    import yaml

    values = read(runs[-1], lambda p: yaml.safe_load(p.read_text()), []) or []
    return [str(v) for v in values if isinstance(v, str) and not v.lstrip("+~").split("=", 1)[0].startswith(KFOLD_OVERRIDES_DROPPED)]


# ------------------------------------------------------------------------------ next step
def next_step(status: dict[str, Any], kfold_overrides: list[str] = ()) -> dict[str, str]:
    """The command to run next and why, from the current round's files (the loop of DESIGN §1)."""
    w = f"workspace={shlex.quote(status['name'])}"
    writer = status.get("writer")
    if writer and writer["alive"]:
        return {"command": "", "why": f"{writer['text']} is writing this workspace; run `kibble status {w}` again when it is done"}
    r = status["round"]
    rnd = next((x for x in status["rounds"] if x["round"] == r), None) or {"folds_done": 0, "n_folds": None, "oof": False, "queue": None, "pushed": None, "pulled": None}
    train = (status.get("splits") or {}).get("train", {}).get("labelled", 0)
    if not rnd["oof"]:
        if not train:
            return {"command": "", "why": "no labelled train images, so there is nothing to cross-validate: label a seed set "
                                         "(or re-import with labels, e.g. pool.labels_per_class=2) first"}
        extra = "".join(f" {shlex.quote(o)}" for o in kfold_overrides)
        n = rnd["n_folds"]
        if rnd["folds_done"]:
            why = f"round {r}: {rnd['folds_done']} of {n or '?'} folds done; re-running resumes and assembles the OOF"
        else:
            why = f"round {r} has no out-of-fold predictions yet"
        if extra:
            why += " (with the overrides of your last kfold run)"
        return {"command": f"kibble kfold {w}{extra}", "why": why}
    queue = rnd["queue"]
    if queue is None:
        return {"command": f"kibble queue {w}", "why": f"round {r} has its OOF but no relabel queue"}
    if queue["n"] == 0:
        return {"command": f"kibble train {w}", "why": f"round {r}'s queue is empty: nothing left to review; train the final model"}
    if rnd["pushed"]:
        return {"command": f"kibble labelstudio pull {w} round={r}",
                "why": f"round {r}'s queue is in Label Studio (project {rnd['pushed']['project_id']}); pull the answers when annotators are done"}
    where = f"rounds/{r:03d}/{QUEUE_CSV}"
    return {"command": f"kibble merge {w} reviews=<answers to {where}>",
            "why": f"round {r}'s queue of {queue['n']} images waits for reviews: hand {where} to annotators "
                   f"(or `kibble labelstudio push {w}`), then merge their CSV"}


# ------------------------------------------------------------------------------ one screen
def _cell(value: Any) -> str:
    return "-" if value in (None, "", False) else str(value)


def _round_row(x: dict[str, Any], current: int) -> list[str]:
    done = x["n_folds"] if x["oof"] and x["n_folds"] else x["folds_done"]  # an assembled OOF had every fold (fold dirs may be gone)
    folds = f"{done}/{x['n_folds'] or '?'}" if x["n_folds"] or done else "-"
    m = x["metrics"]
    acc = "/".join(f"{m[k]:.3f}" for k in ("oof_accuracy_given", "test_accuracy") if k in m) if x["oof"] else "-"
    q = x["queue"]
    queue = None
    if q:
        queue = str(q["n"]) + (f" ({', '.join(f'{v} {k}' for k, v in q['kinds'].items())})" if len(q["kinds"]) > 1 else "")
        queue += f" v{q['versions'] + 1}" if q["versions"] else ""
        queue += f", {q['gold']} gold" if q["gold"] else ""
    p = x["pushed"]
    pushed = f"{p['tasks']} tasks, project {p['project_id']}" if p else None
    pulled = f"{x['pulled']['annotated']}/{x['pulled']['tasks']} annotated" if x["pulled"] else None
    g = x["merged"]
    merged = None
    if g:
        merged = f"{g['answers']} answers, {g['corrected']} corrected"
        merged += f" ({g['queued_answered']}/{g['queued']} queued)" if g["queued"] else ""
    mark = "*" if x["round"] == current else " "
    return [f"{x['round']:03d}{mark}", folds, "yes" if x["oof"] else "-", acc, _cell(queue), _cell(pushed), _cell(pulled), _cell(merged)]


def _table(header: list[str], rows: list[list[str]], right: int = 0) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    fmt = lambda row: "  " + "  ".join(str(c).rjust(w) if 0 < i <= right else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
    return [fmt(header).rstrip(), *(fmt(r).rstrip() for r in rows)]


def format_status(d: dict[str, Any]) -> str:
    """The status dict as one screen of text."""
    lines = [f"workspace {d['workspace']}: round {d['round']}"]
    if d.get("writer"):
        w = d["writer"]
        lines.append(f"  (being written by {w['text']}: numbers may change under it)" if w["alive"]
                     else f"  (a lock holder file of {w['text']} remains; that process is gone)")
    if d.get("pending_transaction"):
        lines.append(f"  (an interrupted {d['pending_transaction']} is committed but not applied; the next kibble writer finishes it)")
    if d["splits"]:
        rows = [[s, *(str(v[k]) for k in ("rows", "labelled", "unlabelled", "excluded"))] for s, v in d["splits"].items()]
        lines += ["", *_table(["split", "rows", "labelled", "unlabelled", "excluded"], rows, right=4)]
    lab = d.get("labels")
    if lab:
        lines += ["", f"labels changed so far: {lab['changed']} of {lab['imported']} imported labels differ from the import now"
                      + (f", {lab['from_pool']} pool images labelled" if lab["from_pool"] else "")
                      + (f", {lab['excluded']} excluded" if lab["excluded"] else ""),
                  f"  {lab['answers']} human answers on {lab['answered_images']} images, {lab['corrected']} of them 'corrected'"]
    header = ["round", "folds", "oof", "acc oof/test", "queue", "pushed (Label Studio)", "pulled", "merged"]
    lines += ["", *_table(header, [_round_row(x, d["round"]) for x in d["rounds"]]), "  (* current round)"]
    flagged = [f"round {r}: " + ", ".join(f"{f['annotator']}" + (f" ({f['reason']})" if f["reason"] else "") for f in fs)
               for r, fs in sorted(d["flagged"].items())]
    lines += ["", "flagged annotators: " + ("; ".join(flagged) if flagged else "none")]
    mons = d["monitor"]
    if not mons:
        lines.append("drift: no monitor.json under the workspace (`kibble monitor ... out_dir=` elsewhere is not seen)")
    else:
        lines.append(f"drift ({len(mons)} monitor run{'s' if len(mons) > 1 else ''}, newest first):")
        for m in mons[:MONITOR_SHOWN]:
            fired = f"; {', '.join(m['fired'])}" if m["fired"] else ""
            lines.append(f"  {m['verdict'].upper()}  {m['path']}  {m['n_current']} current vs {m['n_reference']} reference{fired}; "
                         f"{m['queued'] if m['queued'] is not None else '?'} queued; {m['at']}")
        if len(mons) > MONITOR_SHOWN:
            lines.append(f"  ... {len(mons) - MONITOR_SHOWN} older")
    for problem in d.get("problems") or []:
        lines.append(f"! {problem}")
    nxt = d["next"]
    lines += ["", f"next: {nxt['command'] or '(no kibble command)'}", f"  {nxt['why']}"]
    return "\n".join(lines)
