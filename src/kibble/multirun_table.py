"""A multirun ends with one table of its jobs and their results (issue 17, item 10).

`kibble train -m model=a,b optim.lr=...` or a k-fold sweep runs many jobs; Hydra prints each job's
overrides as it starts and nothing at the end, so comparing them meant opening every run folder.
`JobsTable`, a Hydra callback (conf/hydra/default.yaml), records each finished job as one JSON line in
`<sweep dir>/jobs.jsonl` (written from the job's own process, so it works with submitit's launchers,
where jobs run elsewhere) and, when the multirun ends, prints the table and writes `jobs.csv`:

    job  overrides                     status     test_accuracy  test_f1_macro
    0    model=resnet10t optim.lr=0.01  COMPLETED  0.9331         0.9325
    1    model=resnet10t optim.lr=0.1   FAILED     -              -

A job's results are what its task returned: a number (`kibble train`'s test accuracy, what the Optuna
sweeper optimises) or the numeric scalars of a summary dict. Single runs are left alone.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

log = logging.getLogger(__name__)
JOBS_FILE, TABLE_FILE = "jobs.jsonl", "jobs.csv"


def job_row(job_return: JobReturn) -> dict[str, Any] | None:
    """One finished job as a table row, or None outside a multirun."""
    hydra_cfg = job_return.hydra_cfg.hydra if job_return.hydra_cfg is not None else None
    if hydra_cfg is None or hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    row: dict[str, Any] = {"job": int(hydra_cfg.job.num), "overrides": " ".join(job_return.overrides or []),
                           "status": job_return.status.name}
    if job_return.status == JobStatus.COMPLETED:
        row.update(_results(job_return._return_value))
    else:
        row["error"] = " ".join(str(job_return._return_value).split())[:200]
    return row


def _results(value: Any) -> dict[str, float]:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return {"result": float(value)}
    if isinstance(value, dict):
        return {str(k): float(v) for k, v in value.items()
                if isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))}
    return {}


def jobs_table(sweep_dir: str | Path) -> pd.DataFrame:
    """The recorded jobs of a sweep, one row each (the last record of a job that ran twice), by job number."""
    path = Path(sweep_dir) / JOBS_FILE
    if not path.is_file():
        return pd.DataFrame(columns=["job", "overrides", "status"])
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    table = pd.DataFrame(rows).drop_duplicates("job", keep="last").sort_values("job", kind="stable").reset_index(drop=True)
    first = ["job", "overrides", "status"]
    return table[first + [c for c in table.columns if c not in first and c != "error"] + (["error"] if "error" in table else [])]


class JobsTable(Callback):
    """Hydra callback: a line per finished job, a table when the multirun ends (see the module docstring)."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        row = job_row(job_return)
        if row is None:
            return
        path = Path(job_return.hydra_cfg.hydra.sweep.dir) / JOBS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(row, default=str) + "\n").encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)  # one write of one short line: jobs never interleave
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        table = jobs_table(sweep_dir)
        if table.empty:
            return
        table.to_csv(sweep_dir / TABLE_FILE, index=False)
        shown = table.drop(columns=[c for c in ("error",) if c in table]).fillna("-")
        print(f"\n{len(table)} job(s) in {sweep_dir} ({TABLE_FILE}):\n" + shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
