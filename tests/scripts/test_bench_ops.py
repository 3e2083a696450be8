"""scripts/bench_ops.py at a toy size: import, both queues and the view rebuild run as child processes; the
rebuilt view equals the manifest the merges wrote; the image-check levels order as documented."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from helpers import write_noise_jpegs

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench_ops  # noqa: E402


@pytest.mark.slow
def test_bench_ops_runs_at_a_toy_size(tmp_path: Path):
    write_noise_jpegs(tmp_path / "imgs", [f"{i}.jpg" for i in range(20)], size=48)
    args = argparse.Namespace(rows=3000, repeats=1, images=str(tmp_path / "imgs"), image_sample=20, e2e_classes=50, e2e_repeats=1)
    table, rates, info = bench_ops.run_all(args, tmp_path / "work")
    assert len(table) == 5 and (table["s (median)"] > 0).all()
    assert info["view_equal"] and info["events"] == 3000 + 300
    assert [r["check_images"] for r in rates] == ["exists", "header", "decode"] and all(r["bad"] == 0 for r in rates)
