"""What a fold cost: device, train and predict images/s, peak device memory, wall time.

Why: users size GPU jobs and clusters from these numbers (rounds/NNN/metrics.json `fold_costs`, the
round report), and a slow input pipeline shows up as low train images/s on a fast device.
"""

from __future__ import annotations

import os
import platform
import resource
import time

import lightning as L
import torch

COST_KEYS = (
    "device", "accelerator", "world_size", "visible_devices", "seconds", "fit_seconds", "predict_seconds",
    "train_images_per_second", "predict_images_per_second", "peak_device_memory_mb", "peak_host_memory_mb",
)


def device_name(trainer: L.Trainer) -> str:
    root = trainer.strategy.root_device
    if root.type == "cuda":
        return torch.cuda.get_device_name(root)
    if root.type == "mps":
        return "Apple MPS"
    return f"cpu ({platform.machine()}, {os.cpu_count()} cores)"


class FoldCost:
    """Started at construction; `fitted` and `predicted` mark the phases; `summary` gives the numbers."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.fit_end = self.predict_end = self.start
        self.train_images = self.predict_images = 0
        self.values: dict = {}
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def fitted(self, trainer: L.Trainer, n_images: int) -> None:
        self.fit_end = time.perf_counter()
        self.train_images = max(int(n_images), 0)
        root = trainer.strategy.root_device
        self.values.update(
            device=device_name(trainer), accelerator=root.type, world_size=int(trainer.world_size),
            visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        )

    def predicted(self, trainer: L.Trainer, n_images: int) -> None:
        self.predict_end = time.perf_counter()
        self.predict_images = int(n_images)
        root = trainer.strategy.root_device
        peak = torch.cuda.max_memory_allocated(root) / 2**20 if root.type == "cuda" else None
        self.values["peak_device_memory_mb"] = round(peak, 1) if peak is not None else None

    def summary(self) -> dict:
        fit = self.fit_end - self.start
        predict = self.predict_end - self.fit_end
        return {
            **self.values,
            "seconds": round(self.predict_end - self.start, 2),
            "fit_seconds": round(fit, 2),
            "predict_seconds": round(predict, 2),
            "train_images_per_second": round(self.train_images / max(fit, 1e-9), 1),
            "predict_images_per_second": round(self.predict_images / max(predict, 1e-9), 1),
            # ru_maxrss is KiB on Linux: the process's peak so far (host side of a CPU or GPU run)
            "peak_host_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
