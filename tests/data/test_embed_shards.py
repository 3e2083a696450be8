"""`kibble embed shard=i/n`: slices embedded by separate jobs (the cache lock not held while they embed) fill the
one feature cache a round reads; the result equals the unsharded cache, and a round then embeds nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from helpers import compose_config
from kibble.data.feature_files import read_cache
from kibble.tasks import embed


def _cache_folder(cache: Path) -> Path:
    folders = [p for p in (cache / "features").iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


def test_sharded_embedding_equals_the_unsharded_cache(digits_workspace: Path, effnet_weights: Path, digits_feature_cache: Path,
                                                       tmp_path: Path, capsys):
    ws = tmp_path / "ws"
    shutil.copytree(digits_workspace, ws)
    common = [f"workspace={ws}", "model=features_lite0", f"paths.effnet_lite0={effnet_weights}", "embedder.input_size=32", "embedder.num_workers=0"]
    results = [embed.run(compose_config("embed", [*common, f"shard={i}/2"], output_dir=tmp_path / f"embed{i}")) for i in (1, 0)]
    assert sum(r["n"] for r in results) == 1797 and results[0]["shard"] == "1/2"
    assert "shard 0/2: " in capsys.readouterr().out
    mine = _cache_folder(ws / "cache")
    reference = _cache_folder(digits_feature_cache)
    assert mine.name == reference.name  # the cache entry a round (attach_features) reads
    ids, matrix, chunks = read_cache(mine)
    ref_ids, ref_matrix, _ = read_cache(reference)
    assert not chunks  # consolidated by the shards' own locked passes
    order = {s: i for i, s in enumerate(ids["sample_id"])}
    np.testing.assert_allclose(matrix[[order[s] for s in ref_ids["sample_id"]]], ref_matrix, atol=1e-5)
    runs = json.loads((mine / "meta.json").read_text())["embedding_runs"]
    assert sum(r["images"] for r in runs) == 1797  # each image embedded once, by its shard
    whole = embed.run(compose_config("embed", common, output_dir=tmp_path / "embed_all"))  # everything cached now
    assert whole["n"] == 1797 and json.loads((mine / "meta.json").read_text())["embedding_runs"] == runs
