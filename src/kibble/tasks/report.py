"""`kibble report workspace=W [round=N]`: (re)write rounds/NNN/report.html.

The round report is written by a round callback of `kibble kfold` (and refreshed by `kibble loop`);
this task re-renders it, e.g. after `kibble queue` rebuilt a queue or to get the report of an old
round. Default: every round that has an assembled OOF.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from kibble import KibbleError
from kibble.paths import Workspace, config_dir
from kibble.report.round import write_round_report


def run(cfg: DictConfig) -> dict:
    ws = Workspace(cfg.workspace).require()
    if cfg.get("round") is not None:
        rounds = [int(cfg.round)]
        if not ws.round_dir(rounds[0]).is_dir():
            raise KibbleError(f"{ws.round_dir(rounds[0])}: round {rounds[0]} does not exist; run `kibble kfold round={rounds[0]}` first")
    else:
        rounds = sorted(int(p.parent.name) for p in (ws.root / "rounds").glob("[0-9][0-9][0-9]/oof.parquet"))
        if not rounds:
            raise KibbleError(f"{ws.root}: no round has an assembled OOF yet; run `kibble kfold workspace={ws.root}` first")
    paths = [str(write_round_report(ws, r)) for r in rounds]
    for path in paths:
        print(f"report -> {path}")
    return {"rounds": rounds, "reports": paths}


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="report")
def main(cfg: DictConfig) -> None:
    run(cfg)
