"""Rank-aware helpers for DDP: one rank owns every file operation, the others wait at a barrier.

Why: under Lightning DDP every process runs the task's Python code. File work (fold folders,
sidecars, the OOF, the queue) must happen once, on global rank 0, and the other ranks must not run
ahead into the next fold's collectives while rank 0 writes. These helpers work outside a Trainer
(torch.distributed directly), so the k-fold engine can use them between fits.
"""

from __future__ import annotations

import logging

import torch.distributed as dist

log = logging.getLogger(__name__)


def distributed_ready() -> bool:
    return dist.is_available() and dist.is_initialized()


def global_rank() -> int:
    if distributed_ready():
        return int(dist.get_rank())
    # before the process group exists (a DDP child before its first fit), Lightning's reading of the
    # launcher's environment (RANK, LOCAL_RANK, SLURM_PROCID, ...) is the best guess
    from lightning.pytorch.utilities import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def world_size() -> int:
    return int(dist.get_world_size()) if distributed_ready() else 1


def is_rank_zero() -> bool:
    return global_rank() == 0


def barrier(name: str = "") -> None:
    """Wait for every rank (a no-op in a single process)."""
    if distributed_ready() and world_size() > 1:
        log.debug("barrier %s (rank %d)", name, global_rank())
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """rank `src`'s Python object on every rank (identity in a single process)."""
    if not (distributed_ready() and world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
