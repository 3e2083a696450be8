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
from kibble.values import is_in
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


def assess_rounds(ws: Workspace, old: pd.DataFrame, batch: pd.DataFrame, n_classes: int, cfg: Mapping | None) -> dict[int, dict]:
    """Quality per round the new answers (`batch`, event columns) touch: {round: {quality, agreement, gold}}; writes nothing."""
    cfg = normalise_quality(cfg)
    out: dict[int, dict] = {}
    crowd_new = batch[batch["source"].astype(str).isin(CROWD_SOURCES).to_numpy(dtype=bool)]
    new_rounds = crowd_new["round"].astype("int64").to_numpy()
    for rnd in sorted(set(new_rounds.tolist())):
        recorded = old[(pd.to_numeric(old["round"], errors="coerce") == rnd) & old["source"].astype(str).isin(CROWD_SOURCES)] if len(old) else old
        cols = ("sample_id", "label", "verdict", "annotator", "source", "lead_time")  # lead_time: NaN in pre-lead_time files
        answers = pd.concat([
            pd.DataFrame({c: recorded[c].to_numpy() for c in cols}) if len(recorded) else None,
            pd.DataFrame({c: crowd_new[c].to_numpy(dtype=object)[new_rounds == rnd] if c in crowd_new else None for c in cols}),
        ], ignore_index=True)
        answers = answers.drop_duplicates(["sample_id", "annotator", "source"], keep="last")
        gold = load_gold([ws.round_dir(rnd)])
        table, agree = annotator_quality(answers, gold, n_classes, threshold=cfg["threshold"], min_gold=cfg["min_gold"])
        out[rnd] = {"quality": table, "agreement": agree, "gold": gold, "config": cfg}
    return out


def tagged_notes(batch: pd.DataFrame, assessed: dict[int, dict]) -> np.ndarray:
    """The new answers' notes with each crowd answer's quality tag appended (one tag per round, annotator
    and gold-item flag; one `with_tag` per distinct note and tag)."""
    notes = batch["note"].to_numpy(dtype=object).copy()
    rounds = batch["round"].astype("int64").to_numpy()
    crowd = batch["source"].astype(str).isin(CROWD_SOURCES).to_numpy(dtype=bool)
    annotators = batch["annotator"].to_numpy(dtype=object)
    sample_ids = batch["sample_id"].to_numpy(dtype=object)
    done: dict[tuple, str] = {}
    for rnd, info in assessed.items():
        rows = {str(r["annotator"]): r for r in info["quality"].to_dict("records")}
        gold = set(info["gold"]["sample_id"].astype(str))
        where = np.flatnonzero(crowd & (rounds == rnd))
        is_gold = is_in(sample_ids[where].astype(str), list(gold)) if gold else np.zeros(len(where), dtype=bool)
        tags = {}
        for i, gold_item in zip(where, is_gold):
            who = str(annotators[i])
            if (who, gold_item) not in tags:
                tags[who, gold_item] = quality_tag(rows.get(who), gold_item=bool(gold_item))
            key = (notes[i], tags[who, gold_item])
            if key not in done:
                done[key] = with_tag(*key)
            notes[i] = done[key]
    return notes


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

