"""Data for scripts/gpu_check.sh: a small stratified Imagewoof subset to copy to a GPU machine, or tiny images.

    python scripts/gpu_check_data.py [--source DIR] [--out .gpu/data] [--train 2000] [--val 500] [--max-mib 40]
    python scripts/gpu_check_data.py --synthetic --out DIR [--classes 4 --train 96 --val 32 --size 32]

The subset keeps Imagewoof's layout (`train/<wnid>/*.JPEG`, `val/<wnid>/*.JPEG`, classes.csv), so
`kibble import source=image_folder source.root=<out>` reads it as it reads the full set. Files are
copied unchanged (224x224 JPEGs), picked per class in proportion to the class's share (seeded).
`--synthetic` writes coloured-noise PNGs in the same layout (for `gpu_check.sh --cpu-smoke`, or CI
without ../shared/data). The output folder is replaced. Prints the subset's size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def default_source() -> Path:
    return Path(os.environ.get("KIBBLE_IMAGEWOOF") or ROOT.parent / "shared" / "data" / "imagewoof")


def stratified_pick(files_by_class: dict[str, list[Path]], n: int, rng: np.random.Generator) -> dict[str, list[Path]]:
    """n files in all, each class getting its share of the total (largest remainders), at least one each."""
    total = sum(len(f) for f in files_by_class.values())
    if n >= total:
        return {c: sorted(f) for c, f in files_by_class.items()}
    exact = {c: n * len(f) / total for c, f in files_by_class.items()}
    counts = {c: max(1, int(q)) for c, q in exact.items()}
    for c in sorted(exact, key=lambda c: exact[c] - int(exact[c]), reverse=True)[: max(0, n - sum(counts.values()))]:
        counts[c] += 1
    return {c: sorted(rng.choice(sorted(files_by_class[c]), size=min(counts[c], len(files_by_class[c])), replace=False).tolist()) for c in files_by_class}


def list_split(folder: Path) -> dict[str, list[Path]]:
    return {
        d.name: [p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        for d in sorted(folder.iterdir())
        if d.is_dir()
    }


def build_subset(source: Path, out: Path, n_train: int, n_val: int, seed: int = 0) -> dict:
    """Copy a stratified subset of source/{train,val}/<class>/ to out/ (replaced); return counts and size."""
    rng = np.random.default_rng(seed)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    counts, size = {}, 0
    for split, n in (("train", n_train), ("val", n_val)):
        if n <= 0 or not (source / split).is_dir():
            continue
        picked = stratified_pick(list_split(source / split), n, rng)
        counts[split] = 0
        for cls, files in picked.items():
            (tmp / split / cls).mkdir(parents=True, exist_ok=True)
            for f in files:
                shutil.copy2(f, tmp / split / cls / Path(f).name)
                size += Path(f).stat().st_size
                counts[split] += 1
    if (source / "classes.csv").is_file():
        shutil.copy2(source / "classes.csv", tmp / "classes.csv")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return {"counts": counts, "bytes": size}


def build_synthetic(out: Path, n_classes: int = 4, n_train: int = 96, n_val: int = 32, size: int = 32, seed: int = 0) -> dict:
    """PNG images whose mean colour depends on the class (learnable), plus noise; same layout as the subset."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    shutil.rmtree(out, ignore_errors=True)
    colours = rng.integers(40, 216, size=(n_classes, 3))
    counts, nbytes = {}, 0
    for split, n in (("train", n_train), ("val", n_val)):
        counts[split] = n
        for i in range(n):
            c = i % n_classes
            pixels = np.clip(colours[c] + rng.normal(0, 40, size=(size, size, 3)), 0, 255).astype(np.uint8)
            path = out / split / f"class_{c}" / f"{split}_{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
            nbytes += path.stat().st_size
    return {"counts": counts, "bytes": nbytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=None, help="Imagewoof root with train/ val/ (default ../shared/data/imagewoof or $KIBBLE_IMAGEWOOF)")
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu" / "data")
    parser.add_argument("--train", type=int, default=None, help="train images (default 2000; synthetic 96)")
    parser.add_argument("--val", type=int, default=None, help="val images (default 500; synthetic 32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-mib", type=float, default=40.0, help="fail if the subset is larger (it travels to the GPU machine)")
    parser.add_argument("--synthetic", action="store_true", help="generate tiny coloured-noise images instead")
    parser.add_argument("--classes", type=int, default=4, help="synthetic: number of classes")
    parser.add_argument("--size", type=int, default=32, help="synthetic: image side in px")
    args = parser.parse_args()
    if args.synthetic:
        info = build_synthetic(args.out, args.classes, args.train or 96, args.val or 32, args.size, args.seed)
    else:
        source = (args.source or default_source()).expanduser()
        if not (source / "train").is_dir():
            sys.exit(f"gpu_check_data: {source}/train not found (pass --source DIR with train/<class>/ folders, or set KIBBLE_IMAGEWOOF)")
        info = build_subset(source, args.out, args.train or 2000, args.val or 500, args.seed)
    mib = info["bytes"] / 2**20
    splits = ", ".join(f"{n} {s}" for s, n in info["counts"].items())
    print(f"wrote {args.out}: {splits} images, {mib:.1f} MiB")
    if mib > args.max_mib:
        sys.exit(f"gpu_check_data: {args.out} is {mib:.1f} MiB, over --max-mib {args.max_mib:g}; take fewer images")


if __name__ == "__main__":
    main()
