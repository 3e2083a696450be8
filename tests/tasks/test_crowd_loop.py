"""Gold questions + a careless vendor: quality flags it, gold-based weighting beats plain majority.

A round is simulated on the digits manifest without a model (`kibble.annotation.crowd.simulate_gold_round`, also behind
scripts/bench_crowd.py): the queue is built directly from the
train rows like a good cleaning queue would (40 % of the imported labels are flipped; the queue holds
the flipped rows plus half as many clean ones), an expert confirms 150 other samples (the gold
pool), 10 % gold is mixed in, three simulated annotators (2 %, 5 %, 40 % error) answer every item
(overlap 3). Plain majority leaves a three-way split (a tie) at the given label, which in a
cleaning queue is usually wrong; the gold-weighted vote follows the annotator gold shows to be best.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import import_workspace
from kibble import KibbleError
from kibble.paths import Workspace
from kibble.annotation.crowd import simulate_gold_round
from kibble.annotation.gold import GOLD_FILE
from kibble.labels.history import load_events
from kibble.labels.policy import resolve_labels

SEED = 1
CROWD = [{"name": "a", "error_rate": 0.02}, {"name": "b", "error_rate": 0.05}, {"name": "c", "error_rate": 0.40}]


@pytest.fixture(scope="module")
def noisy_digits(digits_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    images = Workspace(digits_workspace).data_root.resolve()
    return import_workspace(tmp_path_factory.mktemp("crowd") / "ws", ["inject_noise.rate=0.4", f"source.root={images}"])


def simulate_round(ws_path: Path, weighting: str) -> dict:
    ws = Workspace(ws_path)
    res = simulate_gold_round(ws, CROWD, SEED, policy={"annotator_weighting": weighting})
    after = pd.read_parquet(ws.manifest).set_index("sample_id").loc[res["queue_ids"]]
    return {**res, "errors": int((after["label"] != after["true_label"]).sum())}


@pytest.fixture(scope="module")
def rounds(noisy_digits: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = {}
    for weighting in ("none", "gold"):
        target = tmp_path_factory.mktemp(f"crowd_{weighting}") / "ws"
        shutil.copytree(noisy_digits, target)
        out[weighting] = {**simulate_round(target, weighting), "ws": target}
    return out


def test_careless_annotator_flagged(rounds: dict):
    res = rounds["gold"]
    assert res["summary"]["annotators_flagged"] == ["c"]
    data = json.loads((Workspace(res["ws"]).round_dir(1) / "annotator_quality.json").read_text())
    acc = {row["annotator"]: row for row in data["annotators"]}
    assert acc["a"]["gold_accuracy"] > 0.9 and acc["b"]["gold_accuracy"] > 0.85 and acc["c"]["gold_accuracy"] < 0.75
    assert min(acc["a"]["weight"], acc["b"]["weight"]) > acc["c"]["weight"] > 0
    assert data["agreement"]["method"] == "krippendorff_alpha" and 0.3 < data["agreement"]["value"] < 0.95
    assert all(row["answers_per_hour"] > 0 for row in data["annotators"])


def test_gold_is_hidden_and_sized(rounds: dict):
    res = rounds["gold"]
    mixed, gold = res["mixed"], res["gold"]
    assert len(gold) / len(mixed) == pytest.approx(0.1, abs=0.01)
    ws = Workspace(res["ws"])
    shown = pd.read_csv(ws.round_dir(1) / "queue.csv")
    from kibble.queue.formats import NAME_COLUMNS

    human = set(NAME_COLUMNS.values())  # queue.csv adds the display names humans read beside the id columns
    assert [c for c in shown.columns if c not in human] == list(mixed.columns) and "gold" not in " ".join(shown.columns)
    assert shown["rank"].tolist() == list(range(1, len(shown) + 1))
    positions = np.flatnonzero(shown["sample_id"].astype(str).isin(set(gold["sample_id"])))
    assert positions.min() < len(shown) * 0.2 and positions.max() > len(shown) * 0.8  # spread through the queue
    # gold answers are recorded, tagged, and never vote
    events = load_events(ws.label_events)
    on_gold = events[events["sample_id"].isin(set(gold["sample_id"])) & (events["source"] == "vendor")]
    assert len(on_gold) == 3 * len(gold) and on_gold["note"].str.contains("gold_item").all()


def test_gold_weighting_beats_majority(rounds: dict):
    plain, weighted = rounds["none"]["errors"], rounds["gold"]["errors"]
    assert weighted < plain, f"gold weighting {weighted} errors vs plain majority {plain}"
    # the same history re-resolved: discarding the flagged annotator also helps, and events carry the weights
    events = load_events(Workspace(rounds["gold"]["ws"]).label_events)
    truth = pd.read_parquet(Workspace(rounds["gold"]["ws"]).manifest).set_index("sample_id")["true_label"]
    qids = rounds["gold"]["queue_ids"]
    def errors(weighting):
        res = resolve_labels(events, {"annotator_weighting": weighting}).set_index("sample_id").loc[qids]
        return int((res["label"] != truth.loc[qids]).sum())
    assert errors("gold") == weighted and errors("none") == plain
    # discard_flagged drops c's votes: a and b alone tie wherever they disagree (kept here as the record of why gold weighting is the default advice)
    assert errors("discard_flagged") >= weighted


def crowd_loop_overrides(ws: Path, weights: Path, cache: Path, gold_list: Path) -> list[str]:
    return [
        f"workspace={ws}", "model=features_lite0", f"paths.effnet_lite0={weights}", "embedder.input_size=96", "embedder.num_workers=0",
        f"paths.cache_dir={cache}", "trainer.max_epochs=15", "logger=none", "cv=kfold3", "cv.progress=false", "rounds=1",
        "annotator=crowd", "overlap=3", "gold.rate=0.1", f"gold.list={gold_list}", "strategy.budget=0.2", "policy.annotator_weighting=gold",
    ]


@pytest.mark.slow
def test_loop_with_crowd_and_gold(noisy_digits: Path, effnet_weights: Path, tmp_path_factory: pytest.TempPathFactory):
    """`kibble loop annotator=crowd gold.rate=0.1 overlap=3`: gold hidden in the queue, c flagged, quality in the round."""
    from kibble.config import compose_config
    from kibble.tasks import loop

    root = tmp_path_factory.mktemp("crowd_loop")
    ws_path = root / "ws"
    shutil.copytree(noisy_digits, ws_path)
    manifest = pd.read_parquet(ws_path / "manifest.parquet")
    expert = manifest[manifest["split"] == "train"].sample(300, random_state=0)
    gold_list = root / "gold_list.csv"
    pd.DataFrame({"sample_id": expert["sample_id"], "label": expert["true_label"]}).to_csv(gold_list, index=False)
    overrides = crowd_loop_overrides(ws_path, effnet_weights, tmp_path_factory.getbasetemp() / "kibble_feature_cache", gold_list)
    result = loop.run(compose_config("loop", overrides, output_dir=root / "out"))
    ws = Workspace(ws_path)
    round_dir = ws.round_dir(0)
    queue = pd.read_csv(round_dir / "queue.csv", dtype={"sample_id": str})
    gold = pd.read_csv(round_dir / GOLD_FILE, dtype={"sample_id": str})
    assert len(gold) / len(queue) == pytest.approx(0.1, abs=0.01) and set(gold["sample_id"]) <= set(queue["sample_id"])
    assert set(gold["sample_id"]) <= set(expert["sample_id"]) and (gold["origin"] == "list").all()
    picked = queue[~queue["sample_id"].isin(set(gold["sample_id"]))]  # gold rows do not count against the strategies
    noisy = set(manifest.loc[(manifest["split"] == "train") & (manifest["label"] != manifest["true_label"]), "sample_id"])
    assert result["rounds"][0]["queue_precision"] == pytest.approx(picked["sample_id"].isin(noisy).mean())
    tasks = json.loads((round_dir / "queue.labelstudio.json").read_text())
    assert "gold" not in json.dumps(tasks) and len(tasks) == len(queue)
    assignments = pd.read_csv(round_dir / "assignments.csv")
    assert len(assignments) == 3 * len(queue) and set(assignments["annotator"]) == {"a", "b", "c"}
    reviews = pd.read_csv(round_dir / "reviews.csv")
    assert len(reviews) == 3 * len(queue) and reviews["lead_time"].notna().all()
    quality = json.loads((round_dir / "annotator_quality.json").read_text())
    assert quality["flagged"] == ["c"] and quality["n_gold_items"] == len(gold)
    assert result["rounds"][0]["annotators_flagged"] == "c"
    assert (round_dir / "guideline_feedback.csv").is_file()
    report = (round_dir / "report.html").read_text()
    assert "Annotator quality" in report and "Krippendorff" in report and "Guideline feedback" in report


def test_loop_bad_crowd_inputs_write_nothing(noisy_digits: Path, tmp_path: Path):
    from helpers import run_kibble

    ws_path = tmp_path / "ws"
    shutil.copytree(noisy_digits, ws_path)
    def files():  # Hydra's own log dir (runs/) aside
        return sorted(p.relative_to(ws_path) for p in ws_path.rglob("*") if "runs" not in p.relative_to(ws_path).parts)

    before = files()
    res = run_kibble("loop", f"workspace={ws_path}", "annotator=crowd", "overlap=4", "logger=none", cwd=tmp_path)
    assert res.returncode == 1 and res.stderr.strip().splitlines()[-1].startswith("kibble loop: error: overlap=4 but only 3 annotator(s) (a, b, c)")
    from kibble.config import compose_config
    from kibble.tasks import loop

    bad_list = tmp_path / "gold.csv"
    bad_list.write_text("sample_id,label\nghost.png,3\n")
    cfg = compose_config("loop", [f"workspace={ws_path}", "annotator=crowd", "overlap=3", "gold.rate=0.1", f"gold.list={bad_list}"], output_dir=tmp_path / "o1")
    with pytest.raises(KibbleError, match=r"gold.csv line 2: unknown sample_id 'ghost.png'; a gold item must be a sample of the workspace manifest$"):
        loop.run(cfg)
    with pytest.raises(KibbleError, match="overlap=2 needs several annotators; use annotator=crowd"):
        loop.run(compose_config("loop", [f"workspace={ws_path}", "overlap=2"], output_dir=tmp_path / "o2"))
    assert files() == before
