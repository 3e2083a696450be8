"""`kibble predict shard=i/n`: slices predicted as separate jobs assemble into the store one job writes (issue 15, item 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import compose_config, train_tiny_copy
from kibble import KibbleError
from kibble.predictions.shards import parse_shard, shard_path, shard_rows
from kibble.predictions.store import read_store, stack
from kibble.tasks import predict


@pytest.fixture(scope="module")
def trained(digits_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return train_tiny_copy(digits_workspace, tmp_path_factory.mktemp("predict_shards"), train_batches=2)


def run(trained: dict, tmp_path: Path, *overrides: str) -> dict:
    return predict.run(compose_config("predict", [f"workspace={trained['ws']}", f"ckpt_path={trained['ckpt']}", *overrides],
                                      output_dir=tmp_path / "predict"))


def test_shards_assemble_into_the_unsharded_store(trained: dict, tmp_path: Path, capsys):
    whole = tmp_path / "whole.parquet"
    run(trained, tmp_path, f"out={whole}")
    out = tmp_path / "sharded.parquet"
    first = run(trained, tmp_path, f"out={out}", "shard=2/3")  # out of order: any shard may finish first
    assert first["assembled"] is None and first["missing_shards"] == [0, 1]
    assert "2 of 3 shard(s) not done yet (0/3, 1/3)" in capsys.readouterr().out and not out.exists()
    run(trained, tmp_path, f"out={out}", "shard=0/3")
    last = run(trained, tmp_path, f"out={out}", "shard=1/3")
    assert last["assembled"] == str(out) and "all 3 shards done" in capsys.readouterr().out
    a, meta = read_store(whole)
    b, assembled = read_store(out)
    assert b["sample_id"].tolist() == a["sample_id"].tolist() and assembled["n_shards"] == 3 and assembled["n"] == len(a)
    np.testing.assert_allclose(stack(b), stack(a), atol=1e-6)
    assert not any(shard_path(out, i, 3).exists() for i in range(3))  # slices removed once assembled
    again = run(trained, tmp_path, f"out={out}", "shard=0/3")  # a re-launch of a finished set changes nothing
    assert again["assembled"] == str(out) and "already done" in capsys.readouterr().out
    other = run(trained, tmp_path, f"out={out}", "shard=0/2")  # another shard count is another set: this slice is predicted
    assert other["assembled"] is None and other["missing_shards"] == [1] and "wrote shard 0/2" in capsys.readouterr().out


def test_shard_values_and_slices():
    assert parse_shard(None) is None and parse_shard("1/4") == (1, 4) and parse_shard(" 0 / 1 ") == (0, 1)
    for bad in ("4/4", "x", "1/0", "-1/3"):
        with pytest.raises(KibbleError, match=r"shard="):
            parse_shard(bad)
    import pandas as pd

    rows = pd.DataFrame({"sample_id": [str(i) for i in range(10)]})
    slices = [shard_rows(rows, i, 3)["sample_id"].tolist() for i in range(3)]
    assert sum(slices, []) == rows["sample_id"].tolist() and {len(s) for s in slices} <= {3, 4}
