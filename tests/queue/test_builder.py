"""Queue building (DESIGN §4): budget, quotas, one row per sample, suppression of settled reviews, order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kibble import KibbleError
from kibble.data.classes import ClassList
from kibble.paths import Workspace
from kibble.queue.builder import QUEUE_COLUMNS, allocate_quotas, build_queue, resolve_budget, settled_samples
from kibble.queue.callback import BuildQueue
from kibble.labels.history import append_events, initial_events, make_events
from kibble.rounds import RoundContext
from kibble.strategies.base import StrategyOutput

CLASSES = ["cat", "dog", "fox"]


def output(score, flagged=None, suggested=None) -> StrategyOutput:
    score = np.asarray(score, dtype=np.float64)
    flagged = np.ones(len(score), bool) if flagged is None else np.asarray(flagged, bool)
    suggested = np.full(len(score), 1, np.int64) if suggested is None else np.asarray(suggested, np.int64)
    return StrategyOutput(score=score, suggested=suggested, flagged=flagged)


def ids(n: int) -> list[str]:
    return [f"s{i:03d}" for i in range(n)]


def disjoint(n: int = 40) -> dict[str, StrategyOutput]:
    """`a` flags the even rows, `b` the odd rows; scores fall with the row index."""
    score = np.linspace(1.0, 0.0, n)
    even = np.arange(n) % 2 == 0
    return {"a": output(score, even), "b": output(score, ~even)}


# ---------------------------------------------------------------- budget


def test_resolve_budget_count_and_fraction():
    assert resolve_budget(50, 1437) == 50
    assert resolve_budget(0.1, 1437) == 144
    assert resolve_budget(0.5, 10) == 5
    assert resolve_budget(0, 10) == 0
    for bad in (-1, -0.2, None, True):
        with pytest.raises(KibbleError, match="budget"):
            resolve_budget(bad, 100)


def test_budget_caps_the_queue_and_ranks_by_score():
    n = 30
    rng = np.random.default_rng(0)
    score = rng.random(n)
    queue = build_queue(ids(n), ["cat"] * n, {"kfold": output(score)}, CLASSES, budget=7, round_index=3)
    assert list(queue.columns) == QUEUE_COLUMNS
    assert len(queue) == 7 and queue["rank"].tolist() == list(range(1, 8))
    expected = [ids(n)[i] for i in np.argsort(-score)[:7]]
    assert queue["sample_id"].tolist() == expected
    assert (queue["round"] == 3).all() and queue["queue_id"].is_unique
    assert queue["suggested_label"].eq("dog").all() and queue["kind"].eq("relabel").all()
    # only flagged rows are queued: a budget larger than the flagged set gives a shorter queue
    flagged = np.zeros(n, bool)
    flagged[[4, 9]] = True
    short = build_queue(ids(n), ["cat"] * n, {"kfold": output(score, flagged)}, CLASSES, budget=7)
    assert sorted(short["sample_id"]) == ["s004", "s009"]
    assert len(build_queue(ids(n), ["cat"] * n, {"kfold": output(score)}, CLASSES, budget=0)) == 0


def test_budget_fraction_through_the_round_callback(tmp_path):
    n = 200
    ws = Workspace(tmp_path / "ws")
    round_dir = ws.round_dir(0)
    round_dir.mkdir(parents=True)
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), size=n).astype(np.float32)
    labels = [CLASSES[i] for i in rng.integers(0, 3, n)]
    oof = pd.DataFrame({"sample_id": ids(n), "fold": np.arange(n) % 5, "given_label": labels, "probs": list(probs)})
    manifest = pd.DataFrame({"sample_id": ids(n), "path": [f"img/{s}.png" for s in ids(n)], "label": labels, "split": "train"})
    ctx = RoundContext(ws, 0, round_dir, manifest, ClassList.from_names(CLASSES), oof)
    result = BuildQueue(strategies=["self_confidence", "entropy"], budget=0.1)(ctx)
    queue = pd.read_csv(round_dir / "queue.csv", dtype={"sample_id": str})
    assert result["queue_budget"] == 20 and result["queue_size"] == len(queue) == 20
    assert queue["sample_id"].is_unique and set(queue["path"]) <= set(manifest["path"])
    assert (round_dir / "queue.labelstudio.json").is_file() and (round_dir / "scores.parquet").is_file()


# ---------------------------------------------------------------- quotas


def test_quotas_split_the_budget():
    assert allocate_quotas(["a", "b"], 10, {"a": 0.7, "b": 0.3}) == {"a": 7, "b": 3}
    assert allocate_quotas(["a", "b", "c"], 10, None) == {"a": 4, "b": 3, "c": 3}
    assert sum(allocate_quotas(["a", "b", "c"], 11, {"a": 1, "b": 1, "c": 1}).values()) == 11
    queue = build_queue(ids(40), ["cat"] * 40, disjoint(), CLASSES, budget=10, quotas={"a": 0.7, "b": 0.3})
    assert queue["strategy"].value_counts().to_dict() == {"a": 7, "b": 3}
    # each strategy contributes its own best flagged rows
    assert sorted(queue.loc[queue["strategy"] == "a", "sample_id"]) == [f"s{i:03d}" for i in range(0, 14, 2)]
    assert sorted(queue.loc[queue["strategy"] == "b", "sample_id"]) == ["s001", "s003", "s005"]


def test_leftover_budget_goes_to_the_other_strategies():
    n = 40
    outputs = disjoint(n)
    few = np.zeros(n, bool)
    few[[0, 2]] = True
    outputs["a"] = output(outputs["a"].score, few)  # `a` has only 2 candidates for its 5 places
    queue = build_queue(ids(n), ["cat"] * n, outputs, CLASSES, budget=10, quotas={"a": 0.5, "b": 0.5})
    assert len(queue) == 10
    assert queue["strategy"].value_counts().to_dict() == {"b": 8, "a": 2}


def test_unknown_strategy_in_quotas_is_an_error():
    with pytest.raises(KibbleError, match="nope"):
        build_queue(ids(40), ["cat"] * 40, disjoint(), CLASSES, budget=10, quotas={"a": 0.5, "nope": 0.5})
    with pytest.raises(KibbleError, match="positive"):
        allocate_quotas(["a", "b"], 10, {"a": 0, "b": 0})
    with pytest.raises(KibbleError, match="no strategies"):
        allocate_quotas([], 10, None)


# ---------------------------------------------------------------- one row per sample


def test_one_row_per_sample_with_joined_reasons():
    n = 20
    score = np.linspace(1.0, 0.0, n)
    outputs = {"kfold": output(score, suggested=np.full(n, 2)), "entropy": output(score * 2, suggested=np.full(n, -1))}
    queue = build_queue(ids(n), ["cat"] * n, outputs, CLASSES, budget=6)
    assert len(queue) == 6 and queue["sample_id"].is_unique
    assert sorted(queue["sample_id"]) == ids(6)  # both strategies agree on the top six
    for reason in queue["reason"]:
        assert "kfold" in reason and "entropy" in reason, reason
    # the suggestion comes from a strategy that has one
    assert queue["suggested_label"].eq("fox").all()
    top = queue.iloc[0]
    assert top["sample_id"] == "s000" and top["reason"].startswith(top["strategy"])


# ---------------------------------------------------------------- suppression of settled reviews


def review(sample_id, label, previous, verdict="confirmed", round_index=0, source="review"):
    return {"sample_id": sample_id, "label": label, "previous_label": previous, "verdict": verdict, "source": source, "annotator": "ann", "round": round_index}


def test_settled_samples():
    manifest = pd.DataFrame({"sample_id": ["s0", "s1", "s2", "s3", "s4"], "label": ["cat", "dog", "fox", "cat", "cat"]})
    events = pd.concat(
        [
            initial_events(manifest),
            make_events(
                [
                    review("s0", "cat", "cat"),                          # confirmed, unchanged -> settled
                    review("s1", "dog", "cat", "corrected"),             # corrected to the current label -> settled
                    review("s2", "cat", "cat"),                          # confirmed cat, label changed since to fox -> not settled
                    review("s3", None, "cat", "skipped"),                # skipped is no answer -> not settled
                    review("s4", None, "cat", "ambiguous", source="expert"),  # ambiguous: a human looked -> settled
                ]
            ),
        ],
        ignore_index=True,
    )
    assert settled_samples(events, manifest) == {"s0", "s1", "s4"}
    assert settled_samples(initial_events(manifest), manifest) == set()  # import events are not reviews


def test_reviewed_samples_are_suppressed_unless_their_label_changed(tmp_path):
    n = 10
    ws = Workspace(tmp_path / "ws")
    round_dir = ws.round_dir(1)
    round_dir.mkdir(parents=True)
    labels = ["cat"] * n
    labels[1] = "dog"  # s001 was relabelled dog after its review confirmed cat
    manifest = pd.DataFrame({"sample_id": ids(n), "path": [f"{s}.png" for s in ids(n)], "label": labels, "split": "train"})
    append_events(ws.label_events, initial_events(manifest.assign(label="cat")))
    append_events(ws.label_events, make_events([review("s000", "cat", "cat"), review("s001", "cat", "cat")]))
    # every sample predicted `fox` with falling confidence: s000 and s001 are the top two by score
    probs = np.zeros((n, 3), np.float32)
    probs[:, 2] = np.linspace(0.95, 0.5, n)
    probs[:, 0] = 1 - probs[:, 2]
    oof = pd.DataFrame({"sample_id": ids(n), "fold": 0, "given_label": labels, "probs": list(probs)})
    ctx = RoundContext(ws, 1, round_dir, manifest, ClassList.from_names(CLASSES), oof)

    result = BuildQueue(strategies=["kfold"], budget=3)(ctx)
    queue = pd.read_csv(round_dir / "queue.csv", dtype={"sample_id": str})
    assert "s000" not in set(queue["sample_id"])  # reviewed, label unchanged: suppressed
    assert queue["sample_id"].tolist()[0] == "s001"  # reviewed, label changed since: queued again
    assert len(queue) == 3 and result["queue_suppressed"] == 1

    BuildQueue(strategies=["kfold"], budget=3, suppress_reviewed=False)(ctx)
    unsuppressed = pd.read_csv(round_dir / "queue.csv", dtype={"sample_id": str})
    assert unsuppressed["sample_id"].tolist()[:2] == ["s000", "s001"]


# ---------------------------------------------------------------- determinism


def test_same_inputs_give_the_same_queue():
    n = 60
    rng = np.random.default_rng(7)
    score_a = np.round(rng.random(n), 1)  # many ties
    score_b = np.round(rng.random(n), 1)
    flagged = rng.random(n) < 0.7
    outputs = {"a": output(score_a, flagged, rng.integers(0, 3, n)), "b": output(score_b, None, rng.integers(-1, 3, n))}
    labels = [CLASSES[i] for i in rng.integers(0, 3, n)]
    args = dict(class_names=CLASSES, budget=15, round_index=2, quotas={"a": 0.6, "b": 0.4}, suppress={"s003", "s010"})
    first = build_queue(ids(n), labels, outputs, **args)
    second = build_queue(ids(n), labels, outputs, **args)
    pd.testing.assert_frame_equal(first, second)
    assert len(first) == 15 and not {"s003", "s010"} & set(first["sample_id"])

    # the order does not depend on the input row order either (ties are broken by sample_id)
    perm = rng.permutation(n)
    shuffled = {k: output(v.score[perm], v.flagged[perm], v.suggested[perm]) for k, v in outputs.items()}
    third = build_queue([ids(n)[i] for i in perm], [labels[i] for i in perm], shuffled, **args)
    pd.testing.assert_frame_equal(first, third)


def test_queue_rows_built_column_wise_match_the_per_row_rule():
    """Each queued row: score and strategy of its first claimant, the first suggestion any claimant makes (in
    claim order), one reason per claimant: the rule the column-wise `_queue_rows` must keep (10^5-item queues)."""
    import numpy as np

    from kibble.queue.builder import build_queue
    from kibble.strategies.base import StrategyOutput

    rng = np.random.default_rng(0)
    for _ in range(100):
        n, classes = int(rng.integers(1, 40)), ["c0", "c1", "c2"]
        names = [f"s{i}" for i in range(int(rng.integers(1, 4)))]
        outputs = {nm: StrategyOutput(score=rng.random(n).round(2), flagged=rng.random(n) < 0.6, suggested=rng.integers(-1, 3, n))
                   for nm in names}
        ids = [f"id{j:03d}" for j in rng.permutation(n)]
        queue = build_queue(ids, ["c0"] * n, outputs, classes, int(rng.integers(0, n + 2)), paths=[f"p/{i}" for i in ids])
        for rec in queue.to_dict("records"):
            row = ids.index(rec["sample_id"])
            claimants = [part.split(" ")[0] for part in rec["reason"].split("; ")]
            assert rec["strategy"] == claimants[0] and rec["path"] == f"p/{rec['sample_id']}"
            assert rec["score"] == outputs[claimants[0]].score[row]
            assert rec["reason"] == "; ".join(f"{c} {outputs[c].score[row]:.3f}" for c in claimants)
            first = next((int(outputs[c].suggested[row]) for c in claimants if outputs[c].suggested[row] >= 0), -1)
            assert (None if pd.isna(rec["suggested_label"]) else rec["suggested_label"]) == (classes[first] if first >= 0 else None)


def _reference_picks(outputs, ids, budget, quotas):
    """The selection rule written as the plain loop: quotas first (each strategy's best rows not taken before
    it), then the strategies in turn, one row each, until the budget is full. {sample_id: first strategy}."""
    from kibble.queue.builder import allocate_quotas

    names = list(outputs)
    orders = {n: sorted((i for i in range(len(ids)) if outputs[n].flagged[i]), key=lambda i: (-outputs[n].score[i], ids[i])) for n in names}
    quota, taken, cursor = allocate_quotas(names, budget, quotas), {}, {n: 0 for n in names}

    def take(name):
        while cursor[name] < len(orders[name]):
            row = orders[name][cursor[name]]
            cursor[name] += 1
            if row not in taken:
                taken[row] = name
                return True
        return False

    for name in names:
        for _ in range(quota[name]):
            if not take(name):
                break
    while len(taken) < budget and any(take(n) for n in names if len(taken) < budget):
        pass
    return {ids[row]: name for row, name in taken.items()}


def test_queue_selection_matches_the_plain_loop():
    import numpy as np

    from kibble.strategies.base import StrategyOutput

    rng = np.random.default_rng(5)
    for _ in range(150):
        n = int(rng.integers(1, 50))
        names = [f"s{i}" for i in range(int(rng.integers(1, 4)))]
        outputs = {nm: StrategyOutput(score=rng.random(n).round(2), flagged=rng.random(n) < rng.random(), suggested=rng.integers(-1, 3, n))
                   for nm in names}
        ids = [f"id{j:03d}" for j in rng.permutation(n)]
        budget = int(rng.integers(0, n + 3))
        quotas = None if rng.random() < 0.5 else {nm: float(rng.random()) + 0.01 for nm in names}
        queue = build_queue(ids, ["c0"] * n, outputs, ["c0", "c1", "c2"], budget, quotas=quotas)
        assert dict(zip(queue["sample_id"], queue["strategy"])) == _reference_picks(outputs, ids, budget, quotas)
