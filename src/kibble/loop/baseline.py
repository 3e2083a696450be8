"""The random-queue baseline arm of `kibble loop` (`baseline=random`): is the strategy worth its queue?

The arm is a workspace of its own, `W/baselines/random/`: a copy of W's top-level files (manifest,
classes, label history, state, policy, ...) taken once, when the loop first runs with the baseline,
at W's round then. Its rounds run the same code as the main arm's (kibble.loop.clean_round) with
one change: the queue callback ranks with the `random` cleaning strategy (a seeded uniform random
order) and a budget of exactly the main arm's queue that round (relabel and new-label items; gold
questions are added the same way), so both arms spend the same annotation budget. A fresh annotator
from the same config answers it, and its merges go to the arm's own label history: W's label
history, manifest and round are never written by the arm. The images stay where they are (the arm's
data_root points at W's) and features mode reads W's feature cache.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf, open_dict

from kibble import KibbleError
from kibble.labels.lock import lock_timeout_of, workspace_lock
from kibble.loop.clean_round import read_queue, strategy_picks
from kibble.paths import Workspace

BASELINES = ("random",)
BASELINE_DIR = "baselines"
NOT_COPIED = ("loop_summary.csv",)  # the arm writes its own
# loop_summary.csv columns shown side by side, the arm's prefixed with its name (e.g. random_queue_precision)
SIDE_BY_SIDE = ["queue_size", "queue_precision", "wrong_before", "wrong_after", "labels_fixed", "noise_remaining",
                "oof_accuracy_true", "test_accuracy", "wall_s"]


def check_baseline(name: Any) -> str | None:
    """The configured baseline's name, or None; an unknown one fails before any round runs."""
    if name is None:
        return None
    if str(name) not in BASELINES:
        raise KibbleError(f"baseline={name!r}; use one of {list(BASELINES)} (or null for no baseline arm)")
    return str(name)


def baseline_root(ws: Workspace, name: str) -> Path:
    return ws.root / BASELINE_DIR / name


def open_baseline(ws: Workspace, name: str, lock_timeout: Any = None) -> Workspace:
    """The arm's workspace: made now from W's current state (copied to a temp folder, then renamed,
    under W's lock so no merge lands mid-copy), or the one an earlier run made."""
    root = baseline_root(ws, name)
    arm = Workspace(root)
    if arm.manifest.is_file():
        return arm.require()
    if root.exists():
        raise KibbleError(f"{root} exists but holds no manifest; it is not a baseline arm kibble made: move it away and re-run")
    staging = root.parent / f".{name}.tmp-{os.getpid()}"
    with workspace_lock(ws, "kibble loop", lock_timeout):
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for path in ws.root.iterdir():
            if path.is_file() and path.name not in NOT_COPIED:
                shutil.copy2(path, staging / path.name)
        data_root = ws.data_root.resolve()
        stored = str(data_root) if Path(ws.read_state().get("data_root", ".")).is_absolute() else os.path.relpath(data_root, root)
        Workspace(staging).update_state(round=ws.current_round(), data_root=stored, feature_root_id=ws.feature_root_id,
                                        baseline={"of": str(ws.root), "strategy": name, "from_round": ws.current_round()})
        staging.rename(root)
    return arm.require()


def main_queue_budget(round_dir: Path) -> dict[str, int]:
    """What the main arm's queue spent this round: relabel and new-label items, gold left out
    (the arm's queue callback adds gold at the same rate, so both queues have the same length)."""
    picks = strategy_picks(round_dir, read_queue(round_dir))
    kind = picks["kind"] if "kind" in picks.columns else pd.Series("relabel", index=picks.index)
    return {"relabel": int((kind == "relabel").sum()), "new": int((kind == "new").sum())}


def baseline_round_config(cfg: DictConfig, arm: Workspace, name: str, budget: dict[str, int], round_index: int) -> DictConfig:
    """The main arm's config pointed at the arm: its workspace, W's feature cache, and a queue callback
    that ranks with `random` (seed = cfg.seed + round) under exactly `budget`."""
    queue_cfg = (cfg.get("round_callbacks") or {}).get("queue")
    if queue_cfg is None:
        raise KibbleError("baseline=random builds its queue with the round's queue callback; keep round_callbacks.queue (strategy=...) enabled")
    queue = OmegaConf.to_container(queue_cfg, resolve=True)
    seed = int(cfg.get("seed") or 0) + int(round_index)
    queue.update(strategies=[name], quotas=None, params={name: {"seed": seed}},
                 budget={"relabel": budget["relabel"], "new": budget["new"]} if budget["new"] else budget["relabel"],
                 new_strategies=[name], new_params={}, new_quotas=None)
    cache_dir = str(cfg.paths.cache_dir) if cfg.get("paths") is not None and cfg.paths.get("cache_dir") else None
    out = cfg.copy()
    with open_dict(out):
        out.workspace = str(arm.root)
        if cache_dir is not None:
            out.paths.cache_dir = cache_dir  # resolved against W before the workspace changed: one embedding pass
        out.round_callbacks.queue = queue
    return out


def side_by_side(rows: list[dict], arm_rows: list[dict], name: str) -> pd.DataFrame:
    """loop_summary.csv: the main arm's rows with the arm's SIDE_BY_SIDE columns beside them (`<name>_<col>`)."""
    main = pd.DataFrame(rows)
    main = main.drop(columns=[c for c in main.columns if c.startswith(f"{name}_") and c[len(name) + 1:] in SIDE_BY_SIDE])
    if not arm_rows or main.empty:
        return main
    arm = pd.DataFrame(arm_rows)
    arm = arm[["round", *[c for c in SIDE_BY_SIDE if c in arm.columns]]]
    arm = arm.rename(columns={c: f"{name}_{c}" for c in SIDE_BY_SIDE})
    return main.merge(arm, on="round", how="left")


def arm_metrics(row: dict, arm: Workspace) -> dict[str, Any]:
    """The arm's round, summarised for the main round's metrics.json."""
    return {"workspace": str(arm.root), **{c: row.get(c) for c in SIDE_BY_SIDE}}
