"""scripts/gpu_check.sh (issue 12, item 8): the CPU smoke end to end, its clear errors, and its parts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(SCRIPTS))


def gpu_check(*args: str, out: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.run(["bash", str(SCRIPTS / "gpu_check.sh"), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cpu_smoke_end_to_end(tmp_path: Path):
    out = tmp_path / "out"
    proc = gpu_check("--cpu-smoke", "--work", str(tmp_path / "work"), out=out)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = json.loads((out / "gpu_check.json").read_text())
    assert (out / "gpu_check.log").is_file()
    assert summary["profile"] == "smoke" and summary["accelerator"] == "cpu" and "error" not in summary
    assert summary["device"].startswith("CPU")
    for arm in ("plain", "kibble"):
        a = summary["arms"][arm]
        assert a["images_per_s"] > 0 and a["images_per_s_window"] > 0 and a["images_per_cpu_s"] > 0
        assert a["peak_mem_mib"] > 0
        assert a["epochs_total"] == summary["config"]["epochs"] and a["epochs_timed"] == a["epochs_total"] - 1
        assert a["batch_size"] == summary["config"]["batch"]
    # both arms trained on the same rows with the same batch size: the same images per timed epoch
    assert summary["arms"]["plain"]["images_timed"] == summary["arms"]["kibble"]["images_timed"]
    assert summary["ratio"] > 0 and summary["ratio_window"] > 0 and summary["ratio_cpu"] > 0
    assert summary["target_met"] is None  # not judged on a CPU
    kfold = summary["kfold"]
    assert kfold["oof_covers_train_once"] is True
    assert kfold["oof_rows"] == kfold["train_samples"] == summary["data"]["train"]
    assert kfold["oof_folds"] == [0, 1, 2]
    assert kfold["queue_rows"] > 0
    for step in ("setup", "import", "plain_0", "kibble_0", "kfold"):
        assert summary["timings_s"][step] >= 0
    assert "kibble / plain" in proc.stdout


def test_missing_data_dir_is_one_clear_line(tmp_path: Path):
    proc = gpu_check("--cpu-smoke", "--data", str(tmp_path / "nowhere"), "--work", str(tmp_path / "work"), out=tmp_path / "out", timeout=300)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("gpu_check:")]
    assert errors == [f"gpu_check: data dir {tmp_path / 'nowhere'} has no train/ folder (build it here: python scripts/gpu_check_data.py; pass --data DIR)"]
    assert not (tmp_path / "out" / "gpu_check.json").exists()


def test_no_gpu_without_cpu_smoke_is_one_clear_line(tmp_path: Path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    proc = gpu_check("--work", str(tmp_path / "work"), out=tmp_path / "out", timeout=300)
    assert proc.returncode == 2
    assert "gpu_check: no CUDA GPU visible to torch" in proc.stderr
    assert "--cpu-smoke" in proc.stderr
    assert not (tmp_path / "out" / "gpu_check.json").exists()


def test_epoch_clock_skips_warmup_and_separates_epoch_boundaries(monkeypatch):
    import gpu_check_timer

    ticks = iter([0.0, 1.0, 3.0, 5.0, 10.0, 12.0])  # epoch 0: 0-1, epoch 1: 3-5, epoch 2: 10-12
    cpu_ticks = iter([0.0, 2.0, 2.0, 5.0, 5.0, 8.0])  # 3 CPU-s in each timed epoch
    monkeypatch.setattr(gpu_check_timer.time, "perf_counter", lambda: next(ticks))
    monkeypatch.setattr(gpu_check_timer.time, "process_time", lambda: next(cpu_ticks))
    clock = gpu_check_timer.EpochClock(skip_epochs=1)
    for _ in range(3):
        clock.batch_start(0, "cpu")
        clock.batch_end(8, False, "cpu")
        clock.batch_start(1, "cpu")
        clock.batch_end(4, True, "cpu")
    result = clock.result()
    assert result["epochs_total"] == 3 and result["epochs_timed"] == 2
    assert result["images_timed"] == 24 and result["batches_per_epoch"] == 2
    assert result["images_per_s"] == pytest.approx(24 / 4.0)  # in-epoch time only
    assert result["images_per_s_window"] == pytest.approx(24 / 9.0)  # 3 -> 12, boundaries included
    assert result["images_per_cpu_s"] == pytest.approx(24 / 6.0)
    assert result["first_epoch_s"] == pytest.approx(1.0)


def test_epoch_clock_needs_a_timed_epoch():
    import gpu_check_timer

    clock = gpu_check_timer.EpochClock(skip_epochs=1)
    clock.batch_start(0, "cpu")
    clock.batch_end(4, True, "cpu")
    with pytest.raises(RuntimeError, match="warm-up"):
        clock.result()


def test_plain_loop_fetches_one_batch_ahead_like_lightning():
    from gpu_check_plain import fetch_one_ahead

    fetched: list[int] = []

    def loader():
        for i in range(3):
            fetched.append(i)
            yield i

    seen = []
    for batch, last in fetch_one_ahead(loader()):
        seen.append((batch, last, len(fetched)))
    # batch k is handed out once batch k+1 has been loaded; the last one is flagged
    assert seen == [(0, False, 2), (1, False, 3), (2, True, 3)]
    assert list(fetch_one_ahead([])) == []


def test_subset_is_stratified_and_keeps_the_layout(tmp_path: Path):
    from gpu_check_data import build_subset, build_synthetic

    source = tmp_path / "src"
    build_synthetic(source, n_classes=3, n_train=60, n_val=30, size=8)  # 20 / 10 per class
    (source / "classes.csv").write_text("wnid,name\n")
    info = build_subset(source, tmp_path / "subset", n_train=31, n_val=9)
    assert info["counts"] == {"train": 31, "val": 9}
    per_class = sorted(len(list((tmp_path / "subset" / "train" / c).iterdir())) for c in ("class_0", "class_1", "class_2"))
    assert per_class == [10, 10, 11]
    assert sorted(p.name for p in (tmp_path / "subset").iterdir()) == ["classes.csv", "train", "val"]
    again = build_subset(source, tmp_path / "subset", n_train=31, n_val=9)  # replaced, same pick
    assert again == info and sum(1 for _ in (tmp_path / "subset").rglob("*.png")) == 40


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_own_folder_step_times_the_readme_commands_and_records_its_section(tmp_path: Path, effnet_weights: Path):
    """Step (d)'s script on the CPU: the README's own-folder commands, each its own process, into a given page."""
    data = tmp_path / "data"
    subprocess.run([sys.executable, str(SCRIPTS / "gpu_check_data.py"), "--synthetic", "--out", str(data), "--classes", "4",
                    "--train", "40", "--val", "8", "--size", "32"], check=True, capture_output=True)
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n")
    proc = subprocess.run([sys.executable, str(SCRIPTS / "time_own_folder.py"), "--source", str(data), "--workdir", str(tmp_path / "w"),
                           "--per-class", "10", "--doc", str(doc), "--override", f"paths.effnet_lite0={effnet_weights}",
                           "--override", "embedder.input_size=32", "--override", "embedder.num_workers=0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=800, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = doc.read_text()
    assert text.count("## Your own folder: five commands") == 1 and "A folder of 40 images" in text
    for command in ("kibble import", "kibble kfold", "kibble status", "kibble report", "kibble merge", "(next round)"):
        assert command in text
    assert " merged " in text and "reviews from reviews.csv" in text  # the merge row's last line
