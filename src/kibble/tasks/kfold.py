"""`kibble kfold`: out-of-fold softmax for every training image, then the round's queue.

Parallel folds: `kibble kfold -m cv.fold=0,1,2,3,4 hydra/launcher=joblib` (the job that finds every
fold complete assembles). The engine lives in kibble.training.kfold.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from kibble.paths import config_dir
from kibble.training.round import run_round


def run(cfg: DictConfig) -> dict:
    return run_round(cfg)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="kfold")
def main(cfg: DictConfig) -> None:
    run(cfg)
