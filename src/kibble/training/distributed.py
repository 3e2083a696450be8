"""Rank-aware helpers for DDP: one rank owns every file operation, the others wait at a barrier.

Why: under Lightning DDP every process runs the task's Python code. File work (fold folders,
sidecars, the OOF, the queue) must happen once, on global rank 0, and the other ranks must not run
ahead into the next fold's collectives while rank 0 writes. These helpers work outside a Trainer
(torch.distributed directly), so the k-fold engine can use them between fits.
"""

from __future__ import annotations

import logging
import os
import sys

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


# --- DDP under Hydra: one job's process group and its child ranks -------------------------------

# what Lightning's launcher writes into os.environ for the duration of a DDP fit (and never removes)
DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE")

# hydra overrides that belong to the sweep, not to one job: a child rank must not re-sweep or move
_SWEEP_KEYS = ("hydra.mode", "hydra.sweep", "hydra.sweeper", "hydra/sweeper", "hydra.launcher", "hydra/launcher",
               "hydra.run", "hydra.output_subdir", "hydra.job.name", "hydra.job.num", "hydra.job.id")


def override_key(override: str) -> str:
    """`++cv.fold=3` -> `cv.fold`; `~logger` -> `logger` (Hydra's override syntax: keys never hold `=`)."""
    return override.split("=", 1)[0].lstrip("+~")


def single_run_overrides(task_overrides, hydra_overrides=(), **settings) -> list[str]:
    """One job's overrides as a plain (non-multirun) command line: the job's own task overrides (with the
    swept values it got), the user's hydra overrides that are not about sweeping or output folders, then
    `settings` (`{"cv.fold": 2}` -> `++cv.fold=2`; keys starting with `hydra.` are set as they are), each
    replacing any override of the same key."""
    set_keys = {key for key in settings}
    kept = [o for o in task_overrides if override_key(o) not in set_keys]
    kept += [o for o in hydra_overrides if not override_key(o).startswith(_SWEEP_KEYS) and override_key(o) not in set_keys]
    for key, value in settings.items():
        kept.append(f"{key}={_override_value(value)}" if key.startswith("hydra.") else f"++{key}={_override_value(value)}")
    return kept


def _override_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    if all(c.isalnum() or c in "/._-:+@" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_relaunch_task: str | None = None


def install_hydra_ddp_relaunch(task: str) -> None:
    """Make Lightning start DDP ranks > 0 as ONE run of this Hydra job: `python -m kibble.cli <task>
    <this job's overrides> hydra.run.dir=<this job's output dir> hydra.mode=RUN hydra.output_subdir=null`.

    Why a patch: Lightning's `_SubprocessScriptLauncher` re-runs `sys.argv` plus `hydra.run.dir=<hydra.run.dir>`
    (lightning/fabric/strategies/launchers/subprocess_script.py, `_hydra_subprocess_cmd`). Under `-m` that
    command holds `-m` and the sweep lists, so every child rank starts its own nested sweep, and
    `hydra.run.dir` is not the job's folder in a multirun. Lightning has no hook for the child command (a
    custom strategy would have to subclass the same private launcher), so kibble replaces the function
    in both modules that use it. Idempotent; outside a Hydra app Lightning's own command is used.
    """
    global _relaunch_task
    _relaunch_task = task
    from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
    from lightning.pytorch.strategies.launchers import subprocess_script as pl_launcher

    for module in (fabric_launcher, pl_launcher):
        if getattr(module._hydra_subprocess_cmd, "__module__", "") != __name__:
            module._hydra_subprocess_cmd = _hydra_subprocess_cmd


def ddp_child_command(task: str, local_rank: int) -> tuple[list[str], str]:
    """(command, cwd) for DDP rank `local_rank` of the current Hydra job (see install_hydra_ddp_relaunch)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    hc = HydraConfig.get()
    overrides = single_run_overrides(
        list(hc.overrides.task), list(hc.overrides.hydra),
        **{"hydra.run.dir": hc.runtime.output_dir, "hydra.output_subdir": None,
           "hydra.job.name": f"{hc.job.name}_ddp_rank{local_rank}", "hydra.mode": "RUN"},
    )
    return [sys.executable, "-m", "kibble.cli", task, *overrides], get_original_cwd()


def _hydra_subprocess_cmd(local_rank: int):
    if _relaunch_task is None:  # pragma: no cover - installed without a task
        raise RuntimeError("install_hydra_ddp_relaunch(task) was not called")
    return ddp_child_command(_relaunch_task, local_rank)


class ddp_job:
    """Context of one Hydra job that may train under DDP: on exit, the process group this job created is
    destroyed and the launcher's environment variables (MASTER_PORT, LOCAL_RANK, ...) are restored.

    Why: the basic launcher runs multirun jobs one after another in one process. Lightning leaves the
    process group and LOCAL_RANK/MASTER_PORT behind; job 2 would then believe its ranks are launched
    externally (LOCAL_RANK set), start no child ranks and reuse job 1's group, whose other ranks have
    exited: a hang. With the group gone and the variables restored, job 2 starts its own ranks on a
    fresh port. A group that existed before the job (torchrun, SLURM) is left alone.
    """

    def __enter__(self) -> "ddp_job":
        self._env = {key: os.environ.get(key) for key in DDP_ENV}
        self._had_group = distributed_ready()
        return self

    def __exit__(self, *exc) -> None:
        if not self._had_group and distributed_ready():
            log.debug("destroying this job's process group (rank %d)", global_rank())
            dist.destroy_process_group()
        for key, value in self._env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class _RankZeroAdapter(logging.LoggerAdapter):
    def log(self, level, msg, *args, **kwargs):  # info/warning/... all route through here
        if is_rank_zero():
            super().log(level, msg, *args, **kwargs)


def rank_zero_logger(name: str) -> logging.LoggerAdapter:
    """A logger that speaks on global rank 0 only: one line per event, not one per DDP process."""
    return _RankZeroAdapter(logging.getLogger(name), {})
