"""scripts/bench_cleaning_trained.py --quick: every arm runs (the real loop, random relabelling, end-to-end
training) and the recorded section carries the table and its protocol."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench_cleaning_trained  # noqa: E402

COLUMNS = ["noise", "arm", "seeds", "reviews", "label noise left %", "queue precision %", "test acc %", "gap closed %", "per seed"]


@pytest.mark.slow
def test_quick_run_cleans_labels_and_records_every_arm(tmp_path: Path, effnet_weights: Path):
    doc = tmp_path / "benchmarks.md"
    table = bench_cleaning_trained.main(["--quick", "--workdir", str(tmp_path / "work"), "--doc", str(doc)])
    assert list(table.columns) == COLUMNS
    assert table["arm"].tolist() == ["noisy labels", "clean labels", "kibble loop, 1 round", "kibble loop, 2 rounds",
                                     "random relabel, 1 round", "random relabel, 2 rounds"]
    noise = dict(zip(table["arm"], table["label noise left %"].astype(float)))
    assert noise["noisy labels"] == pytest.approx(40.0, abs=0.1)
    # both arms fix labels; the loop's queue finds wrong labels well above random's 40 % hit rate
    assert noise["kibble loop, 2 rounds"] < noise["kibble loop, 1 round"] < noise["noisy labels"]
    assert noise["random relabel, 2 rounds"] < noise["random relabel, 1 round"] < noise["noisy labels"]
    assert noise["kibble loop, 2 rounds"] < noise["random relabel, 2 rounds"]
    assert float(table.loc[table["arm"] == "kibble loop, 1 round", "queue precision %"].iloc[0]) > 55
    assert table.loc[table["arm"] == "kibble loop, 1 round", "reviews"].iloc[0] == "288"  # ceil(0.5 x 575 wrong labels)
    text = doc.read_text()
    assert text.count("## Label cleaning where noise hurts: a CNN trained end to end (digits)") == 1
    for phrase in ("Command: `python", "Budget per round", "exactly rate x 1,438 train labels", "batch 64", "Random relabel arm", "conf/strategy/default.yaml", "`--gpu`", "load average"):
        assert phrase in text


def test_random_relabelling_never_asks_twice_and_spends_the_budget(digits_workspace: Path, tmp_path: Path):
    """The random arm: each round `budget` train samples not reviewed before, merged as the loop merges."""
    import pandas as pd

    work = tmp_path / "work"
    labels = bench_cleaning_trained.noisy_train_labels(digits_workspace, 0.4, seed=1)
    ws = bench_cleaning_trained.make_workspace(digits_workspace, work / "g" / "random", labels)
    assert bench_cleaning_trained.label_noise(ws)[1] == 575
    settings = bench_cleaning_trained.Settings(embed_size=32)
    rows = bench_cleaning_trained.random_rounds(ws, work, settings, seed=1, rounds=3, budget=100)
    assert [r["queue_size"] for r in rows] == [100, 100, 100]
    events = pd.read_parquet(ws / "label_events.parquet")
    asked = events.loc[events["source"] == "simulated", "sample_id"]
    assert len(asked) == 300 and asked.is_unique
    share, wrong = bench_cleaning_trained.label_noise(ws)
    hits = sum(round(r["queue_precision"] * 100) for r in rows)
    assert wrong == 575 - hits  # every wrong label it asked about is corrected, nothing else changes


def test_a_deadline_already_past_starts_no_seed_and_records_nothing(tmp_path: Path):
    """--deadline-s (a time-boxed GPU lease): no seed starts after it; with none finished, the page is untouched."""
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n")
    table = bench_cleaning_trained.main(["--workdir", str(tmp_path / "work"), "--doc", str(doc), "--seeds", "0", "--rates", "0.4",
                                         "--deadline-s", "0"])
    assert table.empty
    assert doc.read_text() == "# Benchmarks\n"
    assert not (tmp_path / "work" / "results.json").exists()
    again = bench_cleaning_trained.main(["--workdir", str(tmp_path / "work"), "--doc", str(doc), "--seeds", "0", "--rates", "0.4", "--record-only"])
    assert again.empty and doc.read_text() == "# Benchmarks\n"  # after a stopped run that finished nothing
