"""After a merge: per-round annotator quality (tags on the new events) and guideline feedback files.

Called by `labels/merge.py`. For every round a merge adds answers to, the round's crowd answers
(sources review/vendor/simulated: the already recorded ones plus the new batch) are scored against
the round's gold (`rounds/NNN/gold.csv`): `quality.annotator_quality`. Each new event's note gets
the quality tag (weight, gold accuracy, flagged; `gold_item` on gold questions) that the label
policy reads (`policy.annotator_weighting`). Files: `rounds/NNN/annotator_quality.json` and
`rounds/NNN/guideline_feedback.csv`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from kibble import KibbleError
from kibble.io import atomic_write_csv, atomic_write_text
from kibble.paths import Workspace
from kibble.annotation.feedback import guideline_feedback
from kibble.annotation.gold import load_gold
from kibble.annotation.quality import annotator_quality, quality_tag, with_tag

CROWD_SOURCES = ("review", "vendor", "simulated")
QUALITY_FILE = "annotator_quality.json"
FEEDBACK_FILE = "guideline_feedback.csv"
QUALITY_KEYS = ("threshold", "min_gold")


def normalise_quality(cfg: Mapping | None) -> dict[str, Any]:
    raw = dict(cfg or {})
    unknown = sorted(set(raw) - set(QUALITY_KEYS))
    if unknown:
        raise KibbleError(f"quality: unknown key(s) {unknown}; known keys are {list(QUALITY_KEYS)}")
    return {"threshold": float(raw.get("threshold", 0.8)), "min_gold": int(raw.get("min_gold", 5))}


def assess_rounds(ws: Workspace, old: pd.DataFrame, records: list[dict], n_classes: int, cfg: Mapping | None) -> dict[int, dict]:
    """Quality per round the new records touch: {round: {quality, agreement, gold}}; writes nothing."""
    cfg = normalise_quality(cfg)
    out: dict[int, dict] = {}
    crowd_new = [r for r in records if r["source"] in CROWD_SOURCES]
    for rnd in sorted({int(r["round"]) for r in crowd_new}):
        recorded = old[(pd.to_numeric(old["round"], errors="coerce") == rnd) & old["source"].astype(str).isin(CROWD_SOURCES)] if len(old) else old
        cols = ("sample_id", "label", "verdict", "annotator", "source", "lead_time")  # lead_time: NaN in pre-lead_time files
        answers = pd.concat([
            pd.DataFrame({c: recorded[c].to_numpy() for c in cols}) if len(recorded) else None,
            pd.DataFrame([{c: r.get(c) for c in cols} for r in crowd_new if int(r["round"]) == rnd], columns=list(cols)),
        ], ignore_index=True)
        answers = answers.drop_duplicates(["sample_id", "annotator", "source"], keep="last")
        gold = load_gold([ws.round_dir(rnd)])
        table, agree = annotator_quality(answers, gold, n_classes, threshold=cfg["threshold"], min_gold=cfg["min_gold"])
        out[rnd] = {"quality": table, "agreement": agree, "gold": gold, "config": cfg}
    return out


def tag_records(records: list[dict], assessed: dict[int, dict]) -> None:
    """Append each new crowd answer's quality tag to its note (in place)."""
    rows = {rnd: {str(r["annotator"]): r for r in info["quality"].to_dict("records")} for rnd, info in assessed.items()}
    gold = {rnd: set(info["gold"]["sample_id"].astype(str)) for rnd, info in assessed.items()}
    for rec in records:
        rnd = int(rec["round"])
        if rnd not in assessed or rec["source"] not in CROWD_SOURCES:
            continue
        row = rows[rnd].get(str(rec["annotator"]))
        rec["note"] = with_tag(rec.get("note"), quality_tag(row, gold_item=str(rec["sample_id"]) in gold[rnd]))


def write_assessments(ws: Workspace, assessed: dict[int, dict], events: pd.DataFrame) -> dict[int, list[str]]:
    """annotator_quality.json + guideline_feedback.csv per assessed round; returns the flagged annotators."""
    flagged = {}
    for rnd, info in assessed.items():
        round_dir = ws.round_dir(rnd)
        table = info["quality"]
        flagged[rnd] = sorted(table.loc[table["flagged"], "annotator"].astype(str))
        payload = {
            "round": rnd, "config": info["config"], "n_gold_items": int(len(info["gold"])),
            "annotators": _records(table),
            "agreement": {k: v for k, v in info["agreement"].items() if k != "per_annotator"},
            "flagged": flagged[rnd],
        }
        atomic_write_text(round_dir / QUALITY_FILE, json.dumps(_jsonable(payload), indent=2))
        round_events = events[pd.to_numeric(events["round"], errors="coerce") == rnd]
        queue = pd.read_csv(round_dir / "queue.csv", dtype=str, keep_default_na=False) if (round_dir / "queue.csv").is_file() else None
        atomic_write_csv(round_dir / FEEDBACK_FILE, guideline_feedback(round_events, queue))
    return flagged


def _records(frame: pd.DataFrame) -> list[dict]:
    return [{k: _jsonable(v) for k, v in rec.items()} for rec in frame.to_dict("records")]


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value

