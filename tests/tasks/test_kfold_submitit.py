"""The SLURM path for real on one machine: `kibble kfold -m cv.fold=... hydra/launcher=local` runs each fold as
its own submitit job (submitit's local executor, the same launcher code as `hydra/launcher=slurm`); the job
that finds every fold complete assembles the OOF, and a killed fold job is re-run by launching the same
command again (complete folds skipped, the OOF identical).

Features mode on 32 px digits embeddings copied in from the session cache: no job embeds, each trains a
linear head in a few seconds; the cost is submitit's process start and kibble's imports per job.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import run_kibble
from kibble.data.classes import ClassList
from kibble.io import CRASH_ENV, read_json
from kibble.paths import Workspace
from kibble.predictions.store import read_store, sidecar_path, stack

pytestmark = pytest.mark.slow

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

N_FOLDS = 3


def oof_digest(ws: Path) -> str:
    """Hash of the assembled OOF's content (ids, folds, labels, probabilities), not of the file's bytes."""
    workspace = Workspace(ws)
    oof, _ = read_store(workspace.round_dir(0) / "oof.parquet", ClassList.load(workspace.classes).names)
    oof = oof.sort_values("sample_id")
    h = hashlib.sha256()
    for column in ("sample_id", "fold", "given_label"):
        h.update("\n".join(map(str, oof[column])).encode())
    h.update(np.ascontiguousarray(stack(oof), dtype=np.float32).tobytes())
    return h.hexdigest()


def check_oof_covers_train(ws: Path) -> None:
    workspace = Workspace(ws)
    oof, meta = read_store(workspace.round_dir(0) / "oof.parquet", ClassList.load(workspace.classes).names)
    assert meta["complete"] is True and meta["n_folds"] == N_FOLDS
    train = pd.read_parquet(workspace.manifest).query("split == 'train'")
    assert not oof["sample_id"].duplicated().any()
    assert sorted(oof["sample_id"]) == sorted(train["sample_id"])  # every train row exactly once
    folds = pd.read_parquet(workspace.round_dir(0) / "folds.parquet").set_index("sample_id")["fold"]
    np.testing.assert_array_equal(oof["fold"].to_numpy(), folds.loc[oof["sample_id"]].to_numpy())
    np.testing.assert_allclose(stack(oof).sum(1), 1.0, atol=1e-4)


def submitit_jobs(sweep_dir: Path) -> list[Path]:
    """The sweep's submitit job folders (`.submitit/<job id>`; the launcher's own `%j` folder aside)."""
    return sorted(p for p in (sweep_dir / ".submitit").iterdir() if p.is_dir() and p.name.isdigit())


def job_log(job: Path) -> str:
    return (job / f"{job.name}_0_log.err").read_text() + (job / f"{job.name}_0_log.out").read_text()


def fold_complete(ws: Path, k: int) -> bool:
    path = Workspace(ws).round_dir(0) / f"fold_{k}" / "heldout.parquet"
    return sidecar_path(path).is_file() and bool(read_json(sidecar_path(path)).get("complete"))


def test_folds_as_submitit_jobs_then_a_killed_job_rerun(
    fresh_digits_workspace: Path, digits_feature_cache: Path, effnet_weights: Path, tmp_path: Path
):
    ws = fresh_digits_workspace
    shutil.copytree(digits_feature_cache, ws / "cache", dirs_exist_ok=True)  # no job embeds
    overrides = [
        f"workspace={ws}", "model=features_lite0", f"paths.effnet_lite0={effnet_weights}", "embedder.input_size=32",
        "embedder.num_workers=0", "trainer.max_epochs=5", "logger=none", "cv.progress=false", "cv=kfold3",
        "round_callbacks.report=null", "hydra/launcher=local",
    ]

    def launch(sweep: str, folds: str, env: dict[str, str] | None = None):
        return run_kibble("kfold", "-m", *overrides, f"cv.fold={folds}", f"hydra.sweep.dir={tmp_path / sweep}", timeout=300, env=env)

    # 1. one submitit job per fold (its own process, stdout, stderr and result); exactly one assembles
    proc = launch("first", "range(3)")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sweep = tmp_path / "first"
    jobs = submitit_jobs(sweep)
    assert len(jobs) == N_FOLDS and len({j.name for j in jobs}) == N_FOLDS, jobs
    for job in jobs:
        for suffix in ("_0_log.out", "_0_log.err", "_0_result.pkl", "_submitted.pkl"):
            assert (job / f"{job.name}{suffix}").is_file(), f"{job}: no {job.name}{suffix}"
        assert "Job completed successfully" in job_log(job)
    trained = sorted(k for job in jobs for k in range(N_FOLDS) if f"fold {k + 1}/{N_FOLDS}: " in job_log(job))
    assert trained == list(range(N_FOLDS))  # each fold trained by exactly one job
    assert sum("OOF accuracy vs given labels" in job_log(job) for job in jobs) == 1  # one job assembled and ran the callbacks
    for k in range(N_FOLDS):  # each job has its own Hydra output dir and override
        assert f"cv.fold={k}" in (sweep / str(k) / ".hydra" / "overrides.yaml").read_text()
        assert fold_complete(ws, k)
    check_oof_covers_train(ws)
    first = oof_digest(ws)
    round_dir = Workspace(ws).round_dir(0)

    # 2. fold 1 is lost (its outputs gone, the OOF gone), then its job is killed (SIGKILL at its first file write)
    for name in ("heldout.parquet", "others.parquet"):
        (round_dir / "fold_1" / name).unlink()
        sidecar_path(round_dir / "fold_1" / name).unlink()
    (round_dir / "oof.parquet").unlink()
    sidecar_path(round_dir / "oof.parquet").unlink()
    kept = {k: (round_dir / f"fold_{k}" / "heldout.parquet").stat().st_mtime_ns for k in (0, 2)}
    proc = launch("killed", "1", env={CRASH_ENV: "1"})
    assert proc.returncode != 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [killed] = submitit_jobs(tmp_path / "killed")
    assert not (killed / f"{killed.name}_0_result.pkl").exists()  # the job died before it could report
    assert not fold_complete(ws, 1) and not (round_dir / "oof.parquet").exists()

    # 3. re-launching the first command re-runs only fold 1, and that job assembles the same OOF
    proc = launch("again", "range(3)")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    again = tmp_path / "again"
    logs = {k: (again / str(k) / "kfold.log").read_text() for k in range(N_FOLDS)}
    for k in (0, 2):
        assert f"fold {k + 1}/{N_FOLDS}: complete, skipped" in logs[k], logs[k][-2000:]
        assert (round_dir / f"fold_{k}" / "heldout.parquet").stat().st_mtime_ns == kept[k]  # not recomputed
    assert "complete, skipped" not in logs[1] and "fold 2/3: " in logs[1], logs[1][-2000:]
    assert sum("OOF accuracy vs given labels" in job_log(job) for job in submitit_jobs(again)) == 1
    assert all(fold_complete(ws, k) for k in range(N_FOLDS))
    check_oof_covers_train(ws)
    assert oof_digest(ws) == first
