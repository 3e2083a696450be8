"""One timing method for both arms of scripts/gpu_check.sh: the plain loop calls EpochClock directly,
`kibble train` gets it through the TrainTimer callback (`+callbacks.gpu_check_timer=...`).

Per epoch: the clock starts when the epoch's first batch starts (its data is already loaded, as in
Lightning, whose fetcher prefetches it before `on_train_batch_start`) and stops when the epoch's last
batch ends; the device is synchronised at both points only, so nothing is added inside the epoch.
The first `skip_epochs` epochs (CUDA context, cuDNN autotuning, compilation, worker start) are not counted.
  images_per_s         images of the counted epochs / the sum of their in-epoch times (steady state)
  images_per_s_window  the same images / wall time from the first counted epoch's start to the last
                       one's end (adds epoch boundaries: checkpointing, logging, loader re-iteration)
  images_per_cpu_s     the same images / this process's CPU time (all its threads) inside the epochs:
                       the work per image, steadier than wall time on a CPU shared with other jobs
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch


def sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def peak_memory(device: torch.device | str) -> dict[str, Any]:
    """Peak device memory of this process: CUDA allocator peak on a GPU, max RSS on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return {
            "peak_mem_mib": torch.cuda.max_memory_allocated(device) / 2**20,
            "peak_mem_reserved_mib": torch.cuda.max_memory_reserved(device) / 2**20,
            "peak_mem_kind": "cuda max_memory_allocated",
        }
    return {"peak_mem_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_mem_kind": "process max RSS (CPU)"}


class EpochClock:
    def __init__(self, skip_epochs: int = 1):
        self.skip_epochs = skip_epochs
        self.epochs: list[dict[str, float]] = []  # start, end, images, batches per epoch
        self._open: dict[str, float] | None = None
        self.t_first_batch: float | None = None

    def batch_start(self, batch_idx: int, device) -> None:
        if batch_idx == 0:
            sync(device)
            self._open = {"start": time.perf_counter(), "cpu_start": time.process_time(), "images": 0, "batches": 0}
            if self.t_first_batch is None:
                self.t_first_batch = self._open["start"]

    def batch_end(self, n_images: int, last_in_epoch: bool, device) -> None:
        if self._open is None:
            return
        self._open["images"] += n_images
        self._open["batches"] += 1
        if last_in_epoch:
            self.epoch_end(device)

    def epoch_end(self, device) -> None:
        if self._open is None:
            return
        sync(device)
        self._open["end"] = time.perf_counter()
        self._open["cpu_end"] = time.process_time()
        self.epochs.append(self._open)
        self._open = None

    def result(self) -> dict[str, Any]:
        timed = self.epochs[self.skip_epochs :]
        if not timed:
            raise RuntimeError(f"no epoch after the {self.skip_epochs} warm-up epoch(s) was timed; train more epochs")
        images = sum(e["images"] for e in timed)
        in_epoch = sum(e["end"] - e["start"] for e in timed)
        window = timed[-1]["end"] - timed[0]["start"]
        cpu = sum(e["cpu_end"] - e["cpu_start"] for e in timed)
        return {
            "images_per_s": images / in_epoch,
            "images_per_s_window": images / window,
            "images_per_cpu_s": images / cpu if cpu > 0 else None,
            "images_timed": images,
            "seconds_timed": in_epoch,
            "epochs_timed": len(timed),
            "epochs_total": len(self.epochs),
            "batches_per_epoch": timed[0]["batches"],
            "first_epoch_s": self.epochs[0]["end"] - self.epochs[0]["start"],
            "epoch_s": [round(e["end"] - e["start"], 4) for e in self.epochs],
        }


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(path)


class TrainTimer(L.Callback):
    """EpochClock inside `kibble train`; writes the arm's result JSON to `out` when training ends."""

    def __init__(self, out: str, skip_epochs: int = 1):
        self.out = out
        self.clock = EpochClock(skip_epochs)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.clock.batch_start(batch_idx, pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        last = batch_idx + 1 >= trainer.num_training_batches or (0 < trainer.max_steps <= trainer.global_step)
        self.clock.batch_end(len(batch[1]), last, pl_module.device)

    def on_train_epoch_end(self, trainer, pl_module):
        self.clock.epoch_end(pl_module.device)  # no-op unless the epoch ended early

    def on_train_end(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        loader = trainer.train_dataloader
        result = {"arm": "kibble", **self.clock.result(), **peak_memory(pl_module.device), "device": device_name(pl_module.device),
                  "precision": str(trainer.precision), "batch_size": getattr(loader, "batch_size", None),
                  "num_workers": getattr(loader, "num_workers", None), "pin_memory": bool(getattr(loader, "pin_memory", False))}
        write_result(self.out, result)
