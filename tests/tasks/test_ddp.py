"""2-process DDP on CPU (gloo) through `kibble train trainer=ddp`: Lightning re-launches the command
for rank 1, so this runs the real console script."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from helpers import run_kibble


@pytest.mark.slow
def test_ddp_two_cpu_processes(digits_workspace: Path, tmp_path: Path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available")
    ws = tmp_path / "ws"
    shutil.copytree(digits_workspace, ws)
    run_dir = tmp_path / "run"
    proc = run_kibble(
        "train",
        f"workspace={ws}",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "model=small",
        "model.backbone=test_resnet",
        "data=digits",
        "trainer.max_epochs=1",
        "++trainer.limit_train_batches=3",
        "++trainer.limit_val_batches=2",
        "callbacks=quiet",
        "logger=none",
        f"hydra.run.dir={run_dir}",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/2" in output
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert Path(metrics["best_checkpoint"]).is_file()
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert output.count("test accuracy") == 1  # rank 0 reports, once
