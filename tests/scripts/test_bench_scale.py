"""scripts/bench_scale.py at a toy size: every arm runs and agrees with its baseline; its section is replaced, never appended."""

from __future__ import annotations

import sys
from pathlib import Path

from kibble.benchmarks import replace_section

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench_scale  # noqa: E402


def test_bench_arms_run_and_agree_at_a_toy_size(tmp_path: Path):
    labels, probs = bench_scale.synthetic(3000, 7)
    store, store_info = bench_scale.bench_store(labels, probs, tmp_path, repeats=1)
    assert [r["layout"].split(":")[0] for r in store][:2] == ["today", "kibble"] and len(store) == 5
    assert store_info["legacy_equal"] and store_info["float32_max_error"] == 0.0 and store_info["float16_max_error"] < 1e-3
    strategies, info = bench_scale.bench_strategies(labels, probs, repeats=1)
    assert {r["step"] for r in strategies} >= {"kfold", "self_confidence", "normalized_margin", "entropy", "confident_learning"}
    assert info["self_confidence_equal"] and info["confident_learning_equal"] and info["normalized_margin_max_diff"] < 1e-6


def test_replace_section_replaces_its_own_section_only(tmp_path: Path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## A\n\nold a\n\n## B\n\nb stays\n")
    replace_section("## A", "## A\n\nnew a\n", doc)
    replace_section("## C", "## C\n\nc\n", doc)
    replace_section("## C", "## C\n\nc again\n", doc)
    text = doc.read_text()
    assert text == "# Benchmarks\n\n## A\n\nnew a\n\n## B\n\nb stays\n\n## C\n\nc again\n"
