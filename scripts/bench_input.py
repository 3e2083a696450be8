"""Input pipeline: images/s per CPU core of kibble's training loader vs a bare PIL + albumentations loop.

    python scripts/bench_input.py [--images 1536] [--repeats 5] [--batch 64] [--workers 2] [--workdir workspaces/bench]

Same Imagewoof train files (a seeded subset), same train preset (conf/data/default.yaml's augment,
sized from timm's data config of tf_efficientnet_lite0: 224 px, crop_pct 0.875), same batch size,
one process, torch and OpenCV on one thread, OMP_WAIT_POLICY=PASSIVE; rates with num_workers=0 are
images per CPU-second of this process (time.process_time), so other processes on a shared machine
disturb them less than wall time would. Arms, interleaved in every
repeat so that load from other processes hits all alike:
- bare: PIL open + convert("RGB") + numpy + A.Compose(same steps + ToTensorV2) + torch.stack per batch;
- kibble cold: `ManifestDataModule.train_dataloader()` (num_workers=0) decoding the JPEGs;
- kibble cached: the same with `data.decoded_cache=true` (cache built before timing, build timed apart);
- `+ uint8`: `data.normalize_on_device=true`; the batch leaves the loader as uint8 and the device
  normalises it; `+ device jitter`: `data.augment.jitter_on_device=true`, the colour jitter too.
  The "device work here" column charges that device work to this core as well.
Files are read once before timing (page cache), so cold means JPEG decoding, not disk.
Regenerates its own section of docs/benchmarks.md (never appends a second one).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402
from PIL import Image  # noqa: E402

from kibble.benchmarks import PROJECT_ROOT, command_line, replace_section, shared_imagewoof  # noqa: E402
from kibble.config import compose_config  # noqa: E402
from kibble.data.transforms import resize_side  # noqa: E402

SECTION = "## Input pipeline (scripts/bench_input.py)"
BARE, COLD, CACHED, CACHED_JITTER = "bare loop (PIL + albumentations)", "kibble cold", "kibble cached + uint8", "kibble cached + uint8 + device jitter"
ARMS = {  # name: (decoded cache, uint8 batches normalised on the device, colour jitter on the device)
    COLD: (False, False, False),
    "kibble cold + uint8": (False, True, False),
    "kibble cached": (True, False, False),
    CACHED: (True, True, False),
    CACHED_JITTER: (True, True, True),
}
TARGET_COLD, TARGET_CACHED = 0.95, 3.0


def ensure_workspace(root: Path, ws: Path) -> Path:
    """An Imagewoof workspace (imported once, reused)."""
    from kibble.paths import Workspace

    if not Workspace(ws).manifest.is_file():
        from kibble.tasks import import_data

        import_data.run(compose_config("import", ["source=image_folder", f"source.root={root}", f"workspace={ws}"], ws.parent / "import_out"))
    return ws


def data_config() -> dict:
    import timm

    from kibble.models.backbone import data_config_for

    return data_config_for(timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10))


def build_datamodule(ws: Path, ids: list[str], config: dict, batch: int, workers: int, cache_dir: Path | None, uint8: bool, device_jitter: bool = False):
    import hydra

    overrides = [f"workspace={ws}", "data=default", f"data.batch_size={batch}", f"data.num_workers={workers}", "data.inner_val_fraction=0",
                 f"data.decoded_cache={cache_dir is not None}", f"data.normalize_on_device={uint8}", f"data.augment.jitter_on_device={device_jitter}"]
    if cache_dir is not None:
        overrides.append(f"data.decoded_cache_dir={cache_dir}")
    cfg = compose_config("train", overrides, ws.parent / "input_out")
    dm = hydra.utils.instantiate(cfg.data).configure(config, fit_ids=ids)
    dm.setup("fit")
    return dm, dict(cfg.data.augment)


def bare_epochs(paths: list[Path], config: dict, augment: dict, batch: int, seed: int):
    """What a user writes without kibble: one shuffled epoch of decoded, augmented, stacked batches."""
    size = int(config["input_size"][-1])
    pipeline = A.Compose([
        A.RandomResizedCrop(size=(size, size), scale=tuple(augment["scale"])),
        A.HorizontalFlip(p=augment["hflip"]),
        A.ColorJitter(brightness=augment["jitter"], contrast=augment["jitter"], saturation=augment["jitter"], hue=0.0, p=0.8),
        A.Normalize(mean=config["mean"], std=config["std"], max_pixel_value=255.0),
        ToTensorV2(),
    ])

    def epoch() -> int:
        order = np.random.default_rng(seed).permutation(len(paths))
        n = 0
        for start in range(0, len(order), batch):
            tensors = []
            for i in order[start : start + batch]:
                with Image.open(paths[i]) as img:
                    image = np.asarray(img.convert("RGB"))
                tensors.append(pipeline(image=image)["image"])
            n += len(torch.stack(tensors))
        return n

    return epoch


def loader_epoch(dm):
    loader = dm.train_dataloader()

    def epoch() -> int:
        return sum(len(y) for _, y, _ in loader)

    return epoch


def device_cost(dm, batch: int, size: int, train: bool, reps: int = 10) -> float:
    """CPU seconds per image of the datamodule's device transform run on this core (what the GPU does instead)."""
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    dm._device_transform(x, train=train)
    start = time.process_time()
    for _ in range(reps):
        dm._device_transform(x, train=train)
    return (time.process_time() - start) / (reps * batch)


def geometry_cost(config: dict, augment: dict, side: int, reps: int = 200) -> dict[str, float]:
    """CPU µs per image of the uint8 train preset from a cached square vs a cached 4:3 image (the geometry choice)."""
    from kibble.data.transforms import train_preset

    pipeline = train_preset(config, normalize=False, **augment)
    rng = np.random.default_rng(0)
    out = {}
    for name, shape in ((f"{side}x{side}", (side, side, 3)), (f"{side}x{round(side * 4 / 3)}", (side, round(side * 4 / 3), 3))):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        start = time.process_time()
        for _ in range(reps):
            pipeline(image=image)
        out[name] = (time.process_time() - start) / reps * 1e6
    return out


def eval_agreement(ws: Path, ids: list[str], config: dict, cache_dir: Path) -> float:
    """Mean |cold - cached| of eval-transformed images (normalised units): the cache geometry check."""
    cold, _ = build_datamodule(ws, ids, config, 64, 0, None, False)
    cached, _ = build_datamodule(ws, ids, config, 64, 0, cache_dir, False)
    a, b = next(iter(cold._loader(cold.fit_rows, train=False, shuffle=False, keep_workers=False))), next(
        iter(cached._loader(cached.fit_rows, train=False, shuffle=False, keep_workers=False)))
    return float((a[0] - b[0]).abs().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("workspaces/bench"))
    parser.add_argument("--images", type=int, default=1536, help="train images per epoch (a seeded subset)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="also time kibble's loaders with this many workers (0: skip)")
    parser.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    root = shared_imagewoof()
    if root is None:
        print("SKIP: ../shared/data/imagewoof not found (set KIBBLE_IMAGEWOOF)")
        return
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    load = os.getloadavg()[0]

    ws = ensure_workspace(root, args.workdir.resolve() / "imagewoof_input")
    config = data_config()
    size = int(config["input_size"][-1])
    from kibble.data.manifest import resolve_image_path
    from kibble.paths import Workspace

    manifest = pd.read_parquet(Workspace(ws).manifest)
    train = manifest[manifest["split"] == "train"].sample(n=min(args.images, int((manifest["split"] == "train").sum())), random_state=0)
    ids = train["sample_id"].tolist()
    paths = [resolve_image_path(p, Workspace(ws).data_root) for p in train["path"]]
    for p in paths:  # page cache: time decoding, not the disk
        p.read_bytes()

    with tempfile.TemporaryDirectory(prefix="kibble-bench-input-") as tmp:
        cache_dir = Path(tmp) / "decoded"
        cached_dm, augment = build_datamodule(ws, ids, config, args.batch, 0, cache_dir, False)
        start = time.perf_counter()
        cached_dm.train_dataloader()  # builds the cache for these rows
        build_s = time.perf_counter() - start
        cache_bytes = sum(p.stat().st_size for p in cache_dir.rglob("shard-*.npy"))
        arms: dict[str, tuple[int, object]] = {BARE: (0, bare_epochs(paths, config, augment, args.batch, seed=0))}
        device_s: dict[str, float] = {}
        specs = [(name, 0, *spec) for name, spec in ARMS.items()]
        if args.workers:
            specs += [(f"{name}, {args.workers} workers", args.workers, *ARMS[name]) for name in (COLD, CACHED_JITTER)]
        for name, workers, cached, uint8, device_jitter in specs:
            dm, _ = build_datamodule(ws, ids, config, args.batch, workers, cache_dir if cached else None, uint8, device_jitter)
            arms[name] = (workers, loader_epoch(dm))
            if uint8:
                device_s[name] = device_cost(dm, args.batch, size, train=True)
        for _, epoch in arms.values():  # warm-up: worker start-up, memory maps, allocator
            epoch()
        rates: dict[str, list[float]] = {name: [] for name in arms}
        walls: dict[str, list[float]] = {name: [] for name in arms}
        for r in range(args.repeats):
            for name, (_, epoch) in arms.items():
                wall, cpu = time.perf_counter(), time.process_time()
                n = epoch()
                rates[name].append(n / (time.process_time() - cpu))
                walls[name].append(n / (time.perf_counter() - wall))
            print(f"repeat {r + 1}/{args.repeats} (images/CPU-s; workers: /s): " + ", ".join(
                f"{k}: {(walls if arms[k][0] else rates)[k][-1]:.0f}" for k in arms), flush=True)
        agreement = eval_agreement(ws, ids[:64], config, cache_dir)
        geometry = geometry_cost(config, augment, resize_side(config))

    rows = []
    sd = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
    for name, (workers, _) in arms.items():
        # per core: images per CPU-second of this process; worker processes' CPU time is not this process's, so
        # loaders with workers are compared by wall time, with the bare loop's wall time of the same repeat
        r, bare = (walls[name], walls[BARE]) if workers else (rates[name], rates[BARE])
        ratios = [a / b for a, b in zip(r, bare)]
        charged = statistics.mean(1.0 / (1.0 / x + device_s[name]) for x in r) if name in device_s and not workers else None
        rows.append({
            "arm": name, "workers": workers, "images/CPU-s": None if workers else statistics.mean(r), "± std": None if workers else sd(r),
            "wall images/s": statistics.mean(walls[name]), "x bare": statistics.mean(ratios), "± std ": sd(ratios),
            "device work here": charged,
        })
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    ratio = dict(zip(table["arm"], table["x bare"]))
    cold, cached, cached_jitter = ratio[COLD], ratio[CACHED], ratio[CACHED_JITTER]
    verdict = lambda x, t: f"{x:.2f}x the bare loop, target >= {t}x: {'met' if x >= t else 'MISSED'}"  # noqa: E731
    print(f"cold: {verdict(cold, TARGET_COLD)}; cached + uint8: {verdict(cached, TARGET_CACHED)}; "
          f"cached + uint8 + device jitter: {verdict(cached_jitter, TARGET_CACHED)}")
    if args.no_record:
        return
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    notes = [
        f"Targets: `{COLD}` {verdict(cold, TARGET_COLD)}; `{CACHED}` {verdict(cached, TARGET_CACHED)}; "
        f"`{CACHED_JITTER}` {verdict(cached_jitter, TARGET_CACHED)}.",
        "Arms: cold = data defaults (JPEG decode per epoch); cached = data.decoded_cache=true; uint8 = data.normalize_on_device=true; "
        "device jitter = data.augment.jitter_on_device=true (colour jitter batch-wise on the device). For a GPU fine-tune use all three: "
        "`data.decoded_cache=true data.normalize_on_device=true data.augment.jitter_on_device=true`.",
        f"{len(ids)} Imagewoof train images (224x224 JPEGs), batch {args.batch}, {size} px train preset "
        f"(scale {list(augment['scale'])}, hflip {augment['hflip']}, jitter {augment['jitter']}), "
        f"mean ± std over {args.repeats} interleaved repeats; 'x bare' is the mean of per-repeat ratios.",
        "workers = 0: everything on one core (torch and OpenCV on 1 thread); 'images/CPU-s' = images per CPU-second of the process, "
        "'x bare' on that basis. Rows with workers > 0: the whole loader with that many worker processes, 'x bare' on wall time "
        f"against the bare loop's wall time; on this shared machine (load average {load:.1f} at the start) they say little.",
        f"Decoded cache: built in {build_s:.1f} s ({len(ids) / build_s:.0f} images/s wall, num_workers=0), "
        f"{cache_bytes / len(ids) / 1024:.0f} KiB per image on disk (shorter side {resize_side(config)} px, aspect kept).",
        "'device work here': images per CPU-second if the device transform (normalisation, and the jitter where moved) ran on this core too "
        f"({', '.join(f'{k}: {v * 1e6:.0f} µs per image' for k, v in device_s.items() if 'workers' not in k)}); "
        "with data.normalize_on_device=true it runs on the GPU after the transfer (for CPU training leave it off: "
        "there the 'device' is the training process itself).",
        "Cache geometry: the uint8 train preset costs " + " vs ".join(f"{v:.0f} µs ({k})" for k, v in geometry.items())
        + " per image from a square vs a 4:3 cached image: keeping the aspect ratio costs little, and the crops see the whole photo.",
        f"Eval check: mean |cold - cached| of the eval-transformed images = {agreement:.4f} (normalised units): the cache keeps "
        "the eval geometry (Imagewoof's files are 224x224, so here the cache upsamples to 256 exactly as the cold resize does).",
    ]
    text = "\n".join([
        SECTION, "",
        f"Command: `{command_line()}`  ",
        f"Run: {stamp}, {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), Python {platform.python_version()}, "
        f"torch {torch.__version__}, albumentations {A.__version__}, OpenCV {cv2.__version__}", "",
        table.astype(object).where(table.notna(), "").to_markdown(index=False, floatfmt=".4g"), "",
        *[f"- {n}" for n in notes],
    ])
    replace_section(SECTION, text, PROJECT_ROOT / "docs" / "benchmarks.md")
    print(f"wrote {SECTION!r} in docs/benchmarks.md")


if __name__ == "__main__":
    main()
