"""A Lightning prediction writer that collects predict_step outputs into arrays.

Under DDP each rank predicts a shard (Lightning's unrepeated distributed sampler); `result` gathers
the shards over torch.distributed and restores row order from each row's dataset index.
"""

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

    def result(self, n_rows: int | None = None, gather: str = "all") -> dict[str, np.ndarray]:
        """Row-ordered arrays; with DDP up, every rank's shard gathered on all ranks or on rank 0 only.

        n_rows: when given, the gathered indices must be exactly 0..n_rows-1 (each row predicted once).
        """
        out = {k: np.concatenate(v) for k, v in self._parts.items()}
        self._parts = {}
        out = _gather(out, gather)
        if out is None:  # gather="zero" on a rank > 0
            return {}
        if "index" in out:
            order = np.argsort(out["index"], kind="stable")
            out = {k: v[order] for k, v in out.items()}
            if n_rows is not None and not np.array_equal(out["index"], np.arange(n_rows)):
                raise RuntimeError(f"prediction covered {len(out['index'])} rows ({len(np.unique(out['index']))} distinct) of {n_rows}")
        return out


def _gather(out: dict[str, np.ndarray], gather: str) -> dict[str, np.ndarray] | None:
    from kibble.training.distributed import distributed_ready, global_rank, world_size

    if gather not in ("all", "zero"):
        raise ValueError(f"gather={gather!r}: use 'all' or 'zero'")
    if not (distributed_ready() and world_size() > 1):
        return out
    import torch.distributed as dist

    if gather == "all":
        shards: list = [None] * world_size()
        dist.all_gather_object(shards, out)
    else:
        shards = [None] * world_size() if global_rank() == 0 else None
        dist.gather_object(out, shards, dst=0)
        if global_rank() != 0:
            return None
    shards = [s for s in shards if s]
    return {k: np.concatenate([s[k] for s in shards]) for k in shards[0]} if shards else {}
