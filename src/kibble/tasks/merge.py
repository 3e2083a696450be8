"""`kibble merge workspace=W reviews=FILE [review_source=review|expert|vendor] [round=N] [lock_timeout=60]`.

Reads reviews (CSV or Label Studio JSON export) and folds them into the label history through
`kibble.labels.merge.merge_reviews`. The file is read inside the workspace lock, so the verdicts it
infers compare with the labels the merge then overwrites, even when another writer ran just before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from kibble import KibbleError
from kibble.config import plain
from kibble.data.classes import ClassList
from kibble.data.manifest import load_manifest
from kibble.labels.lock import lock_timeout_of, workspace_lock
from kibble.labels.merge import REVIEW_SOURCES, event_id, merge_reviews  # noqa: F401  (kibble.tasks.merge.merge_reviews still works)
from kibble.labels.reviews import read_reviews
from kibble.paths import Workspace, config_dir
from kibble.queue.formats import load_queues


def run(cfg: DictConfig) -> dict[str, Any]:
    ws = Workspace(cfg.workspace).require()
    if OmegaConf.is_missing(cfg, "reviews") or not cfg.reviews:
        raise KibbleError("no reviews file given; pass reviews=<CSV or Label Studio JSON export>")
    path = Path(str(cfg.reviews)).expanduser()
    if not path.is_file() and not path.is_absolute() and (ws.root / path).is_file():
        path = ws.root / path
    if not path.is_file():  # before waiting for the lock
        raise KibbleError(f"{path}: reviews file not found; pass reviews=<CSV or Label Studio JSON export>")
    round_index = cfg.get("round")
    task = f"kibble {cfg.get('task_name') or 'merge'}"
    with workspace_lock(ws, task, lock_timeout_of(cfg)):
        classes = ClassList.load(ws.classes)
        manifest = load_manifest(ws.manifest, classes.names)
        reviews = read_reviews(path, manifest, classes.names, queue=load_queues(ws.root / "rounds"),
                               display_names=classes.display_names)
        summary = merge_reviews(ws, reviews, source=str(cfg.review_source), round_index=None if round_index is None else int(round_index),
                                policy=plain(cfg.get("policy")), origin=str(path), quality=plain(cfg.get("quality")), task=task,
                                manifest=manifest)
    moved = f"round {summary['round']} -> {summary['next_round']}" if summary["next_round"] != summary["round"] else f"round stays {summary['round']}"
    print(
        f"merged {summary['n_reviews']} reviews from {path.name}: {summary['n_events_added']} new events "
        f"({summary['n_duplicates']} already recorded), {summary['n_labels_changed']} labels changed, "
        f"{summary['n_excluded']} excluded, {summary['n_ambiguous']} ambiguous; {moved}"
        + (f"; flagged annotators: {', '.join(summary['annotators_flagged'])}" if summary["annotators_flagged"] else "")
        + ("; new label policy recorded in policy.yaml" if summary["policy_changed"] else "")
        + ("" if summary.get("written", True) else "; the file holds no reviews: nothing written")
    )
    return summary


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="merge")
def main(cfg: DictConfig) -> None:
    run(cfg)
