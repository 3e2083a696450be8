"""A Lightning prediction writer that collects predict_step outputs into arrays (per rank)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter


class ArrayPredictionWriter(BasePredictionWriter):
    """Gathers index/probs/logits per batch; `result()` returns them in dataset order."""

    def __init__(self) -> None:
        super().__init__(write_interval="batch")
        self._parts: dict[str, list[np.ndarray]] = {}

    def write_on_batch_end(self, trainer, pl_module, prediction: dict[str, torch.Tensor], batch_indices: Sequence[int] | None, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        for key, value in prediction.items():
            self._parts.setdefault(key, []).append(value.detach().cpu().numpy())

    def result(self) -> dict[str, np.ndarray]:
        out = {k: np.concatenate(v) for k, v in self._parts.items()}
        if "index" in out:
            order = np.argsort(out["index"], kind="stable")
            out = {k: v[order] for k, v in out.items()}
        self._parts = {}
        return out
