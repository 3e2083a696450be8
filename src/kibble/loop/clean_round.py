"""One cleaning round of `kibble loop`: k-fold OOF (and the queue) -> simulated annotator -> merge, timed.

The same function runs the main arm and the random-queue baseline arm (kibble.loop.baseline), so
both arms' rounds write the same files and the same metrics. The k-fold step comes in as a callable
(`train_round`, in practice `kibble.tasks.kfold.run`) because library code never imports kibble.tasks.

Wall times: each round's metrics.json gets `wall_s` = {kfold, queue, annotate, merge, total} seconds;
the queue is built inside the k-fold call (a round callback), so its seconds come from the call's own
per-callback times (kibble.training.round) and `kfold` is the rest of that call.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd
from omegaconf import DictConfig, open_dict

from kibble import KibbleError
from kibble.annotation.crowd import write_assignments
from kibble.annotation.gold import load_gold
from kibble.config import plain
from kibble.data.classes import ClassList
from kibble.data.datamodule import trainable_rows
from kibble.data.manifest import load_manifest
from kibble.io import atomic_write_csv, read_json
from kibble.labels.lock import lock_timeout_of, workspace_lock, workspace_transaction
from kibble.labels.merge import merge_reviews
from kibble.metrics.detection import detection_metrics
from kibble.paths import Workspace
from kibble.rounds import update_round_metrics

WALL_STEPS = ("kfold", "queue", "annotate", "merge")
QUEUE_CALLBACK = "callback:queue"  # the queue round callback's key in kibble.training.round's wall_s


def wrong_labels(manifest: pd.DataFrame) -> int:
    """Trainable train rows whose label differs from the truth."""
    rows = manifest[trainable_rows(manifest)]
    return int((rows["label"] != rows["true_label"]).sum())


def noise_rate(manifest: pd.DataFrame) -> float:
    """Share of trainable train rows whose label differs from the truth."""
    n = int(trainable_rows(manifest).sum())
    return wrong_labels(manifest) / n if n else float("nan")


def strategy_detection(round_dir: Path, manifest: pd.DataFrame, budget: int) -> dict[str, dict]:
    """Precision/recall at the queue budget, AUPRC and AUROC of every strategy's score on this round."""
    path = round_dir / "scores.parquet"
    if not path.is_file():
        return {}
    scores = pd.read_parquet(path)
    truth = manifest.set_index("sample_id")
    is_noisy = (truth.loc[scores["sample_id"], "label"].to_numpy() != truth.loc[scores["sample_id"], "true_label"].to_numpy())
    out = {}
    for col in scores.columns:
        if col.endswith("_score"):
            name = col[: -len("_score")]
            out[name] = detection_metrics(is_noisy, scores[col].to_numpy(), budget=budget, flagged=scores[f"{name}_flagged"].to_numpy())
    return out


def read_queue(round_dir: Path) -> pd.DataFrame:
    """The round's queue.csv; a loop without a queue callback fails here with the fix."""
    path = round_dir / "queue.csv"
    if not path.is_file():
        raise KibbleError(f"{path}: no queue was built; keep round_callbacks.queue (strategy=...) enabled for the loop")
    return pd.read_csv(path, dtype={"sample_id": str, "given_label": str, "suggested_label": str})


def strategy_picks(round_dir: Path, queue: pd.DataFrame) -> pd.DataFrame:
    """Queue rows a strategy picked: gold questions (rounds/NNN/gold.csv) are no strategy's pick."""
    return queue[~queue["sample_id"].isin(set(load_gold([round_dir])["sample_id"].astype(str)))]


class StepClock:
    """Wall seconds per named step of one round (time.perf_counter), plus the round's total."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self._mark = self.started

    def lap(self, step: str) -> None:
        """Charge the time since the last lap to `step`."""
        now = time.perf_counter()
        self.seconds[step] = self.seconds.get(step, 0.0) + now - self._mark
        self._mark = now

    def result(self) -> dict[str, float]:
        return {**{s: round(self.seconds.get(s, 0.0), 6) for s in WALL_STEPS}, "total": round(time.perf_counter() - self.started, 6)}


def run_clean_round(cfg: DictConfig, ws: Workspace, classes: ClassList, annotator, train_round: Callable[[DictConfig], dict]) -> dict[str, Any]:
    """The workspace's current round: k-fold + queue, the annotator's answers, one merge transaction.

    Returns the loop_summary.csv row (flat: wall times as wall_s_<step> and wall_s); the round's
    metrics.json gets the same values with `wall_s` as a dict and per-strategy detection metrics.
    """
    clock = StepClock()
    round_index = ws.current_round()
    before = load_manifest(ws.manifest, classes.names)
    round_cfg = cfg.copy()
    with open_dict(round_cfg):
        round_cfg.round = round_index
    result = train_round(round_cfg)
    if result.get("pending_folds"):
        raise KibbleError(f"round {round_index}: folds {result['pending_folds']} are not finished; run them, then re-run the loop")
    clock.lap("kfold")
    queue_seconds = float((result.get("wall_s") or {}).get(QUEUE_CALLBACK, 0.0))
    clock.seconds["kfold"] -= queue_seconds  # built inside the k-fold call, charged to its own step
    clock.seconds["queue"] = queue_seconds
    round_dir = ws.round_dir(round_index)
    queue = read_queue(round_dir)
    noisy_ids = set(before.loc[trainable_rows(before) & (before["label"] != before["true_label"]), "sample_id"])
    picked = strategy_picks(round_dir, queue)
    hits = int(picked["sample_id"].isin(noisy_ids).sum())
    clock.lap("queue")
    if hasattr(annotator, "assign"):  # a crowd (annotation/crowd.py): each item to `overlap` members, recorded in assignments.csv
        assignments = annotator.assign(queue)
        write_assignments(round_dir, queue, assignments)
        reviews = annotator.review(queue, before, classes.names, assignments=assignments)
    else:
        reviews = annotator.review(queue, before, classes.names)
    clock.lap("annotate")
    with workspace_transaction(ws, "kibble loop", lock_timeout_of(cfg)):  # the merge step: reviews, history, manifest, round: one commit
        atomic_write_csv(round_dir / "reviews.csv", reviews)
        merged = merge_reviews(ws, reviews, source="simulated", round_index=round_index, policy=plain(cfg.policy),
                               origin=str(round_dir / "reviews.csv"), quality=plain(cfg.get("quality")), task="kibble loop")
        if ws.current_round() == round_index:  # nothing new to merge: still move on to the next round
            ws.set_current_round(round_index + 1)
    clock.lap("merge")
    after = load_manifest(ws.manifest, classes.names)
    metrics = read_json(round_dir / "metrics.json")
    row = {
        "round": round_index,
        "n_train": int(trainable_rows(before).sum()),
        "queue_size": int(len(queue)),
        "queue_precision": hits / len(picked) if len(picked) else float("nan"),
        "queue_recall": hits / len(noisy_ids) if noisy_ids else float("nan"),
        "noise_before": noise_rate(before),
        "noise_remaining": noise_rate(after),
        "wrong_before": wrong_labels(before),
        "wrong_after": wrong_labels(after),
        "oof_accuracy_given": metrics.get("oof_accuracy_given"),
        "oof_accuracy_true": metrics.get("oof_accuracy_true"),
        "test_accuracy": metrics.get("test_accuracy"),
        "val_accuracy": metrics.get("val_accuracy"),
        "labels_changed": merged.get("n_labels_changed"),
        "annotation_cost": annotator.cost(len(queue)),
        "annotators_flagged": " ".join(merged.get("annotators_flagged", [])),
    }
    row["labels_fixed"] = row["wrong_before"] - row["wrong_after"]
    detection = strategy_detection(round_dir, before, max(len(picked), 1))
    wall = clock.result()
    with workspace_lock(ws, "kibble loop", lock_timeout_of(cfg)):  # metrics.json is read, updated, replaced
        update_round_metrics(round_dir, {**row, "strategies": detection, "wall_s": wall})
    for name, values in detection.items():
        row[f"{name}_auprc"] = values.get("auprc")
    row.update({f"wall_s_{step}": wall[step] for step in WALL_STEPS}, wall_s=wall["total"])
    return row
