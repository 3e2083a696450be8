"""`kibble eval` against the scoping targets on a model trained on digits: metrics.json holds every
number, the report is written, the CI gate exits 1 for a deliberately bad model, bad input fails clearly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers import compose_config, run_kibble
from kibble import KibbleError
from kibble.data.manifest import load_manifest
from kibble.predictions.store import make_frame, write_store
from kibble.tasks import evaluate, train

pytestmark = pytest.mark.slow  # trains two models (features mode) on digits

DIGITS = [str(i) for i in range(10)]


def features_overrides(ws: Path, weights: Path) -> list[str]:
    return [f"workspace={ws}", "model=features_lite0", f"paths.effnet_lite0={weights}", "embedder.input_size=32", "embedder.num_workers=0",
            "trainer=cpu", "trainer.max_epochs=6", "data.num_workers=0", "callbacks=quiet", "logger=none"]


@pytest.fixture(scope="module")
def models(digits_workspace: Path, digits_feature_cache: Path, effnet_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A features-mode head trained on digits (with an `environment` metadata column), and a deliberately
    bad one trained on shuffled train labels."""
    root = tmp_path_factory.mktemp("eval_report")
    ws = root / "ws"
    shutil.copytree(digits_workspace, ws, ignore=shutil.ignore_patterns("runs", "multiruns"))
    shutil.copytree(digits_feature_cache, ws / "cache", dirs_exist_ok=True)
    manifest = pd.read_parquet(ws / "manifest.parquet")
    manifest["environment"] = np.where(np.arange(len(manifest)) % 3 == 0, "outdoor", "indoor")
    manifest.to_parquet(ws / "manifest.parquet", index=False)
    good = train.run(compose_config("train", features_overrides(ws, effnet_weights), output_dir=root / "train_good"))

    bad_ws = root / "bad_ws"
    shutil.copytree(ws, bad_ws, ignore=shutil.ignore_patterns("runs", "multiruns"))
    train_rows = manifest["split"] == "train"
    manifest.loc[train_rows, "label"] = np.random.default_rng(0).permutation(manifest.loc[train_rows, "label"].to_numpy())
    manifest.to_parquet(bad_ws / "manifest.parquet", index=False)
    bad = train.run(compose_config("train", features_overrides(bad_ws, effnet_weights), output_dir=root / "train_bad"))
    return {"ws": ws, "root": root, "good": Path(good["best_checkpoint"]), "bad": Path(bad["best_checkpoint"]), "good_accuracy": good["test_accuracy"]}


def eval_cfg(ws: Path, out: Path, *overrides: str):
    return compose_config("eval", [f"workspace={ws}", *overrides], output_dir=out)


def set_targets(ws: Path, **targets) -> None:
    path = ws / "classes.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["targets"] = targets
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def test_metrics_json_has_every_number(models: dict, tmp_path: Path):
    out = tmp_path / "eval"
    result = evaluate.run(eval_cfg(models["ws"], out, f"ckpt_path={models['good']}", "eval.slice_by=[environment]"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(models["good_accuracy"], abs=1e-6) and metrics["n"] == 359
    # per class P/R/F1/support, macro and importance-weighted F1 (equal weights: the macro F1)
    assert {"precision", "recall", "f1", "support"} <= set(metrics["per_class"][0])
    assert metrics["weighted_f1"] == pytest.approx(metrics["f1_macro"])
    assert metrics["weights"] == {d: 1.0 for d in DIGITS}
    # targets with pass/fail per class and overall
    targets = metrics["targets"]
    assert targets["per_class_f1"] == 0.8 and targets["weighted_f1"] == 0.85
    assert [r["class"] for r in targets["per_class"]] == DIGITS
    assert targets["failing_classes"] == [r["class"] for r in metrics["per_class"] if r["f1"] < 0.8]
    assert metrics["passed"] == (not targets["failing_classes"] and metrics["weighted_f1"] >= 0.85)
    # top confused pairs, consistent with the confusion matrix
    cm = np.array(metrics["confusion_matrix"])
    top = metrics["top_confusions"][0]
    assert top["count"] == (cm - np.diag(np.diag(cm))).max() and top["count"] == cm[DIGITS.index(top["true"]), DIGITS.index(top["predicted"])]
    # severity: digits have no groups, so every error costs 1 and the weighted error is the error rate
    assert metrics["severity_weighted_error"] == pytest.approx(1 - metrics["accuracy"])
    assert metrics["severity"]["error_rate"] == pytest.approx(1 - metrics["accuracy"])
    severity_csv = pd.read_csv(out / "severity_confusion.csv", index_col=0)
    assert severity_csv.shape == (10, 10) and severity_csv.to_numpy().sum() == pytest.approx(metrics["severity"]["total_cost"])
    # calibration
    cal = metrics["calibration"]
    assert 0 <= cal["ece"] <= 1 and sum(b["count"] for b in cal["bins"]) == 359 and cal["accuracy"] == pytest.approx(metrics["accuracy"])
    thr = cal["threshold"]
    assert thr["target_precision"] == 0.95 and (thr["threshold"] is None or thr["precision"] >= 0.95)
    # slices by the metadata column, and the evaluation-set checks
    slices = {r["value"]: r for r in metrics["slices"]["environment"]}
    assert set(slices) == {"indoor", "outdoor"} and sum(r["n"] for r in slices.values()) == 359
    evalset = metrics["evalset"]
    assert evalset["images_per_class"]["0"] == metrics["per_class"][0]["support"] and evalset["train_duplicates"] == []
    assert evalset["coverage"][0]["column"] == "environment"
    # the report and its figures
    html = (out / "report.html").read_text()
    for title in ("Per-class metrics and targets", "Confusion matrix", "Calibration", "Error severity", "Top confused pairs", "Slices", "Evaluation set"):
        assert title in html
    assert html.count("data:image/png;base64,") >= 3 and "data:image/jpeg;base64," in html  # figures + pair thumbnails
    for png in ("f1_per_class.png", "confusion_matrix.png", "reliability.png"):
        assert (out / png).stat().st_size > 1000
    assert result["passed"] == metrics["passed"]


def test_gate_passes_a_good_model_and_fails_a_bad_one(models: dict, tmp_path: Path):
    ws = tmp_path / "ws"
    shutil.copytree(models["ws"], ws, ignore=shutil.ignore_patterns("runs", "cache"))
    set_targets(ws, per_class_f1=0.4, weighted_f1=0.5)  # this product's targets (the tiny model is no 0.8 model)
    good, bad = tmp_path / "good", tmp_path / "bad"
    evaluate.run(eval_cfg(models["ws"], good, f"ckpt_path={models['good']}", "eval.report=false"))
    evaluate.run(eval_cfg(models["ws"], bad, f"ckpt_path={models['bad']}", "eval.report=false"))
    proc = run_kibble("eval", f"workspace={ws}", f"predictions={good / 'predictions.parquet'}", "eval.fail_on_targets=true", "eval.report=false", f"hydra.run.dir={tmp_path / 'run_good'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "targets met" in proc.stdout
    proc = run_kibble("eval", f"workspace={ws}", f"predictions={bad / 'predictions.parquet'}", "eval.fail_on_targets=true", "eval.report=false", f"hydra.run.dir={tmp_path / 'run_bad'}")
    assert proc.returncode == 1
    metrics = json.loads((tmp_path / "run_bad" / "metrics.json").read_text())
    failing = metrics["targets"]["failing_classes"]
    assert len(failing) >= 8 and not metrics["passed"]
    assert "targets NOT met" in proc.stdout
    for row in metrics["targets"]["per_class"]:
        if not row["passed"]:
            assert f"  FAIL {row['class']}: F1 {row['f1']:.3f} < 0.40" in proc.stdout
    assert "Traceback" not in proc.stderr
    # in-process, the same gate is a SystemExit(1) that carries the failing classes
    with pytest.raises(evaluate.TargetsNotMet) as gate:
        evaluate.run(eval_cfg(ws, tmp_path / "again", f"predictions={bad / 'predictions.parquet'}", "eval.fail_on_targets=true", "eval.report=false"))
    assert gate.value.code == 1 and gate.value.failing == failing


def test_check_only(models: dict, tmp_path: Path):
    result = evaluate.run(eval_cfg(models["ws"], tmp_path / "check", "check_only=true", "eval.min_per_class=40"))
    checks = result["evalset"]
    assert set(checks["classes_below_min"]) == {d for d, n in checks["images_per_class"].items() if n < 40} != set()
    assert "accuracy" not in result and (tmp_path / "check" / "report.html").is_file()
    assert json.loads((tmp_path / "check" / "metrics.json").read_text())["evalset"]["problems"] == checks["problems"]


def write_preds(ws: Path, path: Path, names: list[str] | None = None) -> Path:
    manifest = load_manifest(ws / "manifest.parquet")
    test = manifest[manifest["split"] == "test"]
    probs = np.eye(10, dtype=np.float32)[[int(label) for label in test["label"]]]
    return write_store(path, make_frame(test["sample_id"].tolist(), probs), {"class_names": names or DIGITS, "complete": True})


def test_bad_input_fails_with_one_clear_line(models: dict, tmp_path: Path):
    ws = tmp_path / "ws"
    shutil.copytree(models["ws"], ws, ignore=shutil.ignore_patterns("runs", "cache"))
    preds = write_preds(ws, tmp_path / "perfect.parquet")
    result = evaluate.run(eval_cfg(ws, tmp_path / "ok", f"predictions={preds}", "eval.report=false"))
    assert result["passed"] and result["accuracy"] == 1.0 and result["calibration"]["threshold"]["coverage"] == 1.0
    other = write_preds(ws, tmp_path / "other.parquet", [f"c{i}" for i in range(10)])
    with pytest.raises(KibbleError, match=r"other.parquet: class list .* differs from classes.yaml"):
        evaluate.run(eval_cfg(ws, tmp_path / "e1", f"predictions={other}"))
    with pytest.raises(KibbleError, match=r"no rows in split 'val'"):
        evaluate.run(eval_cfg(ws, tmp_path / "e2", f"predictions={preds}", "split=val"))
    with pytest.raises(KibbleError, match=r"eval.slice_by: manifest has no column 'weather'"):
        evaluate.run(eval_cfg(ws, tmp_path / "e3", f"predictions={preds}", "eval.slice_by=[weather]"))
    with pytest.raises(KibbleError, match=r"rounds/003/predictions.parquet: round 3 has no fold-ensemble predictions"):
        evaluate.run(eval_cfg(ws, tmp_path / "e4", "round=3"))
    with pytest.raises(KibbleError, match=r"give one of ckpt_path=, predictions=, round=, not both \(predictions and round\)"):
        evaluate.run(eval_cfg(ws, tmp_path / "e5", f"predictions={preds}", "round=0"))
    classes = ws / "classes.yaml"
    doc = yaml.safe_load(classes.read_text())
    for entry in doc["classes"][3:]:
        del entry["weight"]
    classes.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = run_kibble("eval", f"workspace={ws}", f"predictions={preds}", f"hydra.run.dir={tmp_path / 'run_w'}")
    assert proc.returncode == 1
    line = proc.stderr.strip().splitlines()[-1]  # (Hydra prints "Error executing job with overrides" above it)
    assert "Traceback" not in proc.stderr and line.startswith("kibble eval: error: ") and "classes ['3', '4', '5', '6', '7'] ... have no `weight` while others do" in line
    doc["classes"][4]["weight"] = "heavy"
    classes.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(KibbleError, match=r"class '4' has weight 'heavy'; weights must be numbers >= 0"):
        evaluate.run(eval_cfg(ws, tmp_path / "e6", f"predictions={preds}"))
    for entry in doc["classes"]:
        entry["weight"] = 0
    classes.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(KibbleError, match="all have weight 0"):
        evaluate.run(eval_cfg(ws, tmp_path / "e7", f"predictions={preds}"))
