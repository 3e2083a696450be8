"""`kibble status workspace=W [json=true]`: where a workspace stands, on one screen.

Rows per split, the current round, labels changed so far, each round's folds / OOF / queue (built,
pushed to Label Studio, pulled, merged, with counts), flagged annotators, drift verdicts of monitor
runs inside the workspace, and the next command. The reading is `kibble.report.status`; this task
never takes the workspace lock and writes nothing (conf/status.yaml keeps Hydra out of the workspace).
"""

from __future__ import annotations

import json
from typing import Any

import hydra
from omegaconf import DictConfig

from kibble import KibbleError
from kibble.paths import Workspace, config_dir
from kibble.report.status import format_status, workspace_status


def run(cfg: DictConfig) -> dict[str, Any]:
    given = str(cfg.workspace)
    ws = Workspace(given)
    if not ws.root.is_dir():
        raise KibbleError(f"{ws.root}: no such directory; pass workspace=<a directory written by `kibble import`>")
    if not ws.manifest.is_file():  # not Workspace.require(): that may finish a transaction, i.e. write
        raise KibbleError(f"{ws.root}: not a kibble workspace (no manifest.parquet); run `kibble import workspace={given}` first")
    status = workspace_status(ws, name=given)
    print(json.dumps(status, indent=2, default=str) if cfg.get("json") else format_status(status))
    return status


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="status")
def main(cfg: DictConfig) -> None:
    run(cfg)
