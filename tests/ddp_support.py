"""Lightning callbacks the CLI tests add with `+callbacks.NAME._target_=ddp_support.X` (tests/ is on the
subprocess's PYTHONPATH): a slow rank to expose ordering bugs, a crash at a given step to test resume."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class SlowRank(Callback):
    """Rank `rank` sleeps before and after every fit, so it reaches each barrier late (or early)."""

    def __init__(self, rank: int = 1, seconds: float = 1.0):
        self.rank, self.seconds = rank, seconds

    def _maybe_sleep(self, trainer) -> None:
        if trainer.global_rank == self.rank:
            time.sleep(self.seconds)

    def on_fit_start(self, trainer, pl_module) -> None:
        self._maybe_sleep(trainer)

    def on_fit_end(self, trainer, pl_module) -> None:
        self._maybe_sleep(trainer)


class KillAtStep(Callback):
    """SIGKILL this process (no clean-up, like a preempted node) at global step `step` of fold `fold`."""

    def __init__(self, step: int, fold: int):
        self.step, self.fold = step, fold

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if Path(trainer.default_root_dir).name == f"fold_{self.fold}" and trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)
