"""`kibble eval`: does a model meet the scoping targets on a manifest split?

    kibble eval workspace=W (ckpt_path=CKPT | predictions=PARQUET | round=N) [split=test]
        [eval.slice_by=[environment]] [eval.fail_on_targets=true] [check_only=true]

Scores a checkpoint, a prediction store, or a round's fold ensemble (rounds/NNN/predictions.parquet)
against the manifest's current labels: per-class P/R/F1/support, macro and importance-weighted F1,
targets from classes.yaml with pass/fail, top confused pairs, severity-weighted error, calibration
(ECE, reliability, a confidence threshold for a target precision), metadata slices, and the
evaluation-set checks. Writes metrics.json, severity_confusion.csv and a self-contained report.html
(+ PNG figures) into the run directory. With eval.fail_on_targets=true a missed target lists the
failing classes and exits with status 1 (for CI). check_only=true runs only the evaluation-set checks.
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
from kibble.data.classes import ClassList, unknown_target_classes
from kibble.data.manifest import load_manifest
from kibble.data.evalset import check_eval_set
from kibble.io import atomic_write_csv, atomic_write_json
from kibble.metrics.evaluation import evaluate_probs
from kibble.metrics.severity import severity_confusion
from kibble.paths import Workspace, config_dir
from kibble.predictions.store import read_store, stack, write_store
from kibble.training.build import load_classifier
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
    given = [k for k in ("ckpt_path", "predictions", "round") if cfg.get(k) is not None and cfg.get(k) != ""]
    if len(given) > 1:
        raise KibbleError(f"give one of ckpt_path=, predictions=, round=, not both ({' and '.join(given)})")
    if cfg.get("round") is not None:
        path = ws.round_dir(int(cfg.round)) / "predictions.parquet"
        if not path.is_file():
            raise KibbleError(f"{path}: round {int(cfg.round)} has no fold-ensemble predictions; run `kibble kfold round={int(cfg.round)}` (cv.predict_splits must include {cfg.split!r})")
        frame, _ = read_store(path, class_names=classes.names)
        return frame, str(path)
    if cfg.get("predictions"):
        frame, _ = read_store(Path(cfg.predictions).expanduser(), class_names=classes.names)
        return frame, str(Path(cfg.predictions).expanduser().resolve())
    if cfg.get("ckpt_path"):
        frame, meta = predict_manifest(load_classifier(cfg.ckpt_path), ws, rows, cfg)
        # keep what was scored beside the metrics (the full evaluation and reports reuse it)
        write_store(out_dir / "predictions.parquet", frame, {**meta, "ckpt_path": str(cfg.ckpt_path), "split": str(cfg.split), "complete": True})
        return frame, str(Path(cfg.ckpt_path).expanduser().resolve())
    raise KibbleError("nothing to evaluate: give ckpt_path=CKPT or predictions=PARQUET or round=N")


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

    display = classes.display_names
    show_display = any(display[n] != n for n in display)
    table = Table(title=f"{result['split']} split: {result['n']} images, accuracy {result['accuracy']:.4f}, macro F1 {result['f1_macro']:.4f}")
    table.add_column("class")
    if show_display:
        table.add_column("name")
    for col in ("precision", "recall", "F1", "support", "target"):
        table.add_column(col, justify="right")
    targets = {r["class"]: r for r in (result.get("targets") or {}).get("per_class", [])}
    for row in result["per_class"]:
        cells = [row["class"]] + ([display.get(row["class"], row["class"])] if show_display else [])
        cells += [f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"])]
        gate = targets.get(row["class"])
        cells.append("" if gate is None else f"{gate['target']:.2f} {'ok' if gate['passed'] else 'FAIL'}")
        table.add_row(*cells)
    Console().print(table)


class TargetsNotMet(SystemExit):
    """A missed target with eval.fail_on_targets=true: exit status 1 (not a user input error)."""

    def __init__(self, failing: list[str], weighted_failed: bool):
        super().__init__(1)
        self.failing = failing
        self.weighted_failed = weighted_failed


def print_gate(result: dict[str, Any]) -> None:
    targets = result["targets"]
    if targets["passed"]:
        print(f"targets met: every class F1 >= its target, weighted F1 {result['weighted_f1']:.4f} >= {targets['weighted_f1']:.2f}")
        return
    print(f"targets NOT met: {len(targets['failing_classes'])} of {len(targets['per_class'])} classes below their F1 target; weighted F1 {result['weighted_f1']:.4f} "
          f"({'ok' if targets['weighted_f1_passed'] else 'below'} target {targets['weighted_f1']:.2f})")
    for row in targets["per_class"]:
        if not row["passed"]:
            print(f"  FAIL {row['class']}: {row['reason']}")


def eval_set_checks(cfg: DictConfig, ws: Workspace, manifest: pd.DataFrame, classes: ClassList, split: str) -> dict[str, Any]:
    opts = cfg.get("eval") or {}
    coverage_by = opts.get("coverage_by")
    if coverage_by is None and opts.get("slice_by"):
        coverage_by = list(opts.get("slice_by"))
    return check_eval_set(
        manifest, classes.names, split=split, min_per_class=int(opts.get("min_per_class", 10)),
        coverage_columns=list(coverage_by) if coverage_by is not None else None, data_root=ws.data_root,
        check_duplicates=bool(opts.get("check_duplicates", True)), progress=True,
    )


def print_checks(checks: dict[str, Any]) -> None:
    if checks["passed"]:
        print(f"evaluation set ({checks['split']}, {checks['n']} images): all checks passed")
    for problem in checks["problems"]:
        print(f"evaluation set: {problem}")


def run(cfg: DictConfig) -> dict[str, Any]:
    from kibble.report.eval import evalset_section, example_kwargs, write_eval_report
    from kibble.report.document import write_report

    ws = Workspace(cfg.workspace).require()
    classes = ClassList.load(ws.classes)
    manifest = load_manifest(ws.manifest, classes.names)
    opts = cfg.get("eval") or {}
    out_dir = Path(cfg.paths.output_dir)
    split = str(cfg.split)
    if cfg.get("check_only", False):
        checks = eval_set_checks(cfg, ws, manifest, classes, split)
        result = {"split": split, "workspace": str(ws.root), "evalset": checks}
        atomic_write_json(out_dir / "metrics.json", result)
        if opts.get("report", True):
            write_report(out_dir / "report.html", "kibble evaluation-set checks", [evalset_section(checks, classes)], f"{split} split of {ws.root}")
        print_checks(checks)
        return result
    unknown = unknown_target_classes(classes.targets, classes.names)
    if unknown:  # the gate would skip them and could pass with a typo
        raise KibbleError(f"{ws.classes}: targets.class_f1 names unknown class(es) {unknown[:5]}; use class names from "
                          f"its `classes:` list (e.g. {classes.names[:3]})")
    rows = labelled_rows(manifest, split, str(ws.manifest))
    frame, source = predictions_for(cfg, ws, rows, classes, out_dir)
    rows, probs, missing = align(rows, frame, source)
    y_true = np.array([classes.index[label] for label in rows["label"]], dtype=np.int64)
    cost = classes.severity_matrix(ws.root)
    metrics = evaluate_probs(
        y_true, probs, classes, cost, metadata=rows, slice_by=list(opts.get("slice_by") or []), top_k=int(opts.get("top_confusions", 10)),
        n_bins=int(opts.get("calibration_bins", 15)), target_precision=float(opts.get("target_precision", 0.95)),
    )
    checks = eval_set_checks(cfg, ws, manifest, classes, split) if opts.get("checks", True) else None
    result = {"split": split, "source": source, "workspace": str(ws.root), "n_missing_predictions": missing, **metrics}
    if checks is not None:
        result["evalset"] = checks
    cm = np.asarray(metrics["confusion_matrix"])
    weighted = pd.DataFrame(severity_confusion(cm, cost), index=classes.names, columns=classes.names)
    atomic_write_csv(out_dir / "severity_confusion.csv", weighted.reset_index(names="true"))
    atomic_write_json(out_dir / "metrics.json", result)
    if opts.get("report", True):
        examples = example_kwargs(rows, y_true, probs, ws.data_root, int(opts.get("examples_per_pair", 4)))
        report = write_eval_report(out_dir / "report.html", result, classes, examples, checks)
        log.info("report: %s", report)
    print_table(result, classes)
    print(f"accuracy {result['accuracy']:.4f}  macro F1 {result['f1_macro']:.4f}  weighted F1 {result['weighted_f1']:.4f}  "
          f"severity-weighted error {result['severity_weighted_error']:.4f}  ECE {result['calibration']['ece']:.4f}  "
          f"({split} split, {result['n']} images) -> {out_dir / 'metrics.json'}")
    if checks is not None and not checks["passed"]:
        print_checks(checks)
    print_gate(result)
    if opts.get("fail_on_targets", False) and not result["passed"]:
        raise TargetsNotMet(result["targets"]["failing_classes"], not result["targets"]["weighted_f1_passed"])
    return result


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="eval")
def main(cfg: DictConfig) -> None:
    run(cfg)
