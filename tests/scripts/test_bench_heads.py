"""scripts/bench_heads.py at a toy size: both arms run, the heads learn, nothing is recorded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_heads.py"


def test_bench_heads_runs_at_a_toy_size(tmp_path: Path):
    doc = SCRIPT.parents[1] / "docs" / "benchmarks.md"
    before = doc.read_text()
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--rows", "3000", "--dim", "32", "--classes", "5", "--epochs", "2", "--compare-rows", "1500", "--no-record"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "folds one by one (before)" in out.stdout and "3,000 x 32, 5 classes: heads together" in out.stdout
    assert "Target (issue 15)" in out.stdout
    assert doc.read_text() == before  # --no-record
