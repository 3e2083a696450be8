"""Report sections of an evaluation (the dict `kibble.metrics.evaluation.evaluate_probs` returns):
the gate verdict, the per-class table with targets, F1 bars, confusion matrices, severity,
calibration, top confused pairs with thumbnails, slices, and the evaluation-set checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kibble.data.classes import ClassList
from kibble.report.document import Section, escape, figure_html, table_html, write_report
from kibble.report.gallery import pair_examples_html
from kibble.report.plots import confusion_figure, f1_bars_figure, group_confusion_figure, reliability_figure


def gate_html(result: dict[str, Any]) -> str:
    targets = result["targets"]
    ok = targets["passed"]
    verdict = "PASS: every target is met" if ok else f"FAIL: {len(targets['failing_classes'])} classes below target" + ("" if targets["weighted_f1_passed"] else ", weighted F1 below target")
    return f'<p class="gate verdict-{"pass" if ok else "fail"}">{escape(verdict)}</p>'


def summary_section(result: dict[str, Any], extra: dict[str, Any] | None = None, classes: ClassList | None = None) -> Section:
    t = result["targets"]
    cal = result["calibration"]
    thr = cal["threshold"]
    rows = [
        ("images", result["n"]),
        ("accuracy", f"{result['accuracy']:.4f}"),
        ("macro F1", f"{result['f1_macro']:.4f}"),
        ("importance-weighted F1", f"{result['weighted_f1']:.4f} (target {t['weighted_f1']:.2f}: {'pass' if t['weighted_f1_passed'] else 'FAIL'})"),
        ("classes meeting F1 target", f"{len(t['per_class']) - len(t['failing_classes'])} of {len(t['per_class'])} (target {t['per_class_f1']:.2f})"),
        ("severity-weighted error", f"{result['severity_weighted_error']:.4f} (plain error rate {result['severity']['error_rate']:.4f})"),
        ("expected calibration error", f"{cal['ece']:.4f}"),
        (f"confidence threshold for precision {thr['target_precision']:.2f}",
         "not reachable" if thr["threshold"] is None else f"{thr['threshold']:.3f} (keeps {thr['coverage']:.1%} of images at precision {thr['precision']:.3f})"),
    ]
    rows += list((extra or {}).items())
    frame = pd.DataFrame(rows, columns=["metric", "value"])
    body = gate_html(result) + table_html(frame.astype(str))
    if t["failing_classes"]:
        display = classes.display_names if classes is not None else {}
        failing = [display.get(c, c) for c in t["failing_classes"][:50]]
        body += f"<p>Failing classes: {escape(', '.join(failing))}</p>"
    return Section("Summary", body)


def per_class_section(result: dict[str, Any], classes: ClassList) -> Section:
    info = {c.name: c for c in classes.classes}
    targets = {r["class"]: r for r in result["targets"]["per_class"]}
    severity = {r["class"]: r for r in result["severity"]["per_class"]}
    frame = pd.DataFrame([
        {
            "class": r["class"], "name": info[r["class"]].display_name or r["class"], "group": info[r["class"]].group or "",
            "weight": info[r["class"]].weight, "precision": r["precision"], "recall": r["recall"], "F1": r["f1"],
            "target": targets[r["class"]]["target"], "pass": "yes" if targets[r["class"]]["passed"] else "NO",
            "support": r["support"], "predicted": r["predicted"], "severity cost": severity[r["class"]]["cost"],
        }
        for r in result["per_class"]
    ])
    css = ["pass" if targets[c]["passed"] else "fail" for c in frame["class"]]
    return Section("Per-class metrics and targets", "<p>Click a column header to sort.</p>" + table_html(frame, row_classes=css))


def figures_sections(result: dict[str, Any], classes: ClassList, out_dir: Path, prefix: str = "") -> list[Section]:
    display = classes.display_names
    labels = [display[n] for n in classes.names]
    t = result["targets"]
    f1_fig = f1_bars_figure(t["per_class"], labels, t["per_class_f1"], result["weighted_f1"], t["weighted_f1"])
    cm_fig = confusion_figure(result["confusion_matrix"], labels)
    body = figure_html(f1_fig, out_dir / f"{prefix}f1_per_class.png", "Per-class F1 vs the target")
    cm_body = figure_html(cm_fig, out_dir / f"{prefix}confusion_matrix.png", "Confusion matrix, row-normalised")
    sections = [Section("Per-class F1", body), Section("Confusion matrix", cm_body)]
    cal = result["calibration"]
    rel = figure_html(reliability_figure(cal["bins"], cal["ece"], cal["threshold"]), out_dir / f"{prefix}reliability.png", "Reliability diagram")
    thr = cal["threshold"]
    text = (f"<p>ECE {cal['ece']:.4f}, MCE {cal['mce']:.4f}, Brier {cal['brier']:.4f}, NLL {cal['nll']:.4f}, mean confidence {cal['mean_confidence']:.4f} "
            f"vs accuracy {cal['accuracy']:.4f}. ")
    text += ("No confidence threshold reaches precision {:.2f}.</p>".format(thr["target_precision"]) if thr["threshold"] is None else
             f"Accepting predictions with confidence &ge; {thr['threshold']:.3f} gives precision {thr['precision']:.3f} on {thr['coverage']:.1%} of the images "
             f"(target {thr['target_precision']:.2f}); send the rest to a human.</p>")
    sections.append(Section("Calibration", text + rel))
    return sections


def severity_section(result: dict[str, Any], classes: ClassList, out_dir: Path, prefix: str = "") -> Section:
    sev = result["severity"]
    body = (f"<p>Severity-weighted error {sev['severity_weighted_error']:.4f} (mean cost per image; plain error rate {sev['error_rate']:.4f}, "
            f"mean cost per error {sev['mean_cost_per_error']:.3f}). Costs: {escape(classes.severity)}.</p>")
    if "group_confusion" in sev:
        body += f"<p>{sev['within_group_errors']} errors within a group (milder), {sev['across_group_errors']} across groups (severe).</p>"
        gc = sev["group_confusion"]
        body += figure_html(group_confusion_figure(gc["groups"], gc["matrix"]), out_dir / f"{prefix}group_confusion.png", "Confusion between class groups")
    costly = sorted(sev["per_class"], key=lambda r: -r["cost"])[:15]
    costly = [r for r in costly if r["cost"] > 0]
    if costly:
        frame = pd.DataFrame(costly)
        frame.insert(1, "name", [classes.display_names.get(c, c) for c in frame["class"]])
        body += "<p>Classes contributing the most cost:</p>" + table_html(frame)
    return Section("Error severity", body)


def confusions_section(result: dict[str, Any], classes: ClassList, examples: dict[str, Any] | None = None) -> Section:
    pairs = result["top_confusions"]
    if not pairs:
        return Section("Top confused pairs", "<p>No confusions: every prediction is correct.</p>")
    display = classes.display_names
    frame = pd.DataFrame(pairs)
    frame.insert(1, "true name", [display[c] for c in frame["true"]])
    frame.insert(3, "predicted name", [display[c] for c in frame["predicted"]])
    body = table_html(frame)
    if examples is not None:
        body += pair_examples_html(pairs, classes=classes, **examples)
    return Section("Top confused pairs", body)


def slices_section(result: dict[str, Any]) -> Section | None:
    if not result.get("slices"):
        return None
    body = "".join(f"<h3>by {escape(col)}</h3>" + table_html(pd.DataFrame(rows).drop(columns=["column"])) for col, rows in result["slices"].items())
    return Section("Slices", body)


def evalset_section(checks: dict[str, Any], classes: ClassList | None = None) -> Section:
    """The evaluation-set checks: problems first, then counts, coverage and duplicates."""
    verdict = "representative by these checks" if checks["passed"] else f"{len(checks['problems'])} problems"
    body = f'<p class="gate verdict-{"pass" if checks["passed"] else "fail"}">{escape(checks["split"])} split, {checks["n"]} images: {escape(verdict)}</p>'
    if checks["problems"]:
        body += "<ul>" + "".join(f"<li>{escape(p)}</li>" for p in checks["problems"]) + "</ul>"
    display = classes.display_names if classes is not None else {}
    counts = pd.DataFrame({"class": list(checks["images_per_class"]), "name": [display.get(c, c) for c in checks["images_per_class"]],
                           "images": list(checks["images_per_class"].values())})
    css = ["pass" if n >= checks["min_per_class"] else "fail" for n in counts["images"]]
    body += f"<h3>Images per class (minimum {checks['min_per_class']})</h3>" + table_html(counts, row_classes=css)
    for cov in checks["coverage"]:
        table = pd.DataFrame(cov["counts"]).T.reset_index().rename(columns={"index": "class"})
        body += f"<h3>Coverage of {escape(cov['column'])}</h3>" + table_html(table)
    if checks["duplicates_checked"]:
        dups = checks["train_duplicates"]
        body += f"<h3>Train/evaluation duplicates (same file bytes): {len(dups)}</h3>"
        if dups:
            body += table_html(pd.DataFrame(dups).head(200))
    return Section("Evaluation set", body)


def eval_sections(result: dict[str, Any], classes: ClassList, out_dir: str | Path, examples: dict[str, Any] | None = None,
                  checks: dict[str, Any] | None = None, prefix: str = "", extra: dict[str, Any] | None = None) -> list[Section]:
    """All sections of an evaluation; `examples` = kwargs of pair_examples_html for thumbnails."""
    out_dir = Path(out_dir)
    sections = [summary_section(result, extra, classes), per_class_section(result, classes)]
    sections += figures_sections(result, classes, out_dir, prefix)
    sections.append(severity_section(result, classes, out_dir, prefix))
    sections.append(confusions_section(result, classes, examples))
    sliced = slices_section(result)
    if sliced is not None:
        sections.append(sliced)
    if checks is not None:
        sections.append(evalset_section(checks, classes))
    return sections


def write_eval_report(path: str | Path, result: dict[str, Any], classes: ClassList, examples: dict[str, Any] | None = None,
                      checks: dict[str, Any] | None = None, title: str = "kibble evaluation") -> Path:
    path = Path(path)
    subtitle = f"{result.get('split', '')} split of {result.get('workspace', '')}; predictions: {result.get('source', '')}"
    return write_report(path, title, eval_sections(result, classes, path.parent, examples, checks), subtitle)


def example_kwargs(rows: pd.DataFrame, y_true: np.ndarray, probs: np.ndarray, data_root: str | Path, per_pair: int = 4) -> dict[str, Any]:
    """The pair_examples_html arguments for the rows an evaluation scored."""
    return {"rows": rows, "y_true": np.asarray(y_true), "y_pred": probs.argmax(axis=1), "confidence": probs.max(axis=1), "data_root": data_root, "per_pair": per_pair}
