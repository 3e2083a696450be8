"""Gold questions: items whose label an expert confirmed, mixed into a queue to measure annotators.

Gold items come from the label history (`source=expert` events with verdict confirmed/corrected,
the latest per sample) and/or a configured list (`gold.list`: a CSV `sample_id[,label]`; without a
label the manifest's current label is the answer). `mix_gold` shuffles them into a queue at
`gold.rate` (the share of the mixed queue that is gold), looking like every other row (same
columns, a real row's strategy/score/reason, the model's best class other than its label as the
suggestion, ranks renumbered), so an annotator cannot tell them apart. Which rows are gold is written only to `rounds/NNN/gold.csv` (`GOLD_COLUMNS`), never to the
queue files the annotator sees.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kibble import KibbleError
from kibble.values import is_missing

GOLD_FILE = "gold.csv"
GOLD_COLUMNS = ["queue_id", "round", "sample_id", "gold_label", "origin"]
GOLD_KEYS = ("rate", "list", "seed")


def normalise_gold(cfg: Mapping | None) -> dict[str, Any]:
    """`{rate, list, seed}` checked; rate 0 (default) mixes nothing."""
    raw = dict(cfg or {})
    unknown = sorted(set(raw) - set(GOLD_KEYS))
    if unknown:
        raise KibbleError(f"gold: unknown key(s) {unknown}; known keys are {list(GOLD_KEYS)}")
    rate = float(raw.get("rate") or 0.0)
    if not 0.0 <= rate < 1.0:
        raise KibbleError(f"gold.rate={rate}; use the share of the queue that is gold, in [0, 1) (e.g. 0.1)")
    return {"rate": rate, "list": raw.get("list") or None, "seed": int(raw.get("seed") or 0)}


def read_gold_list(path: str | Path, manifest: pd.DataFrame, class_names: list[str]) -> pd.DataFrame:
    """A gold list CSV `sample_id[,label]` -> `sample_id, gold_label, origin=list`; unknown ids/classes fail."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise KibbleError(f"gold.list={path}: file not found; give a CSV with a sample_id column (and optionally label)")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise KibbleError(f"{path}: not a readable CSV ({str(err).splitlines()[0]}); a gold list needs a sample_id column") from err
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    if "sample_id" not in raw.columns:
        raise KibbleError(f"{path}: no sample_id column (found {list(raw.columns)}); a gold list is a CSV sample_id[,label]")
    current = dict(zip(manifest["sample_id"].astype(str), manifest["label"]))
    known = set(class_names)
    rows = []
    for i, rec in enumerate(raw.to_dict("records")):
        sid = str(rec["sample_id"]).strip()
        loc = f"{path} line {i + 2}"
        if sid not in current:
            raise KibbleError(f"{loc}: unknown sample_id {sid!r}; a gold item must be a sample of the workspace manifest")
        label = str(rec.get("label") or "").strip() or (None if is_missing(current[sid]) else str(current[sid]))
        if label is None:
            raise KibbleError(f"{loc}: sample {sid!r} has no label; give the gold label in a label column")
        if label not in known:
            raise KibbleError(f"{loc}: unknown class {label!r}; use a class name from classes.yaml")
        rows.append({"sample_id": sid, "gold_label": label, "origin": "list"})
    frame = pd.DataFrame(rows, columns=["sample_id", "gold_label", "origin"])
    dupes = frame[frame.duplicated("sample_id", keep=False)]
    if len(dupes.drop_duplicates(["sample_id", "gold_label"])) > dupes["sample_id"].nunique():
        raise KibbleError(f"{path}: sample {dupes['sample_id'].iloc[0]!r} has two different gold labels; keep one")
    return frame.drop_duplicates("sample_id").reset_index(drop=True)


def gold_pool(events: pd.DataFrame, gold_list: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every gold item: expert-confirmed samples (latest expert answer) and the configured list (wins)."""
    cols = ["sample_id", "gold_label", "origin"]
    parts = []
    if events is not None and len(events):
        expert = events[(events["source"].astype(str) == "expert") & events["verdict"].isin(["confirmed", "corrected"]) & events["label"].notna()]
        if len(expert):
            expert = expert.assign(_pos=np.arange(len(expert))).sort_values(["round", "_pos"], kind="stable")
            last = expert.groupby("sample_id").tail(1)
            parts.append(pd.DataFrame({"sample_id": last["sample_id"].astype(str), "gold_label": last["label"].astype(str), "origin": "expert"}))
    if gold_list is not None and len(gold_list):
        parts.append(gold_list[cols])
    if not parts:
        return pd.DataFrame(columns=cols)
    pool = pd.concat(parts, ignore_index=True).drop_duplicates("sample_id", keep="last")
    return pool.sort_values("sample_id", kind="stable").reset_index(drop=True)


def n_gold_items(rate: float, n_queue: int) -> int:
    """How many gold rows make them `rate` of the mixed queue."""
    return int(round(rate / (1.0 - rate) * n_queue)) if rate > 0 else 0


def mix_gold(
    queue: pd.DataFrame,
    pool: pd.DataFrame,
    rate: float,
    manifest: pd.DataFrame,
    seed: int = 0,
    look: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Shuffle gold rows into a queue; returns (mixed queue, gold table `GOLD_COLUMNS`).

    A gold row copies the strategy/score/reason of a random real relabel row (so sorting by score
    or strategy does not set gold apart). look: optional per-sample fields to override, in practice
    `suggested_label` from `suggestion_look`; without it a gold row suggests its given label.
    """
    from kibble.queue.builder import queue_id

    if rate <= 0:
        return queue, pd.DataFrame(columns=GOLD_COLUMNS)
    if queue.empty:
        raise KibbleError("gold.rate > 0 but the queue is empty; there is nothing to hide gold items in")
    candidates = pool[~pool["sample_id"].isin(set(queue["sample_id"].astype(str)))]
    if candidates.empty:
        raise KibbleError(
            f"gold.rate={rate} but there are no gold items outside this queue; merge expert reviews "
            "(kibble merge review_source=expert) or set gold.list=<CSV sample_id[,label]>"
        )
    rng = np.random.default_rng(seed)
    n = min(n_gold_items(rate, len(queue)), len(candidates))
    chosen = candidates.iloc[np.sort(rng.choice(len(candidates), size=n, replace=False))]
    by_sid = manifest.set_index(manifest["sample_id"].astype(str))
    round_index = int(queue["round"].iloc[0])
    rows = []
    relabel = queue[queue["kind"].astype(str) != "new"] if "kind" in queue.columns else queue
    templates = relabel if len(relabel) else queue  # a gold item has a given label: it looks like a relabel row
    for sid in chosen["sample_id"]:
        template = templates.iloc[int(rng.integers(len(templates)))].to_dict()
        given = by_sid.at[sid, "label"]
        row = {**template, "queue_id": queue_id(round_index, sid, "relabel"), "sample_id": sid,
               "path": by_sid.at[sid, "path"], "given_label": None if is_missing(given) else str(given),
               "suggested_label": None if is_missing(given) else str(given)}
        row.update(dict((look or {}).get(sid, {})))
        if "kind" in row:
            row["kind"] = "relabel"
        rows.append(row)
    gold_rows = pd.DataFrame(rows, columns=queue.columns)
    # insert at random positions: the real rows keep their order, ranks are renumbered
    order = np.concatenate([np.zeros(len(queue), dtype=int), np.ones(len(gold_rows), dtype=int)])
    rng.shuffle(order)
    real_iter, gold_iter = iter(queue.to_dict("records")), iter(gold_rows.to_dict("records"))
    mixed = pd.DataFrame([next(gold_iter) if g else next(real_iter) for g in order], columns=queue.columns)
    mixed["rank"] = np.arange(1, len(mixed) + 1)
    table = pd.DataFrame({
        "queue_id": gold_rows["queue_id"].to_numpy(), "round": round_index, "sample_id": chosen["sample_id"].to_numpy(),
        "gold_label": chosen["gold_label"].to_numpy(), "origin": chosen["origin"].to_numpy(),
    }, columns=GOLD_COLUMNS)
    return mixed.reset_index(drop=True), table


def suggestion_look(probs: np.ndarray, sample_ids, class_names: list[str], given: Mapping[str, Any], wanted: set[str]) -> dict[str, dict]:
    """For each wanted sample with out-of-fold probabilities: the model's best class other than its given label.

    A real queue row is there because a strategy doubts its label, so it nearly always suggests
    another class; a gold row suggesting its own given label (what the model usually says for an
    expert-confirmed sample) would give it away, and so would its (low) strategy score: gold rows
    keep the strategy/score/reason of a real row (`mix_gold`) and take only this suggestion.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape != (len(sample_ids), len(class_names)):
        raise KibbleError(f"gold look: probs of shape {probs.shape} for {len(sample_ids)} samples x {len(class_names)} classes")
    index = {str(s): i for i, s in enumerate(sample_ids)}
    position = {c: i for i, c in enumerate(class_names)}
    out = {}
    for sid in sorted(wanted):
        if sid not in index:
            continue
        row = probs[index[sid]].copy()
        label = given.get(sid)
        if not is_missing(label) and str(label) in position:
            row[position[str(label)]] = -np.inf
        out[sid] = {"suggested_label": class_names[int(np.argmax(row))]}
    return out


def load_gold(round_dirs) -> pd.DataFrame:
    """The gold tables of some rounds (`rounds/NNN/gold.csv`), concatenated; empty when none."""
    parts = [pd.read_csv(d / GOLD_FILE, dtype={"sample_id": str, "gold_label": str, "queue_id": str})
             for d in round_dirs if (Path(d) / GOLD_FILE).is_file()]
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=GOLD_COLUMNS)


def round_gold(ctx, queue: pd.DataFrame, cfg: Mapping) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The queue callback's step: this round's gold pool mixed into its queue (kibble.rounds.RoundContext)."""
    from kibble.labels.history import load_events

    cfg = normalise_gold(cfg)
    gold_list = read_gold_list(cfg["list"], ctx.manifest, ctx.classes.names) if cfg["list"] else None
    pool = gold_pool(load_events(ctx.workspace.label_events), gold_list)
    given = dict(zip(ctx.manifest["sample_id"].astype(str), ctx.manifest["label"]))
    look = suggestion_look(ctx.probs(), ctx.oof["sample_id"].astype(str).tolist(), ctx.classes.names, given, set(pool["sample_id"]))
    return mix_gold(queue, pool, cfg["rate"], ctx.manifest, seed=cfg["seed"] + int(ctx.round_index), look=look)
