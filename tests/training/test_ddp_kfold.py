"""A k-fold FULL fine-tune round under DDP (2 CPU processes, gloo) through the real console script.

`strategy=all` makes precision cleaning train its own models (mode=train) after the folds, under the
same DDP strategy; a pool split adds prediction of other rows; rank 1 is slowed around every fit so
ordering bugs (a rank running ahead into a collective or reading a half-written file) show up as a
hang (caught by the timeout) or a crash. The round must equal a single-process round in coverage,
fold assignment and class order.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers import ROOT, TINY_FINETUNE_KFOLD, import_workspace, run_kibble, run_with_hard_timeout
from kibble.data.classes import ClassList
from kibble.io import read_json
from kibble.paths import Workspace
from kibble.predictions.store import read_store

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()), reason="torch.distributed with gloo is not available"
)


def _round_files(ws: Path) -> tuple[pd.DataFrame, dict, pd.DataFrame, pd.DataFrame]:
    round_dir = Workspace(ws).round_dir(0)
    oof, meta = read_store(round_dir / "oof.parquet")
    predictions = read_store(round_dir / "predictions.parquet")[0]
    return oof, meta, predictions, pd.read_parquet(round_dir / "folds.parquet")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ddp_kfold_round_with_trained_precision_matches_a_single_process_round(tmp_path: Path):
    ws = import_workspace(tmp_path / "ddp", ["pool.fraction=0.2", "inject_noise.rate=0.1"])
    single = tmp_path / "single"
    shutil.copytree(ws, single)
    code, output = run_with_hard_timeout(  # a hang kills both ranks and fails
        ["kfold", f"workspace={ws}", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "strategy=all",
         *TINY_FINETUNE_KFOLD, "+callbacks.slow_rank._target_=ddp_support.SlowRank", "+callbacks.slow_rank.seconds=1.5",
         f"hydra.run.dir={tmp_path / 'run_ddp'}"],
        tmp_path / "ddp.log", timeout=800, env={"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")},
    )
    assert code == 0, output[-4000:]
    assert output.count("Initializing distributed: GLOBAL_RANK") == 2  # one process group for every fold and strategy
    assert output.count("OOF accuracy vs given labels") == 1  # rank 0 reports once

    oof, meta, predictions, folds = _round_files(ws)
    manifest = pd.read_parquet(Workspace(ws).manifest)
    train_ids = sorted(manifest.loc[manifest["split"] == "train", "sample_id"])
    assert sorted(oof["sample_id"]) == train_ids and oof["sample_id"].is_unique  # every train sample exactly once
    assert (oof.set_index("sample_id")["fold"] == folds.set_index("sample_id")["fold"]).all()
    other_ids = sorted(manifest.loc[manifest["split"].isin(["test", "pool"]), "sample_id"])
    assert sorted(predictions["sample_id"]) == other_ids and predictions["sample_id"].is_unique
    round_dir = Workspace(ws).round_dir(0)
    for k in range(3):
        fold_meta = read_json(round_dir / f"fold_{k}" / "heldout.meta.json")
        assert fold_meta["world_size"] == 2 and fold_meta["train_images_per_second"] > 0
    assert len(read_json(round_dir / "metrics.json")["fold_costs"]) == 3
    queue = pd.read_csv(round_dir / "queue.csv", dtype={"sample_id": str})
    assert len(queue) > 0 and set(queue["sample_id"]) <= set(train_ids)
    assert list((round_dir / "precision").glob("without_*")), "precision mode=train trained no model"

    proc = run_kibble("kfold", f"workspace={single}", "trainer=cpu", "strategy=all", *TINY_FINETUNE_KFOLD, f"hydra.run.dir={tmp_path / 'run_single'}", timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    single_oof, single_meta, single_predictions, single_folds = _round_files(single)
    assert single_oof["sample_id"].tolist() == oof["sample_id"].tolist()
    assert single_oof["fold"].tolist() == oof["fold"].tolist()
    assert single_meta["class_names"] == meta["class_names"] == ClassList.load(Workspace(ws).classes).names
    assert single_predictions["sample_id"].tolist() == predictions["sample_id"].tolist()
