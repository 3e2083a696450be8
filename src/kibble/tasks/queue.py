"""`kibble queue`: build a round's relabel queue from its assembled OOF (same code as the round callback)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from kibble import KibbleError
from kibble.data.classes import ClassList
from kibble.data.manifest import load_manifest
from kibble.paths import Workspace, config_dir
from kibble.predictions.store import read_store
from kibble.rounds import RoundContext


def load_round(cfg: DictConfig) -> RoundContext:
    ws = Workspace(cfg.workspace).require()
    round_index = int(cfg.round) if cfg.get("round") is not None else ws.current_round()
    round_dir = ws.round_dir(round_index)
    oof_path = round_dir / "oof.parquet"
    if not oof_path.is_file():
        raise KibbleError(f"{oof_path}: round {round_index} has no assembled OOF; run `kibble kfold workspace={ws.root} round={round_index}` first")
    classes = ClassList.load(ws.classes)
    oof, _ = read_store(oof_path, classes.names)
    manifest = load_manifest(ws.manifest, classes.names)
    saved = round_dir / "config.yaml"  # the round's model/data/trainer (kfold writes it): strategies that train reuse it
    if saved.is_file():
        with open_dict(cfg):
            cfg = OmegaConf.merge(cfg, OmegaConf.load(saved))
    return RoundContext(ws, round_index, round_dir, manifest, classes, oof, None, cfg)


def run(cfg: DictConfig) -> dict:
    ctx = load_round(cfg)
    result = hydra.utils.instantiate(cfg.strategy)(ctx)
    print(f"round {ctx.round_index}: queue of {result['queue_size']} items -> {result['files']['csv']}")
    return result


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="queue")
def main(cfg: DictConfig) -> None:
    run(cfg)
