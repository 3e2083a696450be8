"""Benchmark `kibble eval` on Imagewoof (../shared/data/imagewoof): the scoping numbers of a real dog-breed model.

    python scripts/bench_eval.py [--workdir workspaces/bench] [--epochs 30]

Imports Imagewoof (the shipped imagewoof.yaml taxonomy gives the breed groups), runs one cached
features-mode 5-fold round (its round callback writes rounds/000/report.html), then `kibble eval
round=0 split=val` on the fold ensemble. Reports per-class/weighted F1 vs targets, the
severity-weighted error against the error rate, and compares the model's mean cost per error with
the baseline of errors spread uniformly over the other breeds (same run, same cost matrix): a ratio
< 1 means the model's mistakes are milder (more within-group) than random ones. Also times eval and
the report. Appends to docs/benchmarks.md; skips cleanly without the shared data.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from kibble.benchmarks import imagewoof_bench, record
from kibble.config import compose_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("workspaces/bench"))
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    bench = imagewoof_bench(args.workdir, "imagewoof_eval")
    if bench is None:
        return
    from kibble.data.classes import ClassList
    from kibble.tasks import evaluate, import_data, kfold

    root, ws = bench.root, bench.workspace
    common = bench.overrides
    imported = import_data.run(compose_config("import", ["source=image_folder", f"source.root={root}", "overwrite=true", *common]))
    features = [*common, "model=features_lite0", f"trainer.max_epochs={args.epochs}", "cv.progress=false", "strategy.budget=200"]
    start = time.perf_counter()
    kfold.run(compose_config("kfold", features))
    round_seconds = time.perf_counter() - start

    out = ws / "runs" / "bench_eval"
    start = time.perf_counter()
    result = evaluate.run(compose_config("eval", [*common, "round=0", "split=val", "eval.check_duplicates=false"], output_dir=out))
    eval_seconds = time.perf_counter() - start
    start = time.perf_counter()
    evaluate.run(compose_config("eval", [*common, "round=0", "split=val", "eval.check_duplicates=false", "eval.report=false"], output_dir=out / "no_report"))
    metrics_seconds = time.perf_counter() - start

    classes = ClassList.load(ws / "classes.yaml")
    cost = classes.severity_matrix(ws)
    off = ~np.eye(len(classes), dtype=bool)
    cm = np.asarray(result["confusion_matrix"])
    support = cm.sum(axis=1)
    # baseline: each class's errors spread uniformly over the other classes (same number of errors per class)
    errors = support - np.diag(cm)
    uniform_cost = float((errors * np.where(off, cost, 0).sum(axis=1) / (len(classes) - 1)).sum() / max(errors.sum(), 1))
    sev = result["severity"]
    cal = result["calibration"]
    thr = cal["threshold"]
    table = pd.DataFrame([
        {"metric": "taxonomy picked by import", "value": imported.get("taxonomy")},
        {"metric": "val images / classes", "value": f"{result['n']} / {len(classes)}"},
        {"metric": "accuracy", "value": result["accuracy"]},
        {"metric": "macro F1", "value": result["f1_macro"]},
        {"metric": "importance-weighted F1 (target 0.85)", "value": f"{result['weighted_f1']:.4f} ({'pass' if result['targets']['weighted_f1_passed'] else 'fail'})"},
        {"metric": "classes below F1 0.80", "value": ", ".join(classes.classes[classes.index[c]].display_name for c in result["targets"]["failing_classes"]) or "none"},
        {"metric": "error rate", "value": sev["error_rate"]},
        {"metric": "severity-weighted error", "value": sev["severity_weighted_error"]},
        {"metric": "errors within / across groups", "value": f"{sev.get('within_group_errors')} / {sev.get('across_group_errors')}"},
        {"metric": "mean cost per error: model", "value": sev["mean_cost_per_error"]},
        {"metric": "mean cost per error: uniform-confusion baseline", "value": uniform_cost},
        {"metric": "ratio model / baseline", "value": sev["mean_cost_per_error"] / uniform_cost if uniform_cost else float("nan")},
        {"metric": "ECE", "value": cal["ece"]},
        {"metric": "confidence threshold for precision 0.95 (coverage)", "value": "none" if thr["threshold"] is None else f"{thr['threshold']:.3f} ({thr['coverage']:.1%})"},
        {"metric": "k-fold round incl. queue + round report (s)", "value": round_seconds},
        {"metric": "kibble eval with report (s) / without (s)", "value": f"{eval_seconds:.1f} / {metrics_seconds:.1f}"},
        {"metric": "eval report.html size (MB)", "value": (out / "report.html").stat().st_size / 1e6},
        {"metric": "round report.html size (MB)", "value": (ws / "rounds" / "000" / "report.html").stat().st_size / 1e6},
    ])
    table["value"] = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in table["value"]]
    print(table.to_string(index=False))
    record("kibble eval on Imagewoof: targets, severity, calibration (fold ensemble, val split)", table, [
        "Features mode (frozen tf_efficientnet_lite0, offline weights, cached embeddings), 5 folds, the fold ensemble scored on Imagewoof's val folder.",
        "Severity costs from the shipped imagewoof.yaml groups: same group 0.5, other group 1.0. The baseline spreads each class's errors uniformly over the other 9 breeds.",
        f"Reports: {out / 'report.html'} and {ws / 'rounds' / '000' / 'report.html'}.",
    ])


if __name__ == "__main__":
    main()
