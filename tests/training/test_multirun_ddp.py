"""DDP under Hydra multirun: each job's child ranks run that job once (no nested sweep), and sequential
jobs in one process each get their own process group (kibble.training.distributed)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

from helpers import compose_config, run_with_hard_timeout
from kibble.training import distributed
from kibble.training.distributed import ddp_child_command, ddp_job, single_run_overrides

TINY_DDP = [
    "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
    "model=small", "model.backbone=test_resnet", "data=digits", "data.num_workers=0",
    "trainer.max_epochs=1", "++trainer.limit_train_batches=2", "++trainer.limit_val_batches=1", "++trainer.limit_test_batches=1",
    "callbacks=quiet", "logger=none",
]


def test_child_rank_command_is_one_run_of_this_job(tmp_path: Path):
    # as a multirun job sees it: the swept value among the task overrides, sweep settings among hydra's
    job = ["model.optimizer.lr=0.003", "hparams_search=optuna", "seed=1"]
    compose_config("train", [*job, "hydra.mode=MULTIRUN", "hydra.sweep.dir=/x", "hydra.job.chdir=false"], output_dir=tmp_path / "job3")
    command, _ = ddp_child_command("train", local_rank=1)
    assert command[1:4] == ["-m", "kibble.cli", "train"]
    args = command[4:]
    assert "-m" not in args and "--multirun" not in args
    assert args[:3] == ["model.optimizer.lr=0.003", "hparams_search=optuna", "seed=1"]  # the job's own values
    assert f"hydra.run.dir={tmp_path / 'job3'}" in args
    assert {"hydra.output_subdir=null", "hydra.mode=RUN", "hydra.job.chdir=false"} <= set(args)
    assert not any(a.startswith(("hydra.sweep", "hydra/sweeper", "hydra.mode=MULTI")) for a in args)
    # composed as the child composes it: a single run, even with the Optuna search config in it
    child = compose_config("train", [a for a in args if not a.startswith("hydra.")] + ["hydra.mode=RUN"])
    assert str(child.hydra.mode) == "RunMode.RUN"
    assert child.model.optimizer.lr == 0.003


def test_settings_replace_the_same_key_and_quote_odd_paths():
    out = single_run_overrides(["cv.fold=1", "+cv.devices=[0,1]", "round=2", "seed=3"], [], **{"cv.fold": 4, "cv.devices": None, "hydra.run.dir": "/tmp/a b"})
    assert out == ["round=2", "seed=3", "++cv.fold=4", "++cv.devices=null", 'hydra.run.dir="/tmp/a b"']


def test_a_job_leaves_no_process_group_or_launcher_env_behind(monkeypatch, tmp_path: Path):
    if not torch.distributed.is_gloo_available():
        pytest.skip("no gloo backend")
    for key in distributed.DDP_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "1")  # present before the job: restored as it was
    with ddp_job():
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29512", LOCAL_RANK="0", WORLD_SIZE="2")
        torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
        assert distributed.distributed_ready()
    assert not distributed.distributed_ready()
    assert "MASTER_PORT" not in os.environ and "LOCAL_RANK" not in os.environ
    assert os.environ["WORLD_SIZE"] == "1"


@pytest.mark.slow
def test_two_job_multirun_with_two_ddp_ranks_each(fresh_digits_workspace: Path, tmp_path: Path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available")
    sweep = tmp_path / "sweep"
    code, output = run_with_hard_timeout(
        ["train", "-m", f"workspace={fresh_digits_workspace}", *TINY_DDP, "seed=0,1", f"hydra.sweep.dir={sweep}"],
        tmp_path / "out.log", timeout=420, env={"OMP_NUM_THREADS": "1"},
    )
    assert code == 0, output[-4000:]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"], jobs  # one folder per job, no nested sweep folders
    for job in jobs:
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert Path(metrics["best_checkpoint"]).is_file() and str(sweep / job) in metrics["best_checkpoint"]
        assert (sweep / job / "train_ddp_rank1.log").is_file()  # rank 1 ran in this job's folder
        assert not (sweep / job / "multirun.yaml").exists()
    ranks = re.findall(r"Initializing distributed: GLOBAL_RANK: (\d), MEMBER: \d/2", output)
    assert sorted(ranks) == ["0", "0", "1", "1"], output[-4000:]  # 2 ranks per job, 2 jobs
    assert not (fresh_digits_workspace / "multiruns").exists()
    assert output.count("test accuracy") == 2


@pytest.mark.slow
def test_per_fold_multirun_with_two_ddp_ranks_each_assembles_once(fresh_digits_workspace: Path, tmp_path: Path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available")
    sweep, ws = tmp_path / "sweep", fresh_digits_workspace
    code, output = run_with_hard_timeout(
        ["kfold", "-m", f"workspace={ws}", *TINY_DDP, "cv.n_folds=2", "cv.fold=0,1", "round_callbacks.report=null", f"hydra.sweep.dir={sweep}"],
        tmp_path / "out.log", timeout=480, env={"OMP_NUM_THREADS": "1"},
    )
    assert code == 0, output[-4000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    for job in ("0", "1"):
        assert (sweep / job / "kfold_ddp_rank1.log").is_file()
    ranks = re.findall(r"Initializing distributed: GLOBAL_RANK: (\d), MEMBER: \d/2", output)
    assert sorted(ranks) == ["0", "0", "1", "1"], output[-4000:]
    assert output.count("OOF accuracy vs given labels") == 1  # the job that finds both folds done assembles
    assert (ws / "rounds" / "000" / "oof.parquet").is_file()
