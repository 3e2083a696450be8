"""Resume inside a fold: a fine-tune fold SIGKILLed mid-epoch resumes from its last checkpoint (same
optimizer/scheduler state, the step count carries on) instead of restarting, and the round completes.
A fold folder left by another run is refused with one line, and nothing is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import TINY_FINETUNE_KFOLD, compose_config, run_kibble
from kibble import KibbleError
from kibble.io import read_json
from kibble.paths import Workspace
from kibble.predictions.store import read_store
from kibble.training.round import run_round

# 2 epochs of 4 steps per fold, a resume checkpoint every 2 steps; fold 1 dies at step 5 (mid-epoch 2)
RESUMABLE = [*TINY_FINETUNE_KFOLD, "trainer.max_epochs=2", "++trainer.limit_train_batches=4", "cv.checkpoint_every_n_steps=2", "callbacks.early_stopping=null"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_killed_fold_resumes_from_its_last_checkpoint(fresh_digits_workspace: Path, tmp_path: Path):
    ws = fresh_digits_workspace
    killed = run_kibble(
        "kfold", f"workspace={ws}", *RESUMABLE, "+callbacks.kill._target_=ddp_support.KillAtStep",
        "+callbacks.kill.step=5", "+callbacks.kill.fold=1", f"hydra.run.dir={tmp_path / 'run1'}", timeout=400,
    )
    assert killed.returncode == -9, (killed.stdout + killed.stderr)[-3000:]  # SIGKILL: no clean-up ran
    round_dir = Workspace(ws).round_dir(0)
    assert (round_dir / "fold_0" / "heldout.parquet").is_file()
    assert not (round_dir / "fold_1" / "heldout.parquet").exists()
    last = round_dir / "fold_1" / "resume" / "last.ckpt"
    assert last.is_file()

    proc = run_kibble("kfold", f"workspace={ws}", *RESUMABLE, f"hydra.run.dir={tmp_path / 'run2'}", timeout=400)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "fold 1/3: complete, skipped" in output  # fold 0 was done before the kill
    assert "fold 2/3: resuming from" in output  # fold 1 picks up where it died
    meta = read_json(round_dir / "fold_1" / "heldout.meta.json")
    assert meta["resumed_from_step"] == 4  # the step-4 checkpoint; steps 5.. were lost, not the whole fold
    assert meta["global_step"] == 8  # the fold finished its 2 x 4 steps
    assert read_json(round_dir / "fold_0" / "heldout.meta.json")["resumed_from_step"] is None
    assert not (round_dir / "fold_1" / "resume").exists()  # a complete fold keeps no resume state
    assert len(read_store(round_dir / "oof.parquet")[0]) == read_json(round_dir / "round.json")["n_train"]


def test_a_fold_folder_from_another_run_is_refused_and_nothing_is_written(fresh_digits_workspace: Path, tmp_path: Path):
    ws = fresh_digits_workspace
    cfg = compose_config("kfold", [f"workspace={ws}", *TINY_FINETUNE_KFOLD, "cv.assemble_only=true"], output_dir=tmp_path / "out")
    run_round(cfg)  # assigns the round's folds, trains nothing
    fold_dir = Workspace(ws).round_dir(0) / "fold_0"
    fold_dir.mkdir()
    (fold_dir / "started.json").write_text(json.dumps({"round": 0, "fold": 0, "manifest_fingerprint": "other", "config_hash": "other"}))
    before = sorted(p.relative_to(ws) for p in ws.rglob("*"))
    cfg = compose_config("kfold", [f"workspace={ws}", *TINY_FINETUNE_KFOLD], output_dir=tmp_path / "out2")
    with pytest.raises(KibbleError, match=r"fold_0: an interrupted fold from another run \(manifest_fingerprint"):
        run_round(cfg)
    assert sorted(p.relative_to(ws) for p in ws.rglob("*")) == before
    shutil.rmtree(fold_dir)
