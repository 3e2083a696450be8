"""scripts/bench_active_cold.py's tables and verdicts on made-up curves (the Imagewoof run itself takes ~30 min)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench_active_cold as bench  # noqa: E402

BUDGETS = [10, 20, 50, 100, 200]


def curves(accuracy: dict[str, list[list[float]]]) -> pd.DataFrame:
    """strategy -> per seed, the accuracy at each budget (round 0, no labels, gets NaN as in the loop)."""
    rows = []
    for name, seeds in accuracy.items():
        for seed, accs in enumerate(seeds):
            rows.append({"strategy": name, "seed": seed, "round": 0, "n_labels": 0, "test_accuracy": np.nan})
            rows += [{"strategy": name, "seed": seed, "round": r + 1, "n_labels": n, "test_accuracy": a}
                     for r, (n, a) in enumerate(zip(BUDGETS, accs))]
    return pd.DataFrame(rows)


def test_the_headline_passes_only_when_it_beats_random_in_every_sense():
    good = curves({"random": [[0.50, 0.60, 0.75, 0.85, 0.90], [0.45, 0.62, 0.74, 0.86, 0.91], [0.52, 0.58, 0.76, 0.84, 0.90]],
                   "typiclust": [[0.70, 0.80, 0.90, 0.92, 0.93], [0.66, 0.78, 0.91, 0.93, 0.94], [0.69, 0.81, 0.90, 0.92, 0.93]],
                   "margin": [[0.50, 0.58, 0.80, 0.90, 0.93], [0.45, 0.60, 0.79, 0.91, 0.93], [0.52, 0.57, 0.78, 0.89, 0.92]]})
    table, per_seed = bench.summary_table(good, ["typiclust", "margin", "random"], BUDGETS, [100, 200])
    assert table["strategy"].tolist() == ["typiclust", "margin", "random"]
    assert table.loc[0, "role"] == "headline (declared)" and table.loc[2, "role"] == "baseline"
    assert table.loc[0, "1/class"] == "0.683 ± 0.021" and table.loc[2, "gap @1/class (pt), p"] == ""
    assert table.loc[0, "labels to reach random @20/class (200)"].endswith("(3/3)")
    notes = bench.headline_notes(per_seed, BUDGETS, [100, 200])
    assert [line.rsplit(": ", 1)[1] for line in notes[:3]] == ["PASS.", "PASS.", "PASS."], notes
    assert notes[3].startswith("From 100 to 200 labels the headline's mean accuracy rises 1.0 points and random's 5.3:")

    weak = good.copy()  # typiclust only 5 points ahead at 2/class, and one seed never reaches random's 0.90 at 200 labels
    is_typi = weak["strategy"] == "typiclust"
    weak.loc[is_typi & (weak["n_labels"] == 20), "test_accuracy"] -= 0.15
    weak.loc[is_typi & (weak["seed"] == 2) & (weak["n_labels"] >= 50), "test_accuracy"] = 0.85
    table, per_seed = bench.summary_table(weak, ["typiclust", "random"], BUDGETS, [100, 200])
    notes = bench.headline_notes(per_seed, BUDGETS, [100, 200])
    assert [line.rsplit(": ", 1)[1] for line in notes[:3]] == ["PASS.", "FAIL.", "FAIL."], notes
    assert "per seed 50, 50, never" in notes[2] and "(2/3 seeds reached it" in notes[2]


def test_the_dev_phase_picks_the_best_worst_seed_and_never_counts_as_worst():
    per_seed = pd.DataFrame({"strategy": ["a"] * 3 + ["b"] * 3 + ["c"] * 3,
                             "seed": [0, 1, 2] * 3,
                             "need@200": [80, 90, 100, 60, 70, np.nan, 105, 106, 107]})
    choice, board = bench.choose_on_dev(per_seed, ["a", "b", "c"], 200)
    assert choice == "a"  # b is best on two seeds but never gets there on the third
    assert board["strategy"].tolist() == ["a", "c", "b"]
    assert board.loc[2, "worst share"] == np.inf and board.loc[2, "per seed"] == "0.30, 0.35, never"
    line = bench.dev_notes(board, "a")[0]
    assert "a: worst 0.50x" in line and "Chosen: a (conf/active/cold.yaml)" in line


def test_the_dev_workspace_scores_on_train_images_held_out_of_its_pool(digits_workspace: Path, tmp_path: Path):
    """The dev phase never measures on the val/test split the test phase reports: its test rows come out of the pool."""
    import shutil

    from helpers import import_workspace

    ws = tmp_path / "ws"
    shutil.copytree(digits_workspace, ws, ignore=shutil.ignore_patterns("runs", "multiruns", "cache", "rounds"))
    import_workspace(ws, ["overwrite=true", "pool.labels_per_class=0"])
    before = pd.read_parquet(ws / "manifest.parquet")
    n = bench.carve_dev_test(ws)
    after = pd.read_parquet(ws / "manifest.parquet")
    pool_before = before["split"] == "pool"
    moved = pool_before & (after["split"] == "test")
    assert n == moved.sum() == round(bench.DEV_TEST_SHARE * pool_before.sum())
    assert (after.loc[moved, "label"] == after.loc[moved, "true_label"]).all()  # labelled with the truth, to score on
    assert after.loc[moved, "true_label"].nunique() == before.loc[pool_before, "true_label"].nunique()  # stratified: every class
    assert ((after["split"] == "test") == moved).all()  # the loop scores on test: the carved rows alone
    assert (after.loc[before["split"] == "test", "split"] == "val").all()  # the workspace's own test rows step aside
    untouched = ~pool_before
    pd.testing.assert_frame_equal(after.loc[untouched].drop(columns="split"), before.loc[untouched].drop(columns="split"))
