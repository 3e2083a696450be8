"""`kibble embed workspace=W [shard=i/n]`: the features-mode cache filled ahead of a round, as one job or n.

The same rows, embedder and cache entry a features-mode `kibble kfold` / `kibble train` use
(`kibble.training.build.attach_features`): a round started afterwards embeds nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from kibble import KibbleError
from kibble.paths import Workspace, config_dir
from kibble.predictions.shards import parse_shard, shard_rows


def run(cfg: DictConfig) -> dict[str, Any]:
    ws = Workspace(cfg.workspace).require()
    if not cfg.get("embedder"):
        raise KibbleError("no embedder configured; kibble embed uses model=features (or features_lite0/1/2) settings")
    shard = parse_shard(cfg.get("shard"))
    dm = hydra.utils.instantiate(cfg.data)
    rows = dm.manifest if shard is None else shard_rows(dm.manifest, *shard)
    rows = dm.usable(rows)
    embedder = hydra.utils.instantiate(cfg.embedder)
    cache_dir = Path((cfg.get("paths") or {}).get("cache_dir") or ws.cache) / "features"
    ids, matrix = embedder.features_for(rows, ws.data_root, cache_dir, root_id=ws.feature_root_id, hold_lock=shard is None)
    which = f"shard {shard[0]}/{shard[1]}: " if shard else ""
    print(f"{which}{len(ids)} images embedded or found in the feature cache ({matrix.shape[1]} features) under {cache_dir}")
    return {"n": len(ids), "width": int(matrix.shape[1]), "shard": None if shard is None else f"{shard[0]}/{shard[1]}",
            "skipped": len(dm.skipped)}


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="embed")
def main(cfg: DictConfig) -> None:
    run(cfg)
