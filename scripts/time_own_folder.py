"""The README's path for your own folder of images, timed: five commands from import to a merged first round.

    python scripts/time_own_folder.py [--per-class 100] [--workdir /tmp/own_folder]
    python scripts/time_own_folder.py --gpu --source .gpu/data --doc OUT.md --override paths.effnet_lite0=W.pth
                                      (on a GPU machine, from scripts/gpu_check.sh --own-folder: its own section)

Builds a folder like a user's (DIR/<class>/<image>, symlinks to `--per-class` Imagewoof train images of
each of its 10 classes; needs ../shared/data/imagewoof), then runs, as a user would, each as its own
`kibble` process:
  1. kibble import source=image_folder source.root=DIR workspace=W
  2. kibble kfold workspace=W experiment=imagewoof_features model=features_lite0
                                                                 (embeds every image once, 5 folds, the queue)
  3. kibble status workspace=W
  4. kibble report workspace=W round=0                           (report.html + review.html)
  5. kibble merge workspace=W reviews=reviews.csv                 (a reviewer who takes every suggestion)
and records wall time per command (start-up included) in docs/benchmarks.md, section "Your own folder".
A second `kibble kfold` on the same workspace shows what a round costs once the embeddings are cached.
model=features_lite0 keeps the recorded (lite0) section reproducible; features mode defaults to lite1 now.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
TITLE = "Your own folder: five commands from import to a merged first round (scripts/time_own_folder.py)"
GPU_TITLE = "Your own folder on a GPU: the same five commands (scripts/time_own_folder.py --gpu)"


def build_folder(source: Path, target: Path, per_class: int) -> int:
    n = 0
    for class_dir in sorted(p for p in (source / "train").iterdir() if p.is_dir()):
        out = target / class_dir.name
        out.mkdir(parents=True, exist_ok=True)
        for image in sorted(class_dir.iterdir())[:per_class]:
            (out / image.name).symlink_to(image.resolve())
            n += 1
    return n


def timed(args: list[str], cwd: Path) -> tuple[float, str]:
    """Wall seconds of one `kibble` process and the last line it printed (time_demo's runner)."""
    from time_demo import timed as run_kibble

    seconds, lines = run_kibble(args, cwd)
    return seconds, lines[-1].strip() if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/kibble_own_folder"))
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data" / "imagewoof",
                        help="an Imagewoof-like folder with train/<class>/ (default ../shared/data/imagewoof)")
    parser.add_argument("--gpu", action="store_true", help="embed on the GPU (embedder.device=cuda, loaders from the CPU count); "
                        "records its own section")
    parser.add_argument("--override", action="append", default=[], help="an extra Hydra override for both k-fold runs")
    parser.add_argument("--doc", type=Path, default=None, help="where to record (default docs/benchmarks.md)")
    args = parser.parse_args()
    source = args.source
    if not source.is_dir():
        print(f"SKIP: {source} not found")
        return
    shutil.rmtree(args.workdir, ignore_errors=True)
    folder, ws = args.workdir / "my_images", args.workdir / "W"
    n = build_folder(source, folder, args.per_class)
    device = ["embedder.device=cuda", "embedder.num_workers=auto"] if args.gpu else []
    kfold = ["kfold", f"workspace={ws}", "experiment=imagewoof_features", "model=features_lite0", *device, *args.override]
    steps = [
        ("kibble import source=image_folder source.root=DIR workspace=W", ["import", "source=image_folder", f"source.root={folder}", f"workspace={ws}"]),
        ("kibble kfold workspace=W experiment=imagewoof_features model=features_lite0", kfold),
        ("kibble status workspace=W", ["status", f"workspace={ws}"]),
        ("kibble report workspace=W round=0", ["report", f"workspace={ws}", "round=0"]),
    ]
    rows = []
    for shown, argv in steps:
        seconds, last = timed(argv, args.workdir)
        rows.append({"command": f"`{shown}`", "s": seconds, "last line": last[:110]})
        print(f"{seconds:7.1f} s  {shown}", flush=True)
    queue = pd.read_csv(ws / "rounds" / "000" / "queue.csv", dtype=str, keep_default_na=False)
    reviews = args.workdir / "reviews.csv"  # a reviewer who takes the model's suggestion for every queued image
    pd.DataFrame({"sample_id": queue["sample_id"], "label": queue["suggested_label"], "verdict": "",
                  "annotator": "reviewer", "round": queue["round"]}).to_csv(reviews, index=False)
    seconds, last = timed(["merge", f"workspace={ws}", f"reviews={reviews}"], args.workdir)
    rows.append({"command": "`kibble merge workspace=W reviews=reviews.csv`", "s": seconds, "last line": last[:110]})
    seconds, last = timed(kfold, args.workdir)
    rows.append({"command": "(next round) `kibble kfold workspace=W experiment=imagewoof_features model=features_lite0`, embeddings cached", "s": seconds, "last line": last[:110]})
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    if args.no_record:
        return
    from kibble.benchmarks import record

    if args.gpu:
        import torch

        record(GPU_TITLE, table, [
            f"A folder of {n:,} images: {args.per_class} of each of the 10 classes of the GPU check's Imagewoof subset (train split, "
            f"`scripts/gpu_check_data.py`), as DIR/<class>/<image>; GPU: {torch.cuda.get_device_name(0)}, {os.cpu_count()} CPU cores, "
            f"torch {torch.__version__}.",
            "The same commands as the CPU section; both k-fold runs embed on the GPU (embedder.device=cuda, bf16 autocast, "
            "one loader per core but one, at most 8) with tf_efficientnet_lite0 at 224 px; the heads train on the CPU (the default "
            "trainer: 5 folds x 30 epochs of a linear head). Each command is its own process, "
            "start-up and imports included.",
            "Run by `bash scripts/gpu_check.sh --wheels .gpu/wheels --data .gpu/data --own-folder ...` (section \"GPU check\"); "
            "the paths above are that machine's.",
            "The merge's reviews take the model's suggestion for every queued image (an empty verdict: kibble infers "
            "confirmed or corrected).",
        ], path=args.doc)
        return
    record(TITLE, table, [
        f"A folder of {n:,} images: {args.per_class} of each of Imagewoof's 10 classes (train split), as DIR/<class>/<image>; "
        f"load average {os.getloadavg()[0]:.1f} at the end (a shared 2-core machine: other jobs ran too).",
        "Each command is its own process, start-up and imports included (about 3-10 s of each on this machine). "
        "The first k-fold embeds every image with tf_efficientnet_lite0 at 224 px on the CPU: that is most of its time; "
        "the next round reads the cache. The GPU figures are the next section's.",
        "The merge's reviews take the model's suggestion for every queued image (an empty verdict: kibble infers "
        "confirmed or corrected).",
    ], path=args.doc)


if __name__ == "__main__":
    main()
