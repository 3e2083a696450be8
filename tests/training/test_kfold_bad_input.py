"""Bad k-fold input gets one clear line and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from helpers import TINY_FINETUNE_KFOLD, compose_config
from kibble import KibbleError
from kibble.data.folds import assign_folds
from kibble.training.round import run_round


def test_more_folds_than_images_of_a_class_is_refused():
    rows = pd.DataFrame({"sample_id": [f"s{i}" for i in range(12)], "label": ["a"] * 9 + ["b"] * 3})
    with pytest.raises(KibbleError, match=r"class 'b' has 3 train image\(s\) for cv.n_folds=5.*lower cv.n_folds to 3"):
        assign_folds(rows, 5)
    assert assign_folds(rows, 3)["fold"].nunique() == 3


def test_a_round_with_too_many_folds_writes_nothing(fresh_digits_workspace: Path, tmp_path: Path):
    ws = fresh_digits_workspace
    before = sorted(p.relative_to(ws) for p in ws.rglob("*"))
    cfg = compose_config("kfold", [f"workspace={ws}", *TINY_FINETUNE_KFOLD, "cv.n_folds=500"], output_dir=tmp_path / "out")
    with pytest.raises(KibbleError, match=r"for cv.n_folds=500"):
        run_round(cfg)
    assert sorted(p.relative_to(ws) for p in ws.rglob("*")) == before


def test_a_typo_in_a_strategy_name_fails_before_any_fold_trains(fresh_digits_workspace: Path, tmp_path: Path):
    ws = fresh_digits_workspace
    cfg = compose_config("kfold", [f"workspace={ws}", *TINY_FINETUNE_KFOLD, "strategy.strategies=[kfold,self_confidense]"], output_dir=tmp_path / "out")
    with pytest.raises(KibbleError, match=r"unknown cleaning strategy 'self_confidense'"):
        run_round(cfg)
    assert not (ws / "rounds").exists()
