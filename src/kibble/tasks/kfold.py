"""`kibble kfold`: out-of-fold softmax for every training image, then the round's queue.

Folds on several GPUs of one box: `kibble kfold cv.devices=[0,1,2,3]` (or `cv.devices=auto`): one fold
process per GPU at a time, then this process assembles (kibble.training.devices). One job per fold
through a Hydra launcher: `kibble kfold -m cv.fold=0,1,2,3,4 hydra/launcher=joblib` locally, or
`hydra/launcher=slurm` on a cluster (conf/hydra/launcher/slurm.yaml); the job that finds every fold
complete assembles. The engine lives in kibble.training.kfold and kibble.training.round.
"""

from __future__ import annotations

import logging
import os

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from kibble import KibbleError
from kibble.paths import config_dir
from kibble.training.devices import run_round_on_devices
from kibble.training.distributed import ddp_job
from kibble.training.round import run_round

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    if cfg.cv.get("devices") is not None:
        if not HydraConfig.initialized():
            raise KibbleError("cv.devices re-creates this config in each fold process from its Hydra overrides: run `kibble kfold` or compose with kibble.config.compose_config")
        overrides = HydraConfig.get().overrides  # the fold processes compose the same config from them
        return run_round_on_devices(cfg, list(overrides.task), list(overrides.hydra))
    if cfg.cv.get("fold") is not None and "CUDA_VISIBLE_DEVICES" in os.environ:
        log.info("fold %s: CUDA_VISIBLE_DEVICES=%s", cfg.cv.fold, os.environ["CUDA_VISIBLE_DEVICES"])
    return run_round(cfg)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="kfold")
def main(cfg: DictConfig) -> dict:
    with ddp_job():  # a multirun's next job starts its own DDP ranks on a fresh port
        return run(cfg)  # its numbers end up in the multirun's jobs table (kibble.multirun_table)
