"""`kibble loop`: cleaning rounds end to end — kfold -> queue -> (simulated) annotator -> merge.

Writes per-round metrics (queue precision/recall, noise remaining, OOF accuracy, per-strategy
detection metrics when `true_label` exists, wall seconds per step) and loop_summary.csv; prints a
per-round table. `baseline=random` runs a random-queue arm with the same budget beside it in
W/baselines/random/ and shows both arms side by side. The round itself: kibble.loop.clean_round;
the arm: kibble.loop.baseline.
"""

from __future__ import annotations

import logging
from typing import Any

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from kibble import KibbleError
from kibble.annotation.gold import normalise_gold, read_gold_list
from kibble.config import plain
from kibble.data.classes import ClassList
from kibble.data.manifest import load_manifest
from kibble.io import atomic_write_csv
from kibble.labels.lock import lock_timeout_of, workspace_lock
from kibble.loop.baseline import arm_metrics, baseline_round_config, check_baseline, main_queue_budget, open_baseline, side_by_side
from kibble.loop.clean_round import run_clean_round
from kibble.paths import Workspace, config_dir
from kibble.report.round import write_round_report
from kibble.rounds import update_round_metrics
from kibble.tasks import kfold

log = logging.getLogger(__name__)

TABLE_COLUMNS = ["round", "n_train", "queue_size", "queue_precision", "queue_recall", "noise_before", "noise_remaining", "oof_accuracy_given", "oof_accuracy_true", "test_accuracy", "val_accuracy", "wall_s"]
ARMS_COLUMNS = {"queue_size": "queue", "wrong_before": "wrong before", "wrong_after": "wrong after", "queue_precision": "precision",
                "oof_accuracy_true": "OOF acc (truth)", "test_accuracy": "test acc", "wall_s": "wall s"}


def _train_round(cfg: DictConfig) -> dict:
    return kfold.run(cfg)  # looked up per call: tests replace kfold.run


def _summary_rows(path, done: int) -> list[dict]:
    rows = pd.read_csv(path).to_dict("records") if path.is_file() else []
    return [r for r in rows if int(r["round"]) < done]


def print_table(rows: list[dict], baseline: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 240))  # a log file gets whole column names, not wrapped ones
    table = Table(title="kibble loop: per-round cleaning (wall_s: seconds per round)")
    for col in TABLE_COLUMNS:
        table.add_column(col, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*[_fmt(row.get(c)) for c in TABLE_COLUMNS])
    console.print(table)
    if baseline is None:
        return
    arms = Table(title=f"kibble loop: strategy vs {baseline} queue, same budget (wrong = train labels that differ from the truth)")
    arms.add_column("round", justify="right")
    for label in ARMS_COLUMNS.values():
        arms.add_column(f"{label}\nstrategy", justify="right")
        arms.add_column(f"{label}\n{baseline}", justify="right")
    for row in rows:
        arms.add_row(_fmt(row.get("round")), *[_fmt(row.get(k)) for c in ARMS_COLUMNS for k in (c, f"{baseline}_{c}")])
    console.print(arms)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run rounds until the workspace has completed `rounds`; with `baseline=random`, after each main
    round the random arm (W/baselines/random/, kibble.loop.baseline) runs the same round on its copy."""
    mode = str(cfg.get("mode") or "clean")
    if mode == "active" and cfg.get("baseline") is not None:
        raise KibbleError(f"baseline={cfg.baseline} is mode=clean's random-queue arm; mode=active compares against active.baseline")
    if mode == "active":  # active learning vs random (issue 6)
        from kibble.tasks import active_loop

        return active_loop.run(cfg)
    if mode != "clean":
        raise KibbleError(f"mode={mode!r}; use clean (relabel rounds) or active (active learning vs random)")
    if (cfg.get("stop") or {}).get("min_gain") is not None:
        raise KibbleError(f"stop.min_gain={cfg.stop.min_gain} stops mode=active loops on the accuracy gained per 100 new labels; "
                          "clean rounds relabel a fixed train set, so drop it (or run mode=active)")
    baseline = check_baseline(cfg.get("baseline"))
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
    report = (cfg.get("round_callbacks") or {}).get("report") is not None
    summary_path = ws.root / "loop_summary.csv"
    rows = _summary_rows(summary_path, ws.current_round())
    arm = arm_annotator = None
    arm_rows: list[dict] = []
    if baseline is not None:
        arm = open_baseline(ws, baseline, lock_timeout_of(cfg))
        arm_annotator = hydra.utils.instantiate(cfg.annotator)  # the same annotator, its own random stream
        arm_rows = _summary_rows(arm.root / "loop_summary.csv", arm.current_round())
        start = int((arm.read_state().get("baseline") or {}).get("from_round", 0))
        if start > 0:  # copied when W was past round 0: the arms start from W's labels of that round
            log.warning("the %s arm (%s) started from W's labels at round %d; it compares rounds %d.. only", baseline, arm.root, start, start)
    while True:
        if arm is not None and arm.current_round() < ws.current_round():  # the arm catches up with the main round
            r = arm.current_round()
            budget = main_queue_budget(ws.round_dir(r))
            row = run_clean_round(baseline_round_config(cfg, arm, baseline, budget, r), arm, classes, arm_annotator, _train_round)
            arm_rows.append(row)
            atomic_write_csv(arm.root / "loop_summary.csv", pd.DataFrame(arm_rows))
            if report:
                write_round_report(arm, r)
            with workspace_lock(ws, "kibble loop", lock_timeout_of(cfg)):
                update_round_metrics(ws.round_dir(r), {"baselines": {baseline: arm_metrics(row, arm)}})
            log.info("round %d, %s arm: queue %d, precision %.3f, wrong labels %d -> %d", r, baseline, row["queue_size"],
                     row["queue_precision"], row["wrong_before"], row["wrong_after"])
        elif ws.current_round() < int(cfg.rounds):
            row = run_clean_round(cfg, ws, classes, annotator, _train_round)
            rows.append(row)
            log.info("round %d: queue %d, precision %.3f, noise %.4f -> %.4f, %.1f s", row["round"], row["queue_size"],
                     row["queue_precision"], row["noise_before"], row["noise_remaining"], row["wall_s"])
        else:
            break
        atomic_write_csv(summary_path, side_by_side(rows, arm_rows, baseline) if baseline else pd.DataFrame(rows))
        if report and rows and (arm is None or arm.current_round() >= ws.current_round()):  # re-render once the round's arms are done
            write_round_report(ws, int(rows[-1]["round"]))
    table = side_by_side(rows, arm_rows, baseline).to_dict("records") if baseline else rows
    print_table(table, baseline)
    result = {"rounds": table, "summary": str(summary_path)}
    if arm is not None:
        result["baseline"] = {"name": baseline, "workspace": str(arm.root), "rounds": arm_rows}
    return result


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="loop")
def main(cfg: DictConfig) -> None:
    run(cfg)
