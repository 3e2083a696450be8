"""scripts/bench_scale.py at a toy size: every arm runs and agrees with its baseline; its section is replaced, never appended."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from kibble.benchmarks import replace_section, scale_neighbors

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


def test_neighbors_arm_runs_at_a_toy_size_and_its_exact_references_agree():
    pytest.importorskip("faiss")
    rows, info = bench_scale.bench_neighbors(sizes=(600, 1500, 3000), dim=64, queries=200, exact_full_max=600, exact_max=1500)
    assert [r["exact"].split()[0] for r in rows] == ["measured,", "200", "not"]
    assert all(0.8 < r["recall@10"] <= 1 and r["same flag"] > 0.9 for r in rows)
    assert rows[2]["exact s"] == pytest.approx(rows[1]["exact s"] * 4)  # N^2 from the largest measured
    emb, labels, noisy = scale_neighbors.clustered_embeddings(800, 64)
    assert emb.shape == (800, 64) and emb.dtype == np.float32 and 0.15 < noisy.mean() < 0.25 and labels.max() < 120
    some = np.arange(0, 800, 7)
    sklearn_rows, brute_rows = scale_neighbors.exact_rows(emb, some, 5), scale_neighbors.flat_rows(emb, some, 5)
    assert np.mean([len(set(a) & set(b)) for a, b in zip(sklearn_rows, brute_rows)]) > 4.95


def test_library_comparison_runs_every_index_on_the_same_rows():
    pytest.importorskip("faiss")
    rows = bench_scale.bench_ann_libraries(900, dim=32, queries=100)
    names = [" ".join(r["index"].split()[:2]) for r in rows]
    assert names[:4] == ["faiss IVF-Flat"] * 3 + ["faiss HNSW-Flat"] and rows[4]["index"].startswith("hnswlib")  # IVF at nprobe 8, 16, 23 (all lists)
    assert [r.get("same with 1 and 2 threads") for r in rows if r["index"].endswith("(the default)")] == [True]
    assert all(0.5 < r["recall@10"] <= 1 for r in rows if not np.isnan(r["recall@10"]))


def test_crossover_interpolates_where_exact_stops_being_cheaper():
    rows = [{"rows": 1000, "exact s": 1.0, "ANN s": 2.0, "exact": "measured"},
            {"rows": 4000, "exact s": 16.0, "ANN s": 8.0, "exact": "measured"},
            {"rows": 10 ** 6, "exact s": 1e6, "ANN s": 100.0, "exact": "not run: N^2"}]
    assert scale_neighbors.crossover(rows) == pytest.approx(2000.0)
    assert scale_neighbors.crossover(rows[1:]) is None


def test_neighbors_section_is_written_from_the_run(tmp_path: Path):
    pytest.importorskip("faiss")
    rows, info = bench_scale.bench_neighbors(sizes=(500, 1200), dim=32, queries=100, exact_full_max=500, exact_max=500)
    libraries = bench_scale.bench_ann_libraries(600, dim=32, queries=100)
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n")
    bench_scale.record_neighbors(rows, {**info, "peak_gb": 1.0}, 1.0, 100, libraries, path=doc)
    text = doc.read_text()
    assert text.count("## Scale: `neighbors`") == 1 and "exact_below = 20,000" in text and "Library choice" in text
