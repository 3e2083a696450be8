"""`kibble eval`: metrics of a checkpoint or a predictions file on a manifest split.

    kibble eval workspace=W (ckpt_path=CKPT | predictions=PARQUET) [split=test]

Writes metrics.json (accuracy, macro F1, per-class precision/recall/F1/support, confusion matrix)
into the run directory and prints the per-class table. The truth is the manifest's current label.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from kibble import KibbleError
from kibble.data.classes import ClassList
from kibble.data.manifest import load_manifest
from kibble.io import atomic_write_json
from kibble.metrics.classification import classification_metrics
from kibble.paths import Workspace, config_dir
from kibble.predictions.store import read_store, stack, write_store
from kibble.tasks.common import load_classifier
from kibble.tasks.predict import predict_manifest, split_rows

log = logging.getLogger(__name__)


def labelled_rows(manifest: pd.DataFrame, split: str, source: str) -> pd.DataFrame:
    rows = split_rows(manifest, split, source)
    rows = rows[rows["label"].notna()].reset_index(drop=True)
    if rows.empty:
        raise KibbleError(f"{source}: split {split!r} has no labelled rows to evaluate; choose another split=")
    return rows


def predictions_for(cfg: DictConfig, ws: Workspace, rows: pd.DataFrame, classes: ClassList, out_dir: Path) -> tuple[pd.DataFrame, str]:
    """The prediction frame to score and a description of where it came from."""
    if cfg.get("predictions") and cfg.get("ckpt_path"):
        raise KibbleError("give either ckpt_path= or predictions=, not both")
    if cfg.get("predictions"):
        frame, _ = read_store(Path(cfg.predictions).expanduser(), class_names=classes.names)
        return frame, str(Path(cfg.predictions).expanduser().resolve())
    if cfg.get("ckpt_path"):
        frame, meta = predict_manifest(load_classifier(cfg.ckpt_path), ws, rows, cfg)
        # keep what was scored beside the metrics (the full evaluation and reports reuse it)
        write_store(out_dir / "predictions.parquet", frame, {**meta, "ckpt_path": str(cfg.ckpt_path), "split": str(cfg.split), "complete": True})
        return frame, str(Path(cfg.ckpt_path).expanduser().resolve())
    raise KibbleError("nothing to evaluate: give ckpt_path=CKPT or predictions=PARQUET")


def align(rows: pd.DataFrame, frame: pd.DataFrame, source: str) -> tuple[pd.DataFrame, np.ndarray, int]:
    """Manifest rows that have a prediction, their probs in row order, and how many rows had none."""
    frame = frame.drop_duplicates("sample_id", keep="last")
    position = pd.Series(np.arange(len(frame)), index=frame["sample_id"].astype(str))
    have = rows["sample_id"].isin(position.index)
    if not have.any():
        raise KibbleError(f"{source}: none of the split's {len(rows)} sample_ids have a prediction; predict this split first")
    missing = int((~have).sum())
    if missing:
        example = rows.loc[~have, "sample_id"].iloc[0]
        log.warning("%s: %d of %d rows have no prediction (e.g. %r); scoring the rest", source, missing, len(rows), example)
    rows = rows[have].reset_index(drop=True)
    probs = stack(frame)[position.loc[rows["sample_id"]].to_numpy()]
    return rows, probs, missing


def print_table(result: dict[str, Any], classes: ClassList) -> None:
    from rich.console import Console
    from rich.table import Table

    display = {c.name: c.display_name or c.name for c in classes.classes}
    show_display = any(display[n] != n for n in display)
    table = Table(title=f"{result['split']} split: {result['n']} images, accuracy {result['accuracy']:.4f}, macro F1 {result['f1_macro']:.4f}")
    table.add_column("class")
    if show_display:
        table.add_column("name")
    for col in ("precision", "recall", "F1", "support"):
        table.add_column(col, justify="right")
    for row in result["per_class"]:
        cells = [row["class"]] + ([display.get(row["class"], row["class"])] if show_display else [])
        cells += [f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"])]
        table.add_row(*cells)
    Console().print(table)


def run(cfg: DictConfig) -> dict[str, Any]:
    ws = Workspace(cfg.workspace).require()
    classes = ClassList.load(ws.classes)
    manifest = load_manifest(ws.manifest, classes.names)
    rows = labelled_rows(manifest, str(cfg.split), str(ws.manifest))
    out_dir = Path(cfg.paths.output_dir)
    frame, source = predictions_for(cfg, ws, rows, classes, out_dir)
    rows, probs, missing = align(rows, frame, source)
    y_pred = probs.argmax(axis=1)
    metrics = classification_metrics(rows["label"].tolist(), y_pred, classes.names)
    result = {"split": str(cfg.split), "source": source, "workspace": str(ws.root), "n_missing_predictions": missing, **metrics}
    atomic_write_json(out_dir / "metrics.json", result)
    print_table(result, classes)
    print(f"accuracy {result['accuracy']:.4f}  macro F1 {result['f1_macro']:.4f}  ({result['split']} split, {result['n']} images) -> {out_dir / 'metrics.json'}")
    return result


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="eval")
def main(cfg: DictConfig) -> None:
    run(cfg)
