"""A multirun ends with a table of its jobs (kibble.multirun_table.JobsTable), through real Hydra."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd

from kibble.multirun_table import jobs_table

APP = textwrap.dedent('''
    import hydra

    @hydra.main(version_base="1.3", config_path=None, config_name=None)
    def main(cfg):
        if cfg.x == 3:
            raise ValueError("x=3 is broken")
        return {"accuracy": cfg.x / 10, "round": 0, "note": "text is left out"} if cfg.x < 2 else cfg.x / 10

    if __name__ == "__main__":
        main()
''')


def run_app(tmp_path: Path, xs: str) -> subprocess.CompletedProcess:
    (tmp_path / "app.py").write_text(APP)
    return subprocess.run(
        [sys.executable, "app.py", "-m", f"+x={xs}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
         "+hydra.callbacks.jobs_table._target_=kibble.multirun_table.JobsTable"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_a_multirun_ends_with_its_jobs_table(tmp_path: Path):
    out = run_app(tmp_path, "1,2")
    assert out.returncode == 0, out.stderr
    table = pd.read_csv(tmp_path / "sweep" / "jobs.csv")
    assert table["job"].tolist() == [0, 1] and table["overrides"].tolist() == ["+x=1", "+x=2"]
    assert table["status"].tolist() == ["COMPLETED", "COMPLETED"]
    assert table.loc[0, "accuracy"] == 0.1 and table.loc[1, "result"] == 0.2 and "note" not in table
    assert "2 job(s) in" in out.stdout and "+x=1" in out.stdout.split("job(s) in")[1]


def test_a_failed_job_is_a_row_too(tmp_path: Path):
    out = run_app(tmp_path, "1,3")
    assert out.returncode != 0  # Hydra re-raises the failed job's error after the sweep
    table = jobs_table(tmp_path / "sweep")
    assert table["status"].tolist() == ["COMPLETED", "FAILED"] and "x=3 is broken" in table.loc[1, "error"]


def test_single_runs_write_nothing(tmp_path: Path):
    (tmp_path / "app.py").write_text(APP)
    out = subprocess.run([sys.executable, "app.py", "+x=1", f"hydra.run.dir={tmp_path / 'run'}",
                          "+hydra.callbacks.jobs_table._target_=kibble.multirun_table.JobsTable"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert not list(tmp_path.rglob("jobs.jsonl"))
