"""Workspace operations at 10^6 rows: import, queue, label view (issue 15, item 4: each within 10 s here).

    python scripts/bench_ops.py                  # records docs/benchmarks.md
    python scripts/bench_ops.py --rows 100000 --repeats 1 --no-record    # a quick look

Each operation runs as the real task or library call in a fresh child process (Python's start-up and
imports excluded, they do not grow with the data), --repeats times; median and min-max wall time and
the child's own peak resident set (VmHWM):
- `kibble import source=csv check_images=none` of a --rows-row CSV (path, label, split; 120 classes):
  reading and validating the table, the manifest, one import event per row, the workspace files;
- `kibble queue` of a round whose OOF store holds --rows x 120 softmax rows (bench_scale's synthetic
  OOF), with a probability strategy (normalized_margin; the default `combine` needs OOF embeddings,
  whose k-NN at 10^6 rows has its own section) and no image checks, at a 1,000-item budget and at the
  default budget (10 % of the round: 100,000 items with Label Studio tasks);
- the end-to-end round of issue 15 (target 60 s and 8 GiB): `kibble queue` with every probability strategy
  (kfold, self_confidence, normalized_margin, entropy, precision with renormalize, confident_learning) on a
  --rows x --e2e-classes OOF store, reading the store included;
- the label view rebuilt from the whole history: `resolve_labels` over the history + `label_view`
  (what `policy.reapply=true` and a re-import do), after 100,000 review answers were merged.
The image checks the importer runs by default cost per image, not per row of a table: measured
beside it on real images (Imagewoof, --image-sample files), images/s for each `check_images` level.
The merge of 100,000 reviews is measured by scripts/bench_labels.py (its own section).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
TITLE = "Workspace operations at 10^6 rows: import, queue, label view (scripts/bench_ops.py)"
QUEUE_ARGS = ["strategy.strategies=[normalized_margin]", "strategy.params={}", "strategy.data_issues.checks=[]", "strategy.data_issues.budget=0"]
# every probability strategy (precision without training: renormalize), the end-to-end round of issue 15's 1M x 1,000 target
ALL_PROB_ARGS = ["strategy=all", "strategy.params.precision.mode=renormalize", "strategy.data_issues.checks=[]", "strategy.data_issues.budget=0"]


def write_csv(path: Path, rows: int, classes: int = 120, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    names = np.array([f"breed_{i:03d}" for i in range(classes)], dtype=object)
    ids = np.char.add("img", np.char.zfill(np.arange(rows).astype(str), 7)).astype(object)
    split = np.where(rng.random(rows) < 0.8, "train", "test").astype(object)
    pd.DataFrame({"sample_id": ids, "path": "images/" + ids + ".jpg", "label": names[rng.integers(0, classes, rows)],
                  "split": split}).to_csv(path, index=False)


def build_round(workspace: Path, rows: int, classes: int = 120, answers: bool = True) -> None:
    """A workspace (bench_labels' builder) with a round-0 OOF store of synthetic softmax rows, and 100,000 merged answers."""
    import bench_labels
    import bench_scale
    from kibble.data.classes import ClassList
    from kibble.data.manifest import load_manifest
    from kibble.paths import Workspace
    from kibble.predictions.store import make_frame, write_store

    bench_labels.build_workspace(workspace, rows, classes=classes)
    ws = Workspace(workspace)
    classes = ClassList.load(ws.classes)
    manifest = load_manifest(ws.manifest, classes.names)
    _, probs = bench_scale.synthetic(len(manifest), len(classes.names))
    frame = make_frame(manifest["sample_id"].to_numpy(dtype=object), probs, manifest["label"].to_numpy(dtype=object),
                       fold=np.arange(len(manifest)) % 5)
    ws.round_dir(0).mkdir(parents=True, exist_ok=True)
    write_store(ws.round_dir(0) / "oof.parquet", frame, {"round": 0, "class_names": classes.names, "complete": True, "n_folds": 5})
    del frame, probs
    if not answers:
        return
    reviews = bench_labels.write_reviews(workspace, min(100_000, rows // 10), seed=1, annotators=[f"annotator_{i}" for i in range(5)])
    from kibble.labels.merge import merge_reviews
    from kibble.labels.reviews import read_reviews

    merge_reviews(ws, read_reviews(reviews, manifest, classes.names), manifest=manifest)


# ------------------------------------------------------------------------------ child process
def child(kind: str, target: str, arg: str) -> None:
    from kibble.config import compose_config

    out_dir = str(Path(target).parent / "out")
    extra: dict = {}
    if kind == "import":
        from kibble.tasks import import_data

        cfg = compose_config("import", [f"workspace={target}", "source=csv", f"source.path={arg}", "check_images=none"], output_dir=out_dir)
        start = time.perf_counter()
        import_data.run(cfg)
    elif kind in ("queue", "queue_all"):
        from kibble.tasks import queue

        cfg = compose_config("queue", [f"workspace={target}", "round=0", f"strategy.budget={arg}",
                                       *(ALL_PROB_ARGS if kind == "queue_all" else QUEUE_ARGS)], output_dir=out_dir)
        start = time.perf_counter()
        extra["queue_size"] = queue.run(cfg)["queue_size"]
    elif kind == "view":
        from kibble.data.classes import ClassList
        from kibble.data.manifest import load_manifest, validate_manifest
        from kibble.labels.history import load_events
        from kibble.labels.merge import label_view
        from kibble.labels.policy import resolve_labels
        from kibble.labels.policy_file import policy_for_merge
        from kibble.paths import Workspace

        ws = Workspace(target)
        start = time.perf_counter()
        classes = ClassList.load(ws.classes)
        manifest = load_manifest(ws.manifest, classes.names)
        events = load_events(ws.label_events)
        view, _ = label_view(manifest, resolve_labels(events, policy_for_merge(ws, None)[0]))
        validate_manifest(view, classes.names)
        extra["events"] = len(events)
        extra["equal"] = bool((view["label"].astype(object).fillna("") == manifest["label"].astype(object).fillna("")).all())
    else:
        raise SystemExit(f"unknown child {kind}")
    seconds = time.perf_counter() - start
    from bench_labels import peak_rss_gb

    print(json.dumps({"seconds": seconds, "peak_gb": peak_rss_gb(), **extra}))


def measure(kind: str, target: Path, arg: str = "") -> dict:
    from bench_labels import run_child

    return run_child(__file__, kind, target, arg)


def image_check_rates(folder: Path, sample: int, seed: int = 0) -> list[dict]:
    from kibble.data import images

    files = sorted(folder.rglob("*.JPEG")) + sorted(folder.rglob("*.jpg"))
    if not files:
        return []
    rng = np.random.default_rng(seed)
    chosen = [files[i] for i in rng.choice(len(files), min(sample, len(files)), replace=False)]
    for path in chosen:  # into the page cache first: every level then reads the same warm files
        path.read_bytes()
    rows = []
    for check in ("exists", "header", "decode"):
        times = []
        for _ in range(2):  # the better of two passes
            images._scanned_ok.clear()  # no memo from an earlier pass
            start = time.perf_counter()
            bad = images.scan_images(chosen, "skip", check=check)
            times.append(time.perf_counter() - start)
        seconds = min(times)
        rows.append({"check_images": check, "images": len(chosen), "s": seconds, "images/s": len(chosen) / seconds, "bad": len(bad)})
    decode = rows[-1]["images/s"]
    for row in rows:
        row["x faster than decode"] = row["images/s"] / decode
        row["10^6 images, min (est.)"] = 1e6 / row["images/s"] / 60
    return rows


def run_all(args: argparse.Namespace, workdir: Path) -> tuple[pd.DataFrame, list[dict], dict]:
    workdir.mkdir(parents=True, exist_ok=True)
    csv = workdir / "source.csv"
    start = time.perf_counter()
    write_csv(csv, args.rows)
    base = workdir / "round" / "ws"
    build_round(base, args.rows)
    info = {"setup_s": time.perf_counter() - start}
    results: dict[str, list[dict]] = {"import": [], "queue_small": [], "queue_default": [], "view": []}
    default_budget = str(int(round(0.1 * args.rows)))
    for r in range(args.repeats):
        target = workdir / f"import{r}" / "ws"
        results["import"].append(measure("import", target, str(csv)))
        shutil.rmtree(target.parent)
        results["queue_small"].append(measure("queue", base, "1000"))
        results["queue_default"].append(measure("queue", base, default_budget))
        results["view"].append(measure("view", base))
        print(f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]['seconds']:.1f} s" for k, v in results.items()), flush=True)
    if args.e2e_classes:  # the 1M x 1,000 round: store read, every probability strategy, the queue (one workspace, then removed)
        shutil.rmtree(base.parent)
        wide = workdir / "wide" / "ws"
        build_round(wide, args.rows, classes=args.e2e_classes, answers=False)
        results["e2e"] = [measure("queue_all", wide, "1000") for _ in range(args.e2e_repeats)]
        print(f"e2e: {[round(x['seconds'], 1) for x in results['e2e']]} s", flush=True)
    info["view_equal"] = all(x["equal"] for x in results["view"])
    info["events"] = results["view"][0]["events"]

    def row(what: str, key: str, target: float = 10, memory: float | None = None) -> dict:
        secs = [x["seconds"] for x in results[key]]
        median, peak = statistics.median(secs), max(x["peak_gb"] for x in results[key])
        met = median < target and (memory is None or peak < memory)
        return {"operation": what, "s (median)": median, "min-max s": f"{min(secs):.1f}-{max(secs):.1f}", "peak GiB": peak,
                "target": f"{target:.0f} s{f', {memory:.0f} GiB' if memory else ''}: " + ("met" if met else "**missed**")}

    table = pd.DataFrame([
        row(f"kibble import source=csv check_images=none: {args.rows:,} rows, 120 classes", "import"),
        row(f"kibble queue: 1,000 items from a {args.rows:,} x 120 OOF", "queue_small"),
        row(f"kibble queue: {int(default_budget):,} items (the default 10 %), with Label Studio tasks", "queue_default"),
        row(f"label view rebuilt from the whole history ({info['events']:,} events)", "view"),
    ] + ([row(f"kibble queue, every probability strategy, 1,000 items, from a {args.rows:,} x {args.e2e_classes:,} OOF "
              "(store read included)", "e2e", target=60, memory=8)] if args.e2e_classes else []))
    rates = image_check_rates(Path(args.images), args.image_sample) if args.images else []
    return table, rates, info


def record(table: pd.DataFrame, rates: list[dict], info: dict, args: argparse.Namespace) -> None:
    from kibble.benchmarks import command_line, replace_section

    lines = [
        f"## {TITLE}", "",
        f"Command: `{command_line()}`  ",
        f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPU cores, load average "
        f"{os.getloadavg()[0]:.1f} at the end, pandas {pd.__version__}, Python {sys.version.split()[0]}", "",
        table.to_markdown(index=False, floatfmt=".3g"), "",
        f"- Each row: the real task (or, for the view, the library calls `policy.reapply` and a re-import make) in a fresh child "
        f"process; median of {args.repeats}; peak = the child's own maximum resident set. The queue and view rows run on one "
        f"workspace of {args.rows:,} rows with a round-0 OOF store and {min(100_000, args.rows // 10):,} merged review answers "
        f"(set up in {info['setup_s']:.0f} s). The rebuilt view equals the manifest the merges wrote: {info['view_equal']}.",
        "- The queue uses a probability strategy (normalized_margin) and no image checks: the default `combine` adds `neighbors`, "
        "which needs OOF embeddings (its k-NN at 10^6 rows: the neighbors section), and image checks read every image once "
        "(cached in W/cache/image_stats.parquet afterwards). Before this change the 100,000-item queue took minutes: each queued "
        "row scanned a strategy's whole order for its rank (10^5 x 10^6 comparisons), and the Label Studio file was an indented "
        "JSON dump (pure-Python encoder).",
        "- Merge of 100,000 reviews into 1,000,000 rows: the \"Label history at scale\" section (scripts/bench_labels.py).",
    ]
    if rates:
        lines += ["", f"Image checks on real images (Imagewoof JPEGs, {rates[0]['images']:,} drawn at random, one process, "
                  "files in the page cache, the better of two passes):", "",
                  pd.DataFrame(rates).to_markdown(index=False, floatfmt=".3g"), "",
                  "- `check_images=decode` (the default) decodes every pixel and is what a 10^6-image import costs most; "
                  "`header` still catches missing, empty and over-sized files and unknown formats, not truncated pixels; "
                  "`none` defers every check to the readers (train, predict, embed with `on_bad_image=skip`)."]
    replace_section(f"## {TITLE}", "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagewoof"),
                        help="a folder of real images for the image-check rates ('' to skip)")
    parser.add_argument("--image-sample", type=int, default=2000)
    parser.add_argument("--e2e-classes", type=int, default=1000, help="classes of the end-to-end round's OOF (0: skip it)")
    parser.add_argument("--e2e-repeats", type=int, default=2)
    parser.add_argument("--workdir", help="where the workspaces are built (default: a temp dir, removed at the end)")
    parser.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "TARGET", "ARG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_ops_"))
    try:
        table, rates, info = run_all(args, workdir)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table.to_markdown(index=False, floatfmt=".3g"))
    if rates:
        print(pd.DataFrame(rates).to_markdown(index=False, floatfmt=".3g"))
    if not args.no_record:
        record(table, rates, info, args)


if __name__ == "__main__":
    main()
