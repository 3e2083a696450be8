"""`combine` reachable from the queue config: parts, weights, per-part params, embeddings demand, typos."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import synthetic_oof
from kibble import KibbleError
from kibble.data.classes import ClassList
from kibble.paths import Workspace
from kibble.queue.callback import BuildQueue
from kibble.rounds import RoundContext
from kibble.strategies import cleaning
from kibble.strategies.registry import queue_needs_embeddings

CLASSES = ["a", "b", "c"]


def _ctx(tmp_path, n=120):
    oof, manifest, labels, probs, emb = synthetic_oof(np.random.default_rng(0), n, CLASSES)
    ws = Workspace(tmp_path / "ws")
    ws.round_dir(0).mkdir(parents=True)
    return RoundContext(ws, 0, ws.round_dir(0), manifest, ClassList.from_names(CLASSES), oof), labels, probs, emb


def test_combine_from_config_equals_the_library_function(tmp_path):
    ctx, labels, probs, emb = _ctx(tmp_path)
    params = {"combine": {"parts": ["normalized_margin", "neighbors"], "weights": [2, 1]}, "neighbors": {"k": 5}}
    queue = BuildQueue(strategies=["combine"], budget=15, params=params)
    assert queue.needs_embeddings
    outputs = queue.score(ctx)
    expected = cleaning.combine([cleaning.normalized_margin(labels, probs), cleaning.neighbors(labels, emb, k=5)], [2, 1])
    np.testing.assert_allclose(outputs["combine"].score, expected.score)
    result = queue(ctx)
    written = pd.read_csv(ctx.round_dir / "queue.csv")
    top = np.argsort(-expected.score, kind="stable")[:15]
    assert result["queue_size"] == 15 and set(written["sample_id"]) == {f"s{i:03d}" for i in top}
    assert (written["strategy"] == "combine").all()


def test_combine_shares_parts_with_the_other_strategies(tmp_path):
    ctx, labels, probs, _ = _ctx(tmp_path)
    queue = BuildQueue(strategies=["kfold", "combine"], budget=10,
                       params={"combine": {"parts": ["self_confidence", "kfold"]}})
    assert not queue.needs_embeddings
    outputs = queue.score(ctx)
    assert list(outputs) == ["kfold", "combine"]
    expected = cleaning.combine([cleaning.self_confidence(labels, probs), cleaning.kfold(labels, probs)])
    np.testing.assert_allclose(outputs["combine"].score, expected.score)


@pytest.mark.parametrize("params, message", [
    ({}, "two or more"),
    ({"combine": {"parts": ["normalized_margin"]}}, "two or more"),
    ({"combine": {"parts": ["normalized_margin", "neighbours"]}}, "unknown cleaning strategy 'neighbours'"),
    ({"combine": {"parts": ["kfold", "entropy"], "weights": [1]}}, "1 weights for 2 parts"),
    ({"combine": {"parts": ["kfold", "entropy"], "k": 3}}, "unknown params"),
])
def test_combine_config_errors_fail_at_construction(params, message):
    with pytest.raises(KibbleError, match=message):
        BuildQueue(strategies=["combine"], params=params)


def test_queue_needs_embeddings():
    assert queue_needs_embeddings(["neighbors"])
    assert not queue_needs_embeddings(["kfold", "self_confidence"])
    assert queue_needs_embeddings(["combine"], {"combine": {"parts": ["kfold", "neighbors"]}})
