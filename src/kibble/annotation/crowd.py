"""Overlap (each queue item to n annotators) and a simulated crowd of annotators with their own error rates.

`assign_overlap` is the real-world part: an assignment table `queue_id, sample_id, annotator`
(balanced: every annotator gets about n_items * overlap / n_annotators items, no annotator sees an
item twice), written as `rounds/NNN/assignments.csv`; `write_assignments` also writes one
`queue.<annotator>.csv` per annotator to hand out. `SimulatedCrowd` answers its assignments with
one `SimulatedAnnotator` per member (benchmarks, the loop) and returns one reviews row per answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kibble import KibbleError
from kibble.io import atomic_write_csv
from kibble.annotation.annotator import SimulatedAnnotator
from kibble.labels.reviews import REVIEW_COLUMNS

ASSIGNMENT_COLUMNS = ["queue_id", "sample_id", "annotator"]
ASSIGNMENTS_FILE = "assignments.csv"
MEMBER_KEYS = ("name", "error_rate", "seconds_per_item", "ambiguous_rate")


def check_overlap(overlap: Any, annotators: Sequence[str]) -> int:
    """overlap as an int in [1, number of annotators], else a one-line error."""
    try:
        n = int(overlap)
    except (TypeError, ValueError):
        raise KibbleError(f"overlap={overlap!r}; give how many annotators see each item (e.g. overlap=3)") from None
    if n < 1:
        raise KibbleError(f"overlap={n}; every item needs at least one annotator (overlap >= 1)")
    if n > len(annotators):
        raise KibbleError(
            f"overlap={n} but only {len(annotators)} annotator(s) ({', '.join(annotators)}); "
            "lower overlap or add annotators: an annotator answers an item at most once"
        )
    return n


def assign_overlap(queue: pd.DataFrame, annotators: Sequence[str], overlap: int, seed: int = 0) -> pd.DataFrame:
    """Each queue item to `overlap` distinct annotators, load balanced (round robin over a shuffled order)."""
    names = [str(a).strip() for a in annotators]
    if any(not a or a.lower() in ("none", "nan") for a in names):
        raise KibbleError(f"annotators {list(annotators)}: an annotator id is missing; name every annotator")
    if len(set(names)) != len(names):
        raise KibbleError(f"annotators {names}: a name appears twice; annotator ids must be unique")
    n = check_overlap(overlap, names)
    missing = [c for c in ("queue_id", "sample_id") if c not in queue.columns]
    if missing:
        raise KibbleError(f"queue lacks column(s) {missing}; pass a queue table (queue.csv)")
    order = list(np.random.default_rng(seed).permutation(len(names)))
    rows = []
    for i, (qid, sid) in enumerate(zip(queue["queue_id"].astype(str), queue["sample_id"].astype(str))):
        for j in range(n):
            rows.append({"queue_id": qid, "sample_id": sid, "annotator": names[order[(i * n + j) % len(names)]]})
    return pd.DataFrame(rows, columns=ASSIGNMENT_COLUMNS)


def write_assignments(round_dir: str | Path, queue: pd.DataFrame, assignments: pd.DataFrame) -> list[Path]:
    """`assignments.csv` plus one `queue.<annotator>.csv` (the queue rows an annotator answers)."""
    round_dir = Path(round_dir)
    written = [atomic_write_csv(round_dir / ASSIGNMENTS_FILE, assignments)]
    for who, part in assignments.groupby("annotator", sort=True):
        safe = re.sub(r"[^A-Za-z0-9_.@-]+", "_", str(who))
        rows = queue[queue["queue_id"].astype(str).isin(set(part["queue_id"]))]
        written.append(atomic_write_csv(round_dir / f"queue.{safe}.csv", rows))
    return written


class SimulatedCrowd:
    """Several simulated annotators; each answers the items assigned to it (see `assign_overlap`).

    annotators: [{name, error_rate, seconds_per_item (mean lead_time, default 8), ambiguous_rate
    (share of answers given as `ambiguous` with a note naming the two classes, default 0)}].
    Member i draws its errors from seed + i; lead times are log-normal around seconds_per_item.
    """

    def __init__(self, annotators: Sequence[Mapping[str, Any]], overlap: int = 1, cost_per_item: float = 1.0, seed: int = 0):
        if not annotators:
            raise KibbleError("annotator.annotators is empty; list the crowd, e.g. [{name: a, error_rate: 0.02}]")
        self.members: list[dict] = []
        for i, spec in enumerate(annotators):
            spec = dict(spec or {})
            unknown = sorted(set(spec) - set(MEMBER_KEYS))
            if unknown:
                raise KibbleError(f"annotator.annotators[{i}]: unknown key(s) {unknown}; known keys are {list(MEMBER_KEYS)}")
            name = str(spec.get("name") or "").strip()
            if not name:
                raise KibbleError(f"annotator.annotators[{i}] has no name; give every crowd member a unique annotator id")
            seconds = float(spec.get("seconds_per_item", 8.0))
            ambiguous = float(spec.get("ambiguous_rate", 0.0))
            if seconds <= 0 or not 0 <= ambiguous <= 1:
                raise KibbleError(f"annotator.annotators[{i}] ({name}): seconds_per_item must be > 0 and ambiguous_rate in [0, 1]")
            member = SimulatedAnnotator(error_rate=float(spec.get("error_rate", 0.0)), cost_per_item=cost_per_item, seed=int(seed) + i, name=name)
            self.members.append({"annotator": member, "seconds": seconds, "ambiguous": ambiguous,
                                 "rng": np.random.default_rng([int(seed), i, 7])})
        self.names = [m["annotator"].name for m in self.members]
        if len(set(self.names)) != len(self.names):
            raise KibbleError(f"annotator.annotators: names {self.names} repeat; annotator ids must be unique")
        self.overlap = check_overlap(overlap, self.names)
        self.cost_per_item = float(cost_per_item)
        self.seed = int(seed)
        self.items_reviewed = 0
        self._round = 0

    def cost(self, n: int) -> float:
        """Reviewing n queue items costs n * overlap answers."""
        return float(n) * self.overlap * self.cost_per_item

    def assign(self, queue: pd.DataFrame) -> pd.DataFrame:
        """This crowd's assignment of a queue (a fresh, reproducible shuffle per call)."""
        self._round += 1
        return assign_overlap(queue, self.names, self.overlap, seed=self.seed * 1000 + self._round)

    def review(self, queue: pd.DataFrame, manifest: pd.DataFrame, class_names: list[str],
               assignments: pd.DataFrame | None = None) -> pd.DataFrame:
        """One reviews row per (item, assigned annotator); `lead_time` simulated, in seconds."""
        assignments = self.assign(queue) if assignments is None else assignments
        unknown = sorted(set(assignments["annotator"].astype(str)) - set(self.names))
        if unknown:
            raise KibbleError(f"assignments name annotator(s) {unknown} who are not in the crowd {self.names}")
        parts = []
        for member in self.members:
            who = member["annotator"]
            mine = set(assignments.loc[assignments["annotator"].astype(str) == who.name, "queue_id"].astype(str))
            rows = queue[queue["queue_id"].astype(str).isin(mine)]
            if rows.empty:
                continue
            answers = who.review(rows, manifest, class_names)
            rng = member["rng"]
            answers["lead_time"] = member["seconds"] * rng.lognormal(0.0, 0.4, size=len(answers))
            unsure = (rng.random(len(answers)) < member["ambiguous"]) & answers["verdict"].isin(["confirmed", "corrected"]).to_numpy()
            if unsure.any():
                given = dict(zip(rows["queue_id"].astype(str), rows["given_label"]))
                notes = [f"could be {given.get(q)} or {lab}" for q, lab in zip(answers.loc[unsure, "queue_id"], answers.loc[unsure, "label"])]
                answers.loc[unsure, "verdict"] = "ambiguous"
                answers.loc[unsure, "note"] = notes
            parts.append(answers)
        self.items_reviewed += sum(len(p) for p in parts)
        if not parts:
            return pd.DataFrame(columns=REVIEW_COLUMNS)
        return pd.concat(parts, ignore_index=True)[REVIEW_COLUMNS]


def simulate_gold_round(ws, crowd: Sequence[Mapping[str, Any]], seed: int = 0, *, n_expert: int = 150, gold_rate: float = 0.1,
                        overlap: int = 3, policy: Mapping | None = None) -> dict[str, Any]:
    """One crowd round with hidden gold on a noisy workspace, no model (the crowd test and scripts/bench_crowd.py).

    An expert confirms `n_expert` random train samples (round 0: the gold pool); the round-1 queue is
    what a good cleaning queue looks like (every other flipped label plus half as many clean ones),
    `gold_rate` gold is mixed in, the crowd answers with `overlap` and the answers are merged.
    Returns {summary, queue_ids, mixed, gold, reviews}.
    """
    from kibble.data.classes import ClassList
    from kibble.queue.builder import queue_id
    from kibble.queue.formats import write_queue_files
    from kibble.annotation.gold import GOLD_FILE, gold_pool, mix_gold
    from kibble.labels.history import load_events
    from kibble.labels.merge import merge_reviews

    classes = ClassList.load(ws.classes)
    manifest = pd.read_parquet(ws.manifest)
    train = manifest[manifest["split"] == "train"].sort_values("sample_id").set_index("sample_id", drop=False)
    order = np.random.default_rng(seed).permutation(len(train))
    expert_ids = train.index[order[:n_expert]]
    truth = train.loc[expert_ids, "true_label"].to_numpy()
    expert = pd.DataFrame({"sample_id": expert_ids, "label": truth, "annotator": "expert", "note": "",
                           "verdict": np.where(truth == train.loc[expert_ids, "label"].to_numpy(), "confirmed", "corrected"),
                           "round": pd.array([0] * len(expert_ids), dtype="Int64")})
    merge_reviews(ws, expert, source="expert", round_index=0, policy=policy)
    rest = train.iloc[order[n_expert:]]
    noisy = rest.index[rest["label"] != rest["true_label"]].tolist()
    clean = rest.index[rest["label"] == rest["true_label"]].tolist()[: len(noisy) // 2]
    ids = sorted(noisy + clean)
    manifest = pd.read_parquet(ws.manifest)
    rows = manifest.set_index("sample_id").loc[ids]
    queue = pd.DataFrame({"queue_id": [queue_id(1, s) for s in ids], "round": 1, "rank": np.arange(1, len(ids) + 1), "sample_id": ids,
                          "path": rows["path"].to_numpy(), "given_label": rows["label"].to_numpy(), "suggested_label": rows["label"].to_numpy(),
                          "score": 0.5, "strategy": "kfold", "reason": "kfold 0.500", "kind": "relabel"})
    mixed, gold = mix_gold(queue, gold_pool(load_events(ws.label_events)), gold_rate, manifest, seed=seed)
    write_queue_files(mixed, ws.round_dir(1), classes, None, data_root=ws.data_root)
    atomic_write_csv(ws.round_dir(1) / GOLD_FILE, gold)
    reviews = SimulatedCrowd(crowd, overlap=overlap, seed=seed).review(mixed, manifest, classes.names)
    summary = merge_reviews(ws, reviews, source="vendor", round_index=1, policy=policy)
    return {"summary": summary, "queue_ids": ids, "mixed": mixed, "gold": gold, "reviews": reviews}
