"""Training throughput of kibble's Lightning path vs a plain PyTorch loop, same model/data/batch/transforms.

    python scripts/bench_train_overhead.py [--workspace DIR] [--setting resnet18:128:32:12] ... [--repeats 3]

Both arms train the same timm model (random init) on the same workspace rows with the same
albumentations pipeline, batch size, AdamW + warmup-cosine schedule and label smoothing, in this
process, interleaved (plain, kibble, kibble, plain, ...) so that machine load hits both alike.
The kibble arm is what `kibble train` builds: the real conf/ composed (default callbacks incl. the
rich progress bar and checkpointing, CSV logger, torchmetrics) through
kibble.tasks.common.build_data_and_model + build_trainer. Images/s are timed after `--warmup`
steps, over the training steps only (validation excluded). A setting is backbone:px:batch:steps.
Prints a table and appends a section to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning as L  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import open_dict  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from kibble.models.schedules import warmup_cosine  # noqa: E402
from kibble.paths import Workspace, config_dir  # noqa: E402
from kibble.tasks.common import build_data_and_model, build_trainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SETTINGS = ["resnet18:128:32:15", "test_resnet:32:32:40"]


def compose_cfg(name: str, overrides: list[str], output_dir: Path):
    with initialize_config_dir(str(config_dir()), version_base="1.3", job_name=name):
        cfg = compose(config_name=name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def ensure_workspace(path: Path) -> Path:
    if not Workspace(path).manifest.is_file():
        from kibble.tasks import import_data

        import_data.run(compose_cfg("import", [f"workspace={path}"], path.parent / "import_out"))
    return path


def train_overrides(workspace: Path, backbone: str, px: int, batch: int, steps: int) -> list[str]:
    return [
        f"workspace={workspace}",
        "data=digits",  # its augment settings (no flip) and num_workers=0 in both arms
        f"data.batch_size={batch}",
        f"model.backbone={backbone}",
        "model.pretrained=none",
        f"model.input_size={px}",
        "trainer.max_epochs=1",
        f"++trainer.limit_train_batches={steps}",
        "++trainer.limit_val_batches=1",
        "test=false",
    ]


class StepTimer(L.Callback):
    """Wall time from the start of step `warmup` to the end of the last training step."""

    def __init__(self, warmup: int, batch: int):
        self.warmup, self.batch = warmup, batch
        self.t0 = self.t1 = None
        self.steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx >= self.warmup:
            self.t1 = time.perf_counter()
            self.steps += 1

    def images_per_second(self) -> float:
        return self.steps * self.batch / (self.t1 - self.t0)


def run_kibble(cfg, warmup: int, out_dir: Path) -> float:
    L.seed_everything(0, workers=True)
    dm, model = build_data_and_model(cfg)
    trainer = build_trainer(cfg, out_dir)
    timer = StepTimer(warmup, int(cfg.data.batch_size))
    trainer.callbacks.append(timer)
    trainer.fit(model, datamodule=dm)
    return timer.images_per_second()


def run_plain(cfg, warmup: int, steps: int) -> float:
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
    t0 = None
    for step, (x, y, _) in enumerate(loader):
        if step == steps:
            break
        if step == warmup:
            t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y, label_smoothing=m.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return (steps - warmup) * int(cfg.data.batch_size) / (time.perf_counter() - t0)


def bench(setting: str, workspace: Path, repeats: int, warmup: int, tmp: Path) -> dict:
    backbone, px, batch, steps = setting.split(":")
    px, batch, steps = int(px), int(batch), int(steps)
    cfg = compose_cfg("train", train_overrides(workspace, backbone, px, batch, steps), tmp / "cfg")
    dm, _ = build_data_and_model(cfg)
    per_epoch = -(-len(dm.fit_rows) // batch)
    if steps > per_epoch:  # one epoch at most: validation between epochs would land in the timed window
        print(f"  {setting}: {steps} steps > {per_epoch} batches per epoch; timing {per_epoch}")
        steps = per_epoch
        cfg = compose_cfg("train", train_overrides(workspace, backbone, px, batch, steps), tmp / "cfg")
    plain, kib = [], []
    for r in range(repeats):
        order = ("plain", "kibble") if r % 2 == 0 else ("kibble", "plain")
        for arm in order:
            if arm == "plain":
                plain.append(run_plain(cfg, warmup, steps))
            else:
                kib.append(run_kibble(cfg, warmup, tmp / f"{backbone}_{r}"))
            print(f"  {setting} repeat {r} {arm}: {(plain if arm == 'plain' else kib)[-1]:.1f} img/s", flush=True)
    p, k = statistics.median(plain), statistics.median(kib)
    return {"setting": setting, "backbone": backbone, "px": px, "batch": batch, "steps": steps, "plain": p, "kibble": k,
            "ratio": k / p, "plain_runs": plain, "kibble_runs": kib}


def table(rows: list[dict]) -> str:
    lines = [
        "| backbone | px | batch | timed steps | plain PyTorch img/s | kibble img/s | kibble / plain | runs plain | runs kibble |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        runs = lambda xs: ", ".join(f"{x:.1f}" for x in xs)  # noqa: E731
        lines.append(
            f"| {r['backbone']} | {r['px']} | {r['batch']} | {r['timed']} | {r['plain']:.1f} | {r['kibble']:.1f} | "
            f"**{r['ratio']:.3f}x** | {runs(r['plain_runs'])} | {runs(r['kibble_runs'])} |"
        )
    return "\n".join(lines)


def append_doc(path: Path, command: str, rows: list[dict], load_before: tuple, load_after: tuple) -> None:
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# Benchmarks\n\nNumbers from real runs on the project's 2-core CPU machine; each section names the "
                        "exact command that produced it. Scripts in scripts/ append their own sections.\n")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"\n## Training overhead: `kibble train` (Lightning) vs a plain PyTorch loop ({stamp})\n\n"
        f"```\n{command}\n```\n\n"
        f"Machine: {os.cpu_count()} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"Lightning {L.__version__}, timm {timm.__version__}, Python {platform.python_version()}; "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after. Data: the built-in digits workspace "
        f"(32 px PNGs, resized by the train transform); both arms use the same albumentations pipeline, "
        f"batch size, AdamW + warmup-cosine, label smoothing, num_workers=0. Images/s over the training steps after "
        f"the warm-up steps, median of the interleaved repeats.\n\n"
        f"{table(rows)}\n"
    )
    with path.open("a") as fh:
        fh.write(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=None, help="a workspace (default: digits imported into a temp dir)")
    parser.add_argument("--setting", action="append", default=None, help="backbone:px:batch:steps (repeatable)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3, help="steps excluded from timing")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-doc", action="store_true")
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
            row = bench(setting, workspace, args.repeats, args.warmup, tmp)
            row["timed"] = row["steps"] - args.warmup
            rows.append(row)
    load_after = os.getloadavg()
    print()
    print(table(rows))
    if not args.no_doc:
        command = "python scripts/bench_train_overhead.py " + " ".join(sys.argv[1:])
        append_doc(args.doc, command.strip(), rows, load_before, load_after)
        print(f"\nappended to {args.doc}")


if __name__ == "__main__":
    main()
