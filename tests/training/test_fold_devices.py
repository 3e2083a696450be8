"""Folds across devices (`cv.devices`, kibble.training.devices): slots, the one-fold-per-device pool,
bad device lists, and a real 3-fold round on two virtual CPU slots."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers import compose_config, run_with_hard_timeout
from kibble import KibbleError
from kibble.training import devices
from kibble.training.devices import failure_message, resolve_slots, run_on_devices


def test_slots_are_device_ids_groups_or_every_visible_gpu():
    assert resolve_slots([0, 1, 2, 3], "gpu", cuda_count=4, visible="") == ["0", "1", "2", "3"]
    assert resolve_slots([[0, 1], [2, 3]], "gpu", 2, cuda_count=4, visible="") == ["0,1", "2,3"]
    assert resolve_slots("auto", "auto", cuda_count=2, visible="") == ["0", "1"]
    assert resolve_slots(3, "cuda", cuda_count=4, visible="") == ["0", "1", "2"]
    # ids count among the GPUs this process sees: with CUDA_VISIBLE_DEVICES=5,7 id 1 is physical GPU 7
    assert resolve_slots([1], "gpu", cuda_count=2, visible="5,7") == ["7"]
    # virtual slots on CPU: no GPU needed
    assert resolve_slots([0, 1], "cpu", cuda_count=0) == ["0", "1"]


@pytest.mark.parametrize(
    ("spec", "accelerator", "count", "trainer_devices", "match"),
    [
        ([0, 7], "gpu", 2, 1, r"cv.devices=\[0,7\]: no CUDA device 7 here; this machine shows 2 \(ids 0..1\)"),
        ([0, 1], "auto", 0, 1, r"no CUDA device is visible on this machine.*trainer.accelerator=cpu"),
        ("auto", "cpu", 0, 1, r"trainer.accelerator=cpu uses none"),
        ([0, 0], "cpu", 0, 1, r"device 0 is listed twice"),
        ([0, 1], "gpu", 2, 2, r"trainer.devices=2 but a fold process sees 1 GPU"),
        ([0, -1], "cpu", 0, 1, r"expected device ids >= 0"),
        ("two", "gpu", 2, 1, r"expected null, auto, a count"),
        ([0], "mps", 1, 1, r"not trainer.accelerator=mps"),
    ],
)
def test_a_device_list_that_cannot_run_is_one_clear_error(spec, accelerator, count, trainer_devices, match):
    with pytest.raises(KibbleError, match=match):
        resolve_slots(spec, accelerator, trainer_devices, cuda_count=count, visible="")


RECORD = "import os, sys, time; print('saw', os.environ['CUDA_VISIBLE_DEVICES'], flush=True); time.sleep(float(sys.argv[1])); sys.exit(int(sys.argv[2]))"


def test_pool_runs_one_fold_per_device_at_a_time(tmp_path: Path):
    runs = run_on_devices(
        [0, 1, 2, 3, 4], ["0", "1"],
        command_for=lambda k: [sys.executable, "-c", RECORD, "0.3", "0"],
        log_for=lambda k: tmp_path / f"fold_{k}.log", env={**os.environ, "LOCAL_RANK": "0", "MASTER_PORT": "1"},
    )
    assert [r.fold for r in runs] == [0, 1, 2, 3, 4] and all(r.returncode == 0 for r in runs)
    assert {r.devices for r in runs} == {"0", "1"}
    for run in runs:  # each process saw only its slot
        assert (tmp_path / f"fold_{run.fold}.log").read_text().strip() == f"saw {run.devices}"
    for device in ("0", "1"):
        spans = sorted((r.started, r.ended) for r in runs if r.devices == device)
        assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:])), spans
    assert failure_message(runs) is None


def test_a_failed_fold_stops_new_folds_and_names_its_log(tmp_path: Path):
    runs = run_on_devices(
        [0, 1, 2], ["3"],
        command_for=lambda k: [sys.executable, "-c", RECORD, "0", "1" if k == 1 else "0"],
        log_for=lambda k: tmp_path / f"fold_{k}.log",
    )
    assert [r.returncode for r in runs] == [0, 1, None]  # fold 2 never started
    message = failure_message(runs)
    assert message == f"fold 1 failed on device 3 (exit code 1): saw 3; log: {tmp_path / 'fold_1.log'}"
    assert "\n" not in message


def test_devices_that_do_not_exist_write_nothing(fresh_digits_workspace: Path, tmp_path: Path, monkeypatch):
    from kibble.tasks import kfold

    monkeypatch.setattr(devices, "cuda_device_count", lambda: 2)  # a 2-GPU box, on any machine
    before = sorted(p.relative_to(fresh_digits_workspace) for p in fresh_digits_workspace.rglob("*"))
    cfg = compose_config("kfold", [f"workspace={fresh_digits_workspace}", "trainer.accelerator=gpu", "cv.devices=[0,7]"], output_dir=tmp_path / "run")
    with pytest.raises(KibbleError, match=r"cv.devices=\[0,7\]: no CUDA device 7 here"):
        kfold.run(cfg)
    assert sorted(p.relative_to(fresh_digits_workspace) for p in fresh_digits_workspace.rglob("*")) == before


def test_slurm_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose_config("kfold", ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "cv.fold=3"])
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.gpus_per_node, launcher.tasks_per_node) == ("gpu", 1, 1)
    assert launcher.max_num_timeout > 0  # requeued after preemption; the fold resumes from its last.ckpt


@pytest.mark.slow
def test_three_folds_on_two_cpu_slots_then_one_oof(fresh_digits_workspace: Path, tmp_path: Path):
    ws, run_dir = fresh_digits_workspace, tmp_path / "run"
    code, output = run_with_hard_timeout(
        [
            "kfold", f"workspace={ws}", "cv=kfold3", "cv.devices=[0,1]", "trainer.accelerator=cpu",
            "model=small", "model.backbone=test_resnet", "data=digits", "data.num_workers=0", "trainer.max_epochs=1",
            "++trainer.limit_train_batches=2", "++trainer.limit_val_batches=1", "callbacks=quiet", "logger=none",
            "round_callbacks.report=null", f"hydra.run.dir={run_dir}",
        ],
        tmp_path / "out.log", timeout=540,
    )
    assert code == 0, output[-4000:]
    runs = json.loads((run_dir / "fold_runs.json").read_text())
    assert sorted(r["fold"] for r in runs) == [0, 1, 2] and all(r["returncode"] == 0 for r in runs)
    assert {r["devices"] for r in runs} == {"0", "1"}
    for device in ("0", "1"):  # never two folds on one device at once
        spans = sorted((r["started"], r["ended"]) for r in runs if r["devices"] == device)
        assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:])), spans
    round_dir = ws / "rounds" / "000"
    for run in runs:  # the fold process itself saw only its assigned device
        seen = re.findall(r"CUDA_VISIBLE_DEVICES=(\S+)", Path(run["log"]).read_text())
        assert seen == [run["devices"]], Path(run["log"]).read_text()[-2000:]
        meta = json.loads((round_dir / f"fold_{run['fold']}" / "heldout.meta.json").read_text())
        if "visible_devices" in meta:  # recorded by the engine too (the variable's text, or a list of ids)
            seen_by_engine = meta["visible_devices"]
            assert (",".join(map(str, seen_by_engine)) if isinstance(seen_by_engine, list) else str(seen_by_engine)) == run["devices"]
    folds = pd.read_parquet(round_dir / "folds.parquet")
    oof = pd.read_parquet(round_dir / "oof.parquet")
    assert sorted(oof["sample_id"]) == sorted(folds["sample_id"])  # every train sample once
    assert (round_dir / "queue.csv").is_file()  # the round callbacks ran, once, here
    assert "OOF accuracy" in output
