"""Training throughput of kibble's Lightning path vs a plain PyTorch loop, same model/data/batch/transforms.

    python scripts/bench_train_overhead.py [--workspace DIR] [--setting resnet18:128:32:12] ... [--repeats 3]

Both arms train the same timm model (random init) on the same workspace rows with the same
albumentations pipeline, batch size, AdamW + warmup-cosine schedule and label smoothing, in this
process, interleaved (plain, kibble, kibble, plain, ...) so that machine load hits both alike.
The kibble arm is what `kibble train` builds: the real conf/ composed (default callbacks incl. the
rich progress bar and checkpointing, CSV logger, torchmetrics) through
kibble.training.build.build_data_and_model + build_trainer. Images/s are timed after `--warmup`
steps, over `steps` training steps (epochs repeat as needed; validation off in both arms). A setting is backbone:px:batch:steps.
Prints a table and appends a section to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning as L  # noqa: E402
import pandas as pd  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from kibble.benchmarks import record  # noqa: E402
from kibble.models.schedules import warmup_cosine  # noqa: E402
from kibble.config import compose_config  # noqa: E402
from kibble.paths import Workspace  # noqa: E402
from kibble.training.build import build_data_and_model, build_trainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SETTINGS = ["resnet18:128:32:30", "test_resnet:32:32:100"]


def ensure_workspace(path: Path) -> Path:
    if not Workspace(path).manifest.is_file():
        from kibble.tasks import import_data

        import_data.run(compose_config("import", [f"workspace={path}"], path.parent / "import_out"))
    return path


def train_overrides(workspace: Path, backbone: str, px: int, batch: int, steps: int, epochs: int = 1000) -> list[str]:
    return [
        f"workspace={workspace}",
        "data=digits",  # its augment settings (no flip) and num_workers=0 in both arms
        f"data.batch_size={batch}",
        f"model.backbone={backbone}",
        "model.pretrained=none",
        f"model.input_size={px}",
        f"trainer.max_epochs={epochs}",
        f"++trainer.max_steps={steps}",
        "++trainer.limit_val_batches=0",  # training throughput only: no validation inside the timed window
        "++trainer.num_sanity_val_steps=0",
        "callbacks.early_stopping=null",  # nothing to stop on without validation; checkpointing stays:
        "callbacks.model_checkpoint.monitor=train/loss",
        "callbacks.model_checkpoint.mode=min",
        "test=false",
    ]


class StepTimer(L.Callback):
    """Wall time from the start of step `warmup` to the end of the last training step."""

    def __init__(self, warmup: int, batch: int):
        self.warmup, self.batch = warmup, batch
        self.t0 = self.t1 = self.c0 = self.c1 = 0.0
        self.steps = 0

        self.seen = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.seen == self.warmup:
            self.t0, self.c0 = time.perf_counter(), time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.seen >= self.warmup:
            self.t1, self.c1 = time.perf_counter(), time.process_time()
            self.steps += 1
        self.seen += 1

    def result(self) -> tuple[float, float]:
        images = self.steps * self.batch
        return images / (self.t1 - self.t0), images / (self.c1 - self.c0)


def run_kibble(cfg, warmup: int, out_dir: Path) -> tuple[float, float]:
    L.seed_everything(0, workers=True)
    dm, model = build_data_and_model(cfg)
    trainer = build_trainer(cfg, out_dir)
    timer = StepTimer(warmup, int(cfg.data.batch_size))
    trainer.callbacks.append(timer)
    trainer.fit(model, datamodule=dm)
    return timer.result()


def run_plain(cfg, warmup: int, steps: int) -> tuple[float, float]:
    """The same model, dataset, transforms, batch, optimizer and schedule in a hand-written loop."""
    L.seed_everything(0, workers=True)
    dm, kmodel = build_data_and_model(cfg)  # only for the rows, class count and timm data config
    dataset = dm.make_dataset(dm.fit_rows, train=True)
    loader = DataLoader(dataset, batch_size=int(cfg.data.batch_size), shuffle=True, num_workers=int(cfg.data.num_workers), drop_last=False)
    m = cfg.model
    model = timm.create_model(m.backbone, pretrained=False, num_classes=len(dm.class_names), drop_rate=m.drop_rate)
    optimizer = torch.optim.AdamW(model.parameters(), lr=m.optimizer.lr, weight_decay=m.optimizer.weight_decay)
    scheduler = warmup_cosine(optimizer, total_steps=steps, warmup_fraction=m.scheduler.warmup_fraction)
    model.train()
    t0 = c0 = 0.0
    step = 0
    while step < steps:  # epochs until `steps` batches
        for x, y, _ in loader:
            if step == steps:
                break
            if step == warmup:
                t0, c0 = time.perf_counter(), time.process_time()
            loss = F.cross_entropy(model(x), y, label_smoothing=m.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
    t1, c1 = time.perf_counter(), time.process_time()
    images = (steps - warmup) * int(cfg.data.batch_size)
    return images / (t1 - t0), images / (c1 - c0)


def bench(setting: str, workspace: Path, repeats: int, warmup: int, tmp: Path, extra: list[str] | None = None) -> dict:
    backbone, px, batch, steps = setting.split(":")
    px, batch, steps = int(px), int(batch), int(steps)
    extra = list(extra or [])
    cfg = compose_config("train", train_overrides(workspace, backbone, px, batch, steps) + extra, tmp / "cfg")
    run_plain(cfg, warmup, steps)  # process warm-up (allocator, oneDNN primitives), not timed
    run_kibble(cfg, warmup, tmp / f"{backbone}_warmup")
    plain, kib = [], []
    for r in range(repeats):
        order = ("plain", "kibble") if r % 2 == 0 else ("kibble", "plain")
        for arm in order:
            if arm == "plain":
                plain.append(run_plain(cfg, warmup, steps))
            else:
                kib.append(run_kibble(cfg, warmup, tmp / f"{backbone}_{r}"))
            wall, cpu = (plain if arm == "plain" else kib)[-1]
            print(f"  {setting} repeat {r} {arm}: {wall:.1f} img/s, {cpu:.1f} img/CPU-s", flush=True)
    med = lambda runs, i: statistics.median(x[i] for x in runs)  # noqa: E731
    return {"setting": setting, "backbone": backbone, "px": px, "batch": batch, "steps": steps,
            "plain": med(plain, 0), "kibble": med(kib, 0), "plain_cpu": med(plain, 1), "kibble_cpu": med(kib, 1),
            "plain_runs": [x[0] for x in plain], "kibble_runs": [x[0] for x in kib]}


def table(rows: list[dict]) -> pd.DataFrame:
    runs = lambda xs: ", ".join(f"{x:.1f}" for x in xs)  # noqa: E731
    return pd.DataFrame(
        {
            "backbone": r["backbone"],
            "px": r["px"],
            "batch": r["batch"],
            "timed steps": r["timed"],
            "plain PyTorch img/s": round(r["plain"], 1),
            "kibble img/s": round(r["kibble"], 1),
            "kibble / plain": f"{r['kibble'] / r['plain']:.3f}x",
            "plain img/CPU-s": round(r["plain_cpu"], 1),
            "kibble img/CPU-s": round(r["kibble_cpu"], 1),
            "kibble / plain (CPU)": f"{r['kibble_cpu'] / r['plain_cpu']:.3f}x",
            "runs plain": runs(r["plain_runs"]),
            "runs kibble": runs(r["kibble_runs"]),
        }
        for r in rows
    )


def notes(args, load_before: tuple, load_after: tuple) -> list[str]:
    return [
        f"torch {torch.__version__} ({torch.get_num_threads()} intra-op threads), Lightning {L.__version__}, timm {timm.__version__}; "
        f"1-min load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (other jobs on the machine slow both arms alike).",
        "Data: the built-in digits workspace (32 px PNGs, resized by the train transform). Both arms: the same rows, "
        "albumentations pipeline, batch size, random-init timm model, AdamW + warmup-cosine, label smoothing, num_workers=0.",
        f"Images/s over the training steps after {args.warmup} warm-up steps (validation off in both arms); median of "
        f"{args.repeats} interleaved repeats per arm (wall-clock runs listed). img/CPU-s = images per second of process "
        "CPU time (all threads): less sensitive to other jobs on the machine than wall-clock time. kibble = the composed `kibble train` config "
        "(rich progress bar, per-epoch checkpointing, CSV logger, torchmetrics; early stopping off, as there is no "
        "validation) via build_data_and_model + build_trainer.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=None, help="a workspace (default: digits imported into a temp dir)")
    parser.add_argument("--setting", action="append", default=None, help="backbone:px:batch:steps (repeatable)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3, help="steps excluded from timing")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override of the train config (both arms)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's, one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = args.setting or DEFAULT_SETTINGS
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="kibble-bench-") as tmp:
        tmp = Path(tmp)
        workspace = ensure_workspace(args.workspace or tmp / "digits")
        rows = []
        for setting in settings:
            row = bench(setting, workspace, args.repeats, args.warmup, tmp, args.override)
            row["timed"] = row["steps"] - args.warmup
            rows.append(row)
    load_after = os.getloadavg()
    frame = table(rows)
    print()
    print(frame.to_markdown(index=False))
    if not args.no_doc:
        path = record("Training overhead: `kibble train` (Lightning) vs a plain PyTorch loop", frame, notes(args, load_before, load_after), path=args.doc)
        print(f"\nappended to {path}")

if __name__ == "__main__":
    main()
