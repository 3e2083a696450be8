"""The `kibble` command as a user runs it: task list, Hydra help per task, unknown task, multirun."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from helpers import KIBBLE, run_kibble
from kibble.cli import TASKS, main


def available_tasks() -> list[str]:
    return [name for name, (module, _) in TASKS.items() if importlib.util.find_spec(module) is not None]


def test_console_script_is_installed():
    assert KIBBLE.is_file() and os.access(KIBBLE, os.X_OK)


def test_help_lists_every_task(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in available_tasks():
        line = next((l for l in out.splitlines() if l.strip().startswith(name + " ")), None)
        assert line is not None, f"task {name} missing from `kibble --help`:\n{out}"
        assert len(line.split(None, 1)[1]) > 10  # a one-line description
    assert {"import", "train", "predict", "eval"} <= set(available_tasks())
    assert main([]) == 0


def test_unknown_task_exits_2(capsys):
    assert main(["nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'nope'" in err and "tasks:" in err
    proc = run_kibble("definitely-not-a-task")
    assert proc.returncode == 2 and "unknown task 'definitely-not-a-task'" in proc.stderr


def test_task_help_is_hydra_help():
    proc = run_kibble("train", "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "powered by Hydra" in proc.stdout
    assert "== Configuration groups ==" in proc.stdout
    for group in ("model:", "trainer:", "data:", "experiment:", "logger:", "debug:"):
        assert group in proc.stdout
    assert "ddp" in proc.stdout and "demo_digits" in proc.stdout


def test_predict_help():
    proc = run_kibble("predict", "--help")
    assert proc.returncode == 0 and "ckpt_path" in proc.stdout and "images" in proc.stdout, proc.stderr[-2000:]


def test_multirun_completes_two_jobs(digits_workspace: Path, tmp_path: Path):
    sweep = tmp_path / "sweep"
    proc = run_kibble(
        "train",
        "-m",
        "model.optimizer.lr=1e-3,3e-4",
        f"workspace={digits_workspace}",
        "model=small",
        "model.backbone=test_resnet",
        "data=digits",
        "debug=fast",
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = sorted(p.parent.name for p in sweep.glob("*/metrics.json"))
    assert jobs == ["0", "1"], proc.stdout[-2000:]
    lrs = []
    for job in jobs:
        overrides = (sweep / job / ".hydra" / "overrides.yaml").read_text()
        lrs += [line.split("=", 1)[1] for line in overrides.splitlines() if "model.optimizer.lr=" in line]
        assert "test_accuracy" in json.loads((sweep / job / "metrics.json").read_text())
    assert lrs == ["0.001", "0.0003"]


def test_relaunched_child_finds_its_task(tmp_path: Path):
    """Lightning's DDP launcher re-runs `python <argv[0]> <overrides>` without the task name."""
    env_task = os.environ.get("KIBBLE_TASK")
    os.environ["KIBBLE_TASK"] = "import"
    try:
        proc = run_kibble(f"workspace={tmp_path / 'ws'}", "source.test_fraction=0.5", f"hydra.run.dir={tmp_path / 'run'}")
    finally:
        if env_task is None:
            os.environ.pop("KIBBLE_TASK", None)
        else:
            os.environ["KIBBLE_TASK"] = env_task
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "ws" / "manifest.parquet").is_file()


def test_tasks_without_a_trainer_import_neither_torch_nor_lightning():
    """They skip the DDP relaunch patch (kibble.cli.NO_TRAINER): a `kibble merge` should not pay seconds of imports."""
    import subprocess
    import sys

    from kibble.cli import NO_TRAINER, TASKS

    modules = [TASKS[t][0] for t in sorted(NO_TRAINER)]
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
