"""Arm (a) of scripts/gpu_check.sh: a plain PyTorch training loop, the baseline for `kibble train`.

    python scripts/gpu_check_plain.py --out plain.json workspace=W <the train overrides kibble's arm gets>

The overrides are composed into the same `kibble train` config as arm (b), so both arms get the same
rows (the workspace's train split minus the inner validation split), DataLoader (kibble's datamodule:
dataset, albumentations transforms, batch size, workers, pinning, collate; the datamodule's on-device
normalisation/jitter when data.normalize_on_device is set), timm model and weights, optimizer,
per-step schedule, label smoothing, precision (bf16-mixed -> torch.autocast bfloat16), cuDNN
benchmark, channels_last and torch.compile (model.compile true, or auto on CUDA: nn.Module.compile,
as kibble does). What it leaves out is everything Lightning and kibble add around the step
(Trainer, callbacks, logging, torchmetrics, progress bar, checkpoints). Timing: gpu_check_timer.EpochClock.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import hydra  # noqa: E402
import lightning as L  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from gpu_check_timer import EpochClock, device_name, peak_memory, write_result  # noqa: E402
from kibble.config import compose_config  # noqa: E402
from kibble.models.backbone import create_backbone, data_config_for  # noqa: E402


def resolve_device(accelerator: str) -> torch.device:
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", 0)
    return torch.device("cpu")


def autocast_dtype(precision: str) -> torch.dtype | None:
    precision = str(precision)
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    return None


def fetch_one_ahead(loader):
    """(batch, is_last), fetching the next batch before handing out the current one, as Lightning's
    data fetcher does: both arms then load the same batches inside their timed windows."""
    it = iter(loader)
    current = next(it, None)
    while current is not None:
        following = next(it, None)
        yield current, following is None
        current = following


def train(cfg, skip_epochs: int = 1) -> dict:
    L.seed_everything(cfg.seed, workers=True)
    device = resolve_device(str(cfg.trainer.accelerator))
    m = cfg.model
    dm = hydra.utils.instantiate(cfg.data)
    model = create_backbone(m.backbone, len(dm.class_names), m.pretrained, m.drop_rate, **(m.get("backbone_kwargs") or {}))
    data_config = data_config_for(model, m.input_size)
    dm.configure(data_config)
    dm.setup("fit")
    loader = dm.train_dataloader()
    if cfg.trainer.get("benchmark") is not None:  # what Lightning's Trainer(benchmark=...) sets
        torch.backends.cudnn.benchmark = bool(cfg.trainer.benchmark)
    memory_format = torch.channels_last if m.get("channels_last") else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).train()
    compile_setting = str(m.get("compile", False)).lower()
    if compile_setting == "true" or (compile_setting == "auto" and device.type == "cuda"):
        model.compile(**(m.get("compile_kwargs") or {}))
    # data.normalize_on_device: the datamodule's device transform (normalise, optionally jitter), as in training
    device_transform = getattr(dm, "_device_transform", None) if getattr(dm, "normalize_on_device", False) else None
    epochs = int(cfg.trainer.max_epochs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=m.optimizer.lr, weight_decay=m.optimizer.weight_decay)
    scheduler = None
    if m.get("scheduler") is not None:
        from kibble.models.schedules import warmup_cosine

        scheduler = warmup_cosine(optimizer, total_steps=epochs * len(loader), warmup_fraction=m.scheduler.warmup_fraction)
    # a loader that yields uint8 images leaves normalisation to the device (as kibble's module then does)
    mean = torch.tensor(data_config["mean"], device=device).view(1, -1, 1, 1) * 255.0
    inv_std = 1.0 / (torch.tensor(data_config["std"], device=device).view(1, -1, 1, 1) * 255.0)
    dtype = autocast_dtype(cfg.trainer.precision)
    clock = EpochClock(skip_epochs)
    loader_dtype = None
    for _ in range(epochs):
        for i, (batch, last) in enumerate(fetch_one_ahead(loader)):
            # to the device (and its batch transform) before the clock: Lightning does both before on_train_batch_start
            loader_dtype = loader_dtype or str(batch[0].dtype)
            x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
            if device_transform is not None:
                x = device_transform(x, train=True)
            elif x.dtype == torch.uint8:
                x = x.float().sub_(mean).mul_(inv_std)
            clock.batch_start(i, device)
            if m.get("channels_last"):  # as ImageClassifier.forward: otherwise the batch stays as collated
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = F.cross_entropy(model(x), y, label_smoothing=m.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            clock.batch_end(len(y), last, device)
    return {"arm": "plain", **clock.result(), **peak_memory(device), "device": device_name(device),
            "precision": str(cfg.trainer.precision), "batch_size": int(cfg.data.batch_size), "num_workers": loader.num_workers,
            "pin_memory": bool(loader.pin_memory), "loader_dtype": loader_dtype, "device_transform": device_transform is not None,
            "final_loss": loss.item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="result JSON")
    parser.add_argument("--skip-epochs", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the train config (as kibble's arm gets them)")
    args = parser.parse_args()
    cfg = compose_config("train", args.overrides, tempfile.mkdtemp(prefix="gpu-check-plain-"))
    result = train(cfg, args.skip_epochs)
    write_result(args.out, result)
    print(f"plain loop: {result['images_per_s']:.1f} images/s ({result['device']}, peak {result['peak_mem_mib']:.0f} MiB)")


if __name__ == "__main__":
    main()
