"""`kibble loop mode=active` on digits: margin selection vs random at equal labels, 3 seeds; bad input.

The workspace is a copy of the session digits workspace (images inside it, data_root `images/digits`)
re-imported with a seed set of 2 labels per class, so the session `digits_feature_cache` (effnet-lite0,
32 px) is hit and nothing is embedded again.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest

from helpers import import_workspace, run_kibble
from kibble import KibbleError
from kibble.config import compose_config
from kibble.tasks import active_loop, loop

ROUNDS, BATCH, SEEDS = 4, 20, [0, 1, 2]


def seed_set_workspace(digits_workspace: Path, cache: Path, root: Path, labels_per_class: int = 2) -> Path:
    ws = root / "ws"
    shutil.copytree(digits_workspace, ws, ignore=shutil.ignore_patterns("runs", "multiruns", "cache", "rounds"))
    import_workspace(ws, ["overwrite=true", f"pool.labels_per_class={labels_per_class}"])
    shutil.copytree(cache, ws / "cache")
    return ws


def overrides(ws: Path, weights: Path, *extra: str) -> list[str]:
    return [f"workspace={ws}", "mode=active", "experiment=active_digits", f"paths.effnet_lite0={weights}", "logger=none",
            "active.progress=false", *extra]


@pytest.fixture(scope="module")
def active_run(digits_workspace: Path, digits_feature_cache: Path, effnet_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("active")
    ws = seed_set_workspace(digits_workspace, digits_feature_cache, root)
    before = (ws / "manifest.parquet").read_bytes()
    cfg = compose_config("loop", overrides(ws, effnet_weights, "active.strategy=margin", f"active.rounds={ROUNDS}",
                                           f"active.batch_size={BATCH}", f"active.seeds=[{','.join(map(str, SEEDS))}]"), output_dir=root / "out")
    result = loop.run(cfg)
    return {"ws": ws, "result": result, "manifest_before": before}


@pytest.mark.slow
def test_margin_beats_random_at_equal_labels(active_run: dict):
    ws = active_run["ws"]
    curves = pd.read_csv(ws / "active" / "curves.csv")
    assert len(curves) == 2 * len(SEEDS) * (ROUNDS + 1)
    for (strategy, seed), part in curves.groupby(["strategy", "seed"]):
        assert part["n_labels"].tolist() == [20 + BATCH * r for r in range(ROUNDS + 1)], (strategy, seed)
    # same seeds: round 0 (seed set only, no selection yet) is identical across arms
    first = curves[curves["round"] == 0].pivot(index="seed", columns="strategy", values="test_accuracy")
    assert (first["margin"] == first["random"]).all()
    final = curves[curves["round"] == ROUNDS].groupby("strategy")["test_accuracy"].mean()
    assert final["margin"] > final["random"], f"margin {final['margin']:.4f} vs random {final['random']:.4f}"
    assert final["random"] > curves[curves["round"] == 0]["test_accuracy"].mean() + 0.1  # every arm learns
    savings = pd.read_csv(ws / "active" / "savings.csv").set_index("strategy")
    assert savings.loc["margin", "share_of_random_labels"] < 1.0
    assert (ws / "active" / "curves.png").stat().st_size > 1000
    assert "accuracy vs labels" in (ws / "active" / "report.html").read_text()
    assert (ws / "manifest.parquet").read_bytes() == active_run["manifest_before"]  # the source workspace is untouched


@pytest.mark.slow
def test_each_round_is_a_real_new_label_queue_merged_into_train(active_run: dict):
    arm = active_run["ws"] / "active" / "margin" / "seed0"
    manifest = pd.read_parquet(arm / "manifest.parquet")
    queues = [pd.read_csv(arm / "rounds" / f"{r:03d}" / "queue.csv", dtype={"sample_id": str}) for r in range(ROUNDS)]
    picked = pd.concat(queues)
    assert (picked["kind"] == "new").all() and picked["sample_id"].is_unique and len(picked) == ROUNDS * BATCH
    rows = manifest.set_index("sample_id").loc[picked["sample_id"]]
    assert (rows["split"] == "train").all() and (rows["label"] == rows["true_label"]).all()
    assert int((manifest["split"] == "train").sum()) == 20 + ROUNDS * BATCH
    tasks = json.loads((arm / "rounds" / "000" / "queue.labelstudio.json").read_text())
    assert len(tasks) == BATCH and all(t["predictions"][0]["result"][0]["value"]["choices"] for t in tasks)
    metrics = json.loads((arm / "rounds" / "001" / "metrics.json").read_text())
    assert metrics["mode"] == "active" and metrics["n_labels"] == 20 + BATCH
    from kibble.paths import Workspace
    from kibble.report.active import round_sections

    titles = [s.title for s in round_sections(Workspace(arm), arm / "rounds" / "000")]
    assert titles == ["New labels (active learning)"]
    assert [s.title for s in round_sections(Workspace(active_run["ws"]), active_run["ws"] / "rounds" / "000")] == ["Active learning: accuracy vs labels"]


def test_bald_arm_runs_on_mc_dropout(digits_workspace: Path, digits_feature_cache: Path, effnet_weights: Path, tmp_path: Path):
    ws = seed_set_workspace(digits_workspace, digits_feature_cache, tmp_path)
    cfg = compose_config("loop", overrides(ws, effnet_weights, "active.strategy=[bald,hybrid]", "active.baseline=random",
                                           "active.rounds=1", "active.batch_size=10", "active.seeds=[0]", "active.mc_passes=5",
                                           "trainer.max_epochs=3"), output_dir=tmp_path / "out")
    result = active_loop.run(cfg)
    curves = pd.read_csv(result["curves"])
    assert sorted(curves["strategy"].unique()) == ["bald", "hybrid", "random"]
    queue = pd.read_csv(ws / "active" / "bald" / "seed0" / "rounds" / "000" / "queue.csv")
    assert len(queue) == 10 and (queue["strategy"] == "bald").all() and (queue["score"] > 0).all()


def test_bad_input(digits_workspace: Path, digits_feature_cache: Path, effnet_weights: Path, tmp_path: Path):
    ws = seed_set_workspace(digits_workspace, digits_feature_cache, tmp_path)
    n_pool = int((pd.read_parquet(ws / "manifest.parquet")["split"] == "pool").sum())
    proc = run_kibble("loop", *overrides(ws, effnet_weights, "active.strategy=entropyy"))
    lines = [line for line in proc.stderr.splitlines() if line.startswith("kibble loop: error: ")]
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "unknown active-learning strategy 'entropyy'; valid names:" in lines[0]
    with pytest.raises(KibbleError, match=f"active.batch_size x active.rounds = {n_pool + 2} new labels but the pool holds only {n_pool}"):
        loop.run(compose_config("loop", overrides(ws, effnet_weights, f"active.batch_size={n_pool // 2 + 1}", "active.rounds=2"), output_dir=tmp_path / "o1"))
    with pytest.raises(KibbleError, match=rf"active.batch_size=\[1, {n_pool}\] asks for {n_pool + 1} new labels but the pool holds only {n_pool}"):
        loop.run(compose_config("loop", overrides(ws, effnet_weights, f"active.batch_size=[1,{n_pool}]"), output_dir=tmp_path / "o1"))
    for bad in ("[10,0]", "[]", "2.5"):
        with pytest.raises(KibbleError, match=r"active.batch_size=.*(whole number >= 1|give one size for every round)"):
            loop.run(compose_config("loop", overrides(ws, effnet_weights, f"active.batch_size={bad}"), output_dir=tmp_path / "o1"))
    manifest = pd.read_parquet(ws / "manifest.parquet")
    row = manifest.index[manifest["split"] == "pool"][0]
    manifest.loc[row, "label"] = manifest.loc[row, "true_label"]
    manifest.to_parquet(ws / "manifest.parquet")
    with pytest.raises(KibbleError, match=f"row {row} .* has split=pool but label"):
        loop.run(compose_config("loop", overrides(ws, effnet_weights), output_dir=tmp_path / "o2"))
    with pytest.raises(KibbleError, match="mode='activ'"):
        loop.run(compose_config("loop", [f"workspace={ws}", "mode=activ"], output_dir=tmp_path / "o3"))


def test_a_cold_start_from_zero_labels_picks_the_first_batch_with_typiclust(digits_workspace: Path, digits_feature_cache: Path,
                                                                           effnet_weights: Path, tmp_path: Path):
    ws = seed_set_workspace(digits_workspace, digits_feature_cache, tmp_path, labels_per_class=0)
    manifest = pd.read_parquet(ws / "manifest.parquet")
    assert not ((manifest["split"] == "train") & manifest["label"].notna()).any()
    with pytest.raises(KibbleError, match="no labelled train rows, so round 0 has no model and strategy 'margin' needs one; use a cold-start"):
        loop.run(compose_config("loop", overrides(ws, effnet_weights, "active.strategy=margin"), output_dir=tmp_path / "o1"))
    cfg = compose_config("loop", overrides(ws, effnet_weights, "active.strategy=[typiclust,margin]", "active.cold_start=probcover",
                                           "+active.params.probcover.delta=0.6", "active.batch_size=[10,5]", "active.seeds=[0]",
                                           "trainer.max_epochs=10"),
                         output_dir=tmp_path / "out")
    curves = pd.read_csv(loop.run(cfg)["curves"]).set_index(["strategy", "round"])
    assert curves["n_labels"].tolist() == [0, 10, 15] * 3  # a per-round schedule: 10 new labels, then 5
    assert curves.xs(0, level="round")["test_accuracy"].isna().all()  # no model, no accuracy
    first = {arm: pd.read_csv(ws / "active" / arm / "seed0" / "rounds" / "000" / "queue.csv") for arm in ("typiclust", "margin", "random")}
    assert (first["typiclust"]["strategy"] == "typiclust").all() and (first["margin"]["strategy"] == "probcover").all()
    assert first["typiclust"]["suggested_label"].isna().all()  # no model: no pre-annotation
    truth = manifest.set_index("sample_id")["true_label"]
    digits = {arm: truth.loc[q["sample_id"].astype(str)].nunique() for arm, q in first.items()}
    assert digits["typiclust"] >= 8 and digits["margin"] >= 8, digits  # ten typical / covering images: (nearly) every digit
    second = pd.read_csv(ws / "active" / "margin" / "seed0" / "rounds" / "001" / "queue.csv")
    assert (second["strategy"] == "margin").all() and second["suggested_label"].notna().all()
    assert curves.loc[("typiclust", 2), "test_accuracy"] > 0.35  # 15 labels, chance is 0.1


def test_atl_uncertainty_learns_from_the_inner_validation_split(digits_workspace: Path, digits_feature_cache: Path, effnet_weights: Path,
                                                               tmp_path: Path, caplog: pytest.LogCaptureFixture):
    ws = seed_set_workspace(digits_workspace, digits_feature_cache, tmp_path, labels_per_class=5)
    base = overrides(ws, effnet_weights, "active.strategy=atl_uncertainty", "active.rounds=1", "active.batch_size=10", "active.seeds=[0]",
                     "trainer.max_epochs=5")
    with pytest.raises(KibbleError, match=r"set data.inner_val_fraction \(e.g. 0.2\)"):
        loop.run(compose_config("loop", base, output_dir=tmp_path / "o1"))
    with caplog.at_level(logging.WARNING, logger="kibble.strategies.transfer"):
        result = loop.run(compose_config("loop", [*base, "data.inner_val_fraction=0.4", "+active.params.atl_uncertainty.min_incorrect=2"],
                                         output_dir=tmp_path / "out"))
    assert "instead" not in caplog.text  # 20 held-out images, some wrong: the classifier was fit, no fallback
    queue = pd.read_csv(ws / "active" / "atl_uncertainty" / "seed0" / "rounds" / "000" / "queue.csv")
    assert len(queue) == 10 and (queue["strategy"] == "atl_uncertainty").all() and queue["suggested_label"].notna().all()
    assert pd.read_csv(result["curves"])["n_labels"].tolist() == [50, 60, 50, 60]


def test_stop_min_gain_stops_each_run_once_the_expected_gain_is_below_it(digits_workspace: Path, digits_feature_cache: Path,
                                                                        effnet_weights: Path, tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture):
    ws = seed_set_workspace(digits_workspace, digits_feature_cache, tmp_path)
    base = overrides(ws, effnet_weights, "active.strategy=margin", "active.rounds=3", "active.batch_size=10", "active.seeds=[0]",
                     "trainer.max_epochs=3")
    with pytest.raises(KibbleError, match="stop.window=4 needs 5 measured rounds but active.rounds=3"):
        loop.run(compose_config("loop", [*base, "stop.min_gain=0.5", "stop.window=4"], output_dir=tmp_path / "o1"))
    with pytest.raises(KibbleError, match="stop.min_gain=0.5 stops mode=active loops"):
        loop.run(compose_config("loop", [f"workspace={ws}", "stop.min_gain=0.5"], output_dir=tmp_path / "o2"))
    # a threshold no 10-label round can reach (10,000 points per 100 labels): every run stops after its first gain
    with caplog.at_level(logging.INFO, logger="kibble.tasks.active_loop"):
        result = loop.run(compose_config("loop", [*base, "stop.min_gain=10000", "stop.window=1"], output_dir=tmp_path / "out"))
    curves = pd.read_csv(result["curves"])
    assert curves[["strategy", "round", "n_labels"]].values.tolist() == [["margin", 0, 20], ["margin", 1, 30], ["random", 0, 20], ["random", 1, 30]]
    stopped = curves[curves["round"] == 1]
    assert stopped["stop_reason"].str.startswith("stopped after round 1 (30 labels): expected gain ").all()
    assert stopped["stop_reason"].str.contains("even the upper end is below stop.min_gain=10000").all()
    assert (stopped["gain_low"] <= stopped["gain_per_100_labels"]).all() and (stopped["gain_per_100_labels"] <= stopped["gain_high"]).all()
    assert (stopped["expected_gain"] == stopped["gain_per_100_labels"]).all()  # window 1: the last gain
    assert curves.loc[curves["round"] == 0, "gain_per_100_labels"].isna().all()
    assert [s["strategy"] for s in result["stops"]] == ["margin", "random"]
    assert sum("stopped after round 1" in r.getMessage() for r in caplog.records) == 2
    arm = ws / "active" / "margin" / "seed0" / "rounds"
    assert (arm / "000" / "queue.csv").is_file() and not (arm / "001" / "queue.csv").exists()  # no batch after the stop
    metrics = json.loads((arm / "001" / "metrics.json").read_text())
    assert metrics["stop_reason"].startswith("stopped after round 1") and "expected_gain_high" in metrics
    gains = pd.read_csv(ws / "active" / "gains.csv").set_index(["strategy", "round"])
    assert gains.loc[("margin", 1), "gain_per_100_labels"] == pytest.approx(stopped.set_index("strategy").loc["margin", "gain_per_100_labels"])
    html = (ws / "active" / "report.html").read_text()
    assert "margin gain / 100 labels" in html and "margin band" in html and "2 of 2 runs stopped early" in html


def test_a_switch_arm_picks_with_its_first_strategy_then_hands_over(digits_workspace: Path, digits_feature_cache: Path,
                                                                     effnet_weights: Path, tmp_path: Path):
    """typiclust:margin@1.5 from zero labels: typiclust at 0 and 10 labels (1/class), margin from 15 (1.5/class)."""
    ws = seed_set_workspace(digits_workspace, digits_feature_cache, tmp_path, labels_per_class=0)
    cfg = compose_config("loop", overrides(ws, effnet_weights, "active.strategy=[typiclust:margin@1.5]", "active.batch_size=[10,5,5]",
                                           "active.seeds=[0]", "trainer.max_epochs=5"), output_dir=tmp_path / "out")
    curves = pd.read_csv(loop.run(cfg)["curves"])
    assert curves.loc[curves["strategy"] == "typiclust:margin@1.5", "n_labels"].tolist() == [0, 10, 15, 20]
    arm = ws / "active" / "typiclust:margin@1.5" / "seed0" / "rounds"
    picked = [pd.read_csv(arm / f"{r:03d}" / "queue.csv")["strategy"].unique().tolist() for r in range(3)]
    assert picked == [["typiclust"], ["typiclust"], ["margin"]]
