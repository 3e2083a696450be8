"""Gold questions: the pool (expert events, a gold list), mixing at a rate, hidden from the annotator, bad lists."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kibble import KibbleError
from kibble.queue.builder import queue_id
from kibble.annotation.gold import GOLD_COLUMNS, gold_pool, load_gold, mix_gold, n_gold_items, normalise_gold, read_gold_list
from kibble.labels.history import make_events

CLASSES = ["cat", "dog", "fox"]


@pytest.fixture
def manifest() -> pd.DataFrame:
    ids = [f"s{i:03d}" for i in range(200)]
    return pd.DataFrame({"sample_id": ids, "path": [f"img/{s}.jpg" for s in ids], "label": [CLASSES[i % 3] for i in range(200)], "split": "train"})


def make_queue(manifest: pd.DataFrame, n: int = 90) -> pd.DataFrame:
    rows = manifest.head(n)
    return pd.DataFrame({
        "queue_id": [queue_id(2, s) for s in rows["sample_id"]], "round": 2, "rank": np.arange(1, n + 1), "sample_id": rows["sample_id"],
        "path": rows["path"], "given_label": rows["label"], "suggested_label": "dog", "score": np.linspace(1, 0.5, n),
        "strategy": "kfold", "reason": "kfold 0.9", "kind": "relabel",
    }).reset_index(drop=True)


def test_pool_from_expert_events_and_list(manifest, tmp_path):
    events = make_events([
        {"sample_id": "s150", "label": "dog", "verdict": "corrected", "source": "expert", "round": 0},
        {"sample_id": "s150", "label": "fox", "verdict": "corrected", "source": "expert", "round": 1},  # latest wins
        {"sample_id": "s151", "label": None, "verdict": "ambiguous", "source": "expert", "round": 0},  # not gold
        {"sample_id": "s152", "label": "cat", "verdict": "confirmed", "source": "review", "round": 0},  # not an expert
    ])
    (tmp_path / "gold.csv").write_text("sample_id,label\ns160,cat\ns161,\n")
    listed = read_gold_list(tmp_path / "gold.csv", manifest, CLASSES)
    assert listed["gold_label"].tolist() == ["cat", manifest.set_index("sample_id").at["s161", "label"]]
    pool = gold_pool(events, listed)
    assert dict(zip(pool["sample_id"], pool["gold_label"])) == {"s150": "fox", "s160": "cat", "s161": listed["gold_label"][1]}
    assert set(pool["origin"]) == {"expert", "list"}


def test_mix_hides_gold_at_the_rate(manifest):
    queue = make_queue(manifest)
    pool = pd.DataFrame({"sample_id": [f"s{i}" for i in range(100, 200)], "gold_label": "cat", "origin": "list"})
    mixed, gold = mix_gold(queue, pool, 0.1, manifest, seed=3)
    assert len(gold) == n_gold_items(0.1, 90) == 10 and len(mixed) == 100
    assert list(mixed.columns) == list(queue.columns) and list(gold.columns) == GOLD_COLUMNS
    assert mixed["rank"].tolist() == list(range(1, 101)) and mixed["queue_id"].is_unique
    is_gold = mixed["sample_id"].isin(set(gold["sample_id"]))
    assert is_gold.sum() == 10 and not is_gold.head(3).all()
    # real rows keep their order; gold rows carry real-looking values
    assert mixed.loc[~is_gold, "sample_id"].tolist() == queue["sample_id"].tolist()
    assert set(mixed.loc[is_gold, "strategy"]) <= set(queue["strategy"]) and mixed.loc[is_gold, "path"].str.startswith("img/").all()
    assert set(gold["queue_id"]) == set(mixed.loc[is_gold, "queue_id"])
    again, _ = mix_gold(queue, pool, 0.1, manifest, seed=3)
    pd.testing.assert_frame_equal(mixed, again)  # reproducible
    assert mix_gold(queue, pool, 0.0, manifest)[0] is queue


def test_gold_bad_inputs(manifest, tmp_path):
    bad = tmp_path / "gold.csv"
    bad.write_text("sample_id,label\ns001,cat\nghost,dog\n")
    with pytest.raises(KibbleError, match=r"gold.csv line 3: unknown sample_id 'ghost'"):
        read_gold_list(bad, manifest, CLASSES)
    bad.write_text("sample_id,label\ns001,wolf\n")
    with pytest.raises(KibbleError, match="unknown class 'wolf'"):
        read_gold_list(bad, manifest, CLASSES)
    bad.write_text("id\ns001\n")
    with pytest.raises(KibbleError, match="no sample_id column"):
        read_gold_list(bad, manifest, CLASSES)
    with pytest.raises(KibbleError, match="not found"):
        read_gold_list(tmp_path / "missing.csv", manifest, CLASSES)
    with pytest.raises(KibbleError, match=r"gold.rate=1.5"):
        normalise_gold({"rate": 1.5})
    with pytest.raises(KibbleError, match="unknown key"):
        normalise_gold({"ratio": 0.1})
    queue = make_queue(manifest)
    pool = pd.DataFrame({"sample_id": queue["sample_id"].head(3), "gold_label": "cat", "origin": "list"})
    with pytest.raises(KibbleError, match="no gold items outside this queue"):
        mix_gold(queue, pool, 0.1, manifest)
    assert load_gold([tmp_path / "no_round"]).empty


def test_gold_rows_do_not_stand_out(manifest):
    """Gold rows take a real relabel row's score/strategy and a suggestion other than their given label."""
    from kibble.annotation.gold import suggestion_look

    queue = make_queue(manifest, n=60)
    queue.loc[40:, "kind"] = "new"  # pool rows: no given label, not templates for gold
    queue.loc[40:, "score"] = 9.0
    pool = pd.DataFrame({"sample_id": [f"s{i}" for i in range(100, 200)], "gold_label": "cat", "origin": "list"})
    ids = manifest["sample_id"].tolist()
    given = dict(zip(manifest["sample_id"], manifest["label"]))
    probs = np.tile([0.7, 0.2, 0.1], (len(ids), 1))  # the model agrees with "cat" samples: it must not suggest "cat" for them
    look = suggestion_look(probs, ids, CLASSES, given, set(pool["sample_id"]))
    assert look["s101"] == {"suggested_label": "cat"} and look["s102"] == {"suggested_label": "dog"}  # s101 is "dog", s102 "cat"
    mixed, gold = mix_gold(queue, pool, 0.1, manifest, seed=0, look=look)
    rows = mixed[mixed["sample_id"].isin(set(gold["sample_id"]))]
    assert len(rows) and (rows["suggested_label"] != rows["given_label"]).all() and (rows["kind"] == "relabel").all()
    assert set(rows["score"]) <= set(queue.loc[:39, "score"])  # a real relabel row's score, never a pool row's
    with pytest.raises(KibbleError, match="probs of shape"):
        suggestion_look(probs[:5], ids, CLASSES, given, {"s100"})
