"""`kibble loop`: cleaning rounds end to end — kfold -> queue -> (simulated) annotator -> merge.

Writes per-round metrics (queue precision/recall, noise remaining, OOF accuracy, per-strategy
detection metrics when `true_label` exists) and loop_summary.csv; prints a per-round table.
"""

from __future__ import annotations

import logging
from typing import Any

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig, open_dict

from kibble import KibbleError
from kibble.data.classes import ClassList
from kibble.data.datamodule import trainable_rows
from kibble.data.manifest import load_manifest
from kibble.io import atomic_write_csv, read_json
from kibble.metrics.detection import detection_metrics
from kibble.config import plain
from kibble.paths import Workspace, config_dir
from kibble.rounds import update_round_metrics
from kibble.report.round import write_round_report
from kibble.annotation.crowd import write_assignments
from kibble.annotation.gold import load_gold, normalise_gold, read_gold_list
from kibble.labels.lock import lock_timeout_of, workspace_lock, workspace_transaction
from kibble.labels.merge import merge_reviews
from kibble.tasks import kfold

log = logging.getLogger(__name__)

TABLE_COLUMNS = ["round", "n_train", "queue_size", "queue_precision", "queue_recall", "noise_before", "noise_remaining", "oof_accuracy_given", "oof_accuracy_true", "test_accuracy", "val_accuracy"]


def noise_rate(manifest: pd.DataFrame) -> float:
    """Share of trainable train rows whose label differs from the truth."""
    rows = manifest[trainable_rows(manifest)]
    return float((rows["label"] != rows["true_label"]).mean()) if len(rows) else float("nan")


def strategy_detection(round_dir, manifest: pd.DataFrame, budget: int) -> dict[str, dict]:
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


def run_round(cfg: DictConfig, ws: Workspace, classes: ClassList, annotator) -> dict[str, Any]:
    round_index = ws.current_round()
    before = load_manifest(ws.manifest, classes.names)
    noise_before = noise_rate(before)
    round_cfg = cfg.copy()
    with open_dict(round_cfg):
        round_cfg.round = round_index
    result = kfold.run(round_cfg)
    if result.get("pending_folds"):
        raise KibbleError(f"round {round_index}: folds {result['pending_folds']} are not finished; run them, then re-run the loop")
    round_dir = ws.round_dir(round_index)
    queue_path = round_dir / "queue.csv"
    if not queue_path.is_file():
        raise KibbleError(f"{queue_path}: no queue was built; keep round_callbacks.queue (strategy=...) enabled for the loop")
    queue = pd.read_csv(queue_path, dtype={"sample_id": str, "given_label": str, "suggested_label": str})
    noisy_ids = set(before.loc[trainable_rows(before) & (before["label"] != before["true_label"]), "sample_id"])
    picked = queue[~queue["sample_id"].isin(set(load_gold([round_dir])["sample_id"].astype(str)))]  # gold questions are no strategy's pick
    hits = int(picked["sample_id"].isin(noisy_ids).sum())
    if hasattr(annotator, "assign"):  # a crowd (annotation/crowd.py): each item to `overlap` members, recorded in assignments.csv
        assignments = annotator.assign(queue)
        write_assignments(round_dir, queue, assignments)
        reviews = annotator.review(queue, before, classes.names, assignments=assignments)
    else:
        reviews = annotator.review(queue, before, classes.names)
    with workspace_transaction(ws, "kibble loop", lock_timeout_of(cfg)):  # the merge step: reviews, history, manifest, round: one commit
        atomic_write_csv(round_dir / "reviews.csv", reviews)
        merged = merge_reviews(ws, reviews, source="simulated", round_index=round_index, policy=plain(cfg.policy),
                               origin=str(round_dir / "reviews.csv"), quality=plain(cfg.get("quality")), task="kibble loop")
        if ws.current_round() == round_index:  # nothing new to merge: still move on to the next round
            ws.set_current_round(round_index + 1)
    after = load_manifest(ws.manifest, classes.names)
    metrics = read_json(round_dir / "metrics.json")
    row = {
        "round": round_index,
        "n_train": int(trainable_rows(before).sum()),
        "queue_size": int(len(queue)),
        "queue_precision": hits / len(picked) if len(picked) else float("nan"),
        "queue_recall": hits / len(noisy_ids) if noisy_ids else float("nan"),
        "noise_before": noise_before,
        "noise_remaining": noise_rate(after),
        "oof_accuracy_given": metrics.get("oof_accuracy_given"),
        "oof_accuracy_true": metrics.get("oof_accuracy_true"),
        "test_accuracy": metrics.get("test_accuracy"),
        "val_accuracy": metrics.get("val_accuracy"),
        "labels_changed": merged.get("n_labels_changed"),
        "annotation_cost": annotator.cost(len(queue)),
        "annotators_flagged": " ".join(merged.get("annotators_flagged", [])),
    }
    detection = strategy_detection(round_dir, before, max(len(picked), 1))
    with workspace_lock(ws, "kibble loop", lock_timeout_of(cfg)):  # metrics.json is read, updated, replaced
        update_round_metrics(round_dir, {**row, "strategies": detection})
    for name, values in detection.items():
        row[f"{name}_auprc"] = values.get("auprc")
    return row


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="kibble loop: per-round cleaning")
    for col in TABLE_COLUMNS:
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*[_fmt(row.get(c)) for c in TABLE_COLUMNS])
    Console(width=max(Console().width, 170)).print(table)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def run(cfg: DictConfig) -> dict[str, Any]:
    mode = str(cfg.get("mode") or "clean")
    if mode == "active":  # active learning vs random (issue 6)
        from kibble.tasks import active_loop

        return active_loop.run(cfg)
    if mode != "clean":
        raise KibbleError(f"mode={mode!r}; use clean (relabel rounds) or active (active learning vs random)")
    if (cfg.get("stop") or {}).get("min_gain") is not None:
        raise KibbleError(f"stop.min_gain={cfg.stop.min_gain} stops mode=active loops on the accuracy gained per 100 new labels; "
                          "clean rounds relabel a fixed train set, so drop it (or run mode=active)")
    ws = Workspace(cfg.workspace).require()
    classes = ClassList.load(ws.classes)
    manifest = load_manifest(ws.manifest, classes.names)
    if "true_label" not in manifest.columns:
        raise KibbleError(f"{ws.manifest}: no true_label column; the simulated annotator needs it (import with inject_noise.rate=...)")
    annotator = hydra.utils.instantiate(cfg.annotator)
    if int(cfg.get("overlap") or 1) > 1 and not hasattr(annotator, "assign"):
        raise KibbleError(f"overlap={cfg.overlap} needs several annotators; use annotator=crowd (conf/annotator/crowd.yaml)")
    gold = normalise_gold(plain(cfg.get("gold")))
    if gold["list"]:  # a bad gold list fails before the first round writes anything
        read_gold_list(gold["list"], manifest, classes.names)
    summary_path = ws.root / "loop_summary.csv"
    rows = pd.read_csv(summary_path).to_dict("records") if summary_path.is_file() else []
    rows = [r for r in rows if int(r["round"]) < ws.current_round()]
    while ws.current_round() < int(cfg.rounds):
        row = run_round(cfg, ws, classes, annotator)
        rows.append(row)
        atomic_write_csv(summary_path, pd.DataFrame(rows))
        if (cfg.get("round_callbacks") or {}).get("report") is not None:  # re-render: the curves now include this round
            write_round_report(ws, row["round"])
        log.info("round %d: queue %d, precision %.3f, noise %.4f -> %.4f", row["round"], row["queue_size"], row["queue_precision"], row["noise_before"], row["noise_remaining"])
    print_table(rows)
    return {"rounds": rows, "summary": str(summary_path)}


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="loop")
def main(cfg: DictConfig) -> None:
    run(cfg)
