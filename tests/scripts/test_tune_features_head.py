"""scripts/tune_features_head.py's plumbing: the dev choice lands in conf/model/features.yaml, composes, and
re-running replaces rather than stacks; the choice follows the worst dev setting, not the mean."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import tune_features_head as tune  # noqa: E402

from kibble.benchmarks.protocol import choose  # noqa: E402


@pytest.mark.parametrize("name", list(tune.CANDIDATES))
def test_written_head_is_the_candidate(name, tmp_path):
    target = tmp_path / "features.yaml"
    shutil.copy(tune.FEATURES_YAML, target)
    tune.write_head(name, target)
    tune.write_head(name, target)  # a re-run replaces the note and the values
    text = target.read_text()
    assert text.count("# Head regularisation chosen on dev") == 1
    assert text.splitlines()[0] == "# @package _global_"  # Hydra only reads the directive on the first line
    written = yaml.safe_load(text)["model"]["optimizer"]
    head = tune.CANDIDATES[name]
    assert (written["_target_"], written["weight_decay"]) == (head.optimizer, head.decay)
    assert yaml.safe_load(text)["data"]["inner_val_fraction"] == head.inner_val
    assert written["_partial_"] is True and written["lr"] == yaml.safe_load(tune.FEATURES_YAML.read_text())["model"]["optimizer"]["lr"]


def test_candidate_overrides_compose_into_an_optimizer():
    import hydra
    import torch

    from kibble.config import compose_config

    for head in tune.CANDIDATES.values():
        cfg = compose_config("kfold", ["experiment=imagewoof_features", *tune.overrides(head)])
        opt = hydra.utils.instantiate(cfg.model.optimizer)(params=[torch.nn.Parameter(torch.zeros(2))])
        assert "torch.optim." + type(opt).__name__ == head.optimizer and opt.defaults["weight_decay"] == head.decay
        assert cfg.data.inner_val_fraction == head.inner_val


def test_choice_is_by_worst_dev_setting():
    rows = []
    for s, scores in {"a": (0.90, 0.70), "b": (0.90, 0.95), "c": (0.90, 0.95)}.items():  # (steady head, head that wins on average but fails on a)
        for seed in (0, 1):
            rows += [{"setting": s, "seed": seed, "ranking": "steady", "family": "head", "AUPRC": scores[0]},
                     {"setting": s, "seed": seed, "ranking": "flashy", "family": "head", "AUPRC": scores[1] + (0.1 if s != "a" else 0)}]
    chosen, board = choose(pd.DataFrame(rows), ["a", "b", "c"], "head")
    assert chosen == "steady" and board.loc["flashy", "mean"] > board.loc["steady", "mean"]
