"""The rankings a label-cleaning benchmark compares, each family at its full repertoire, on one OOF.

kibble's arms are exactly what a user can configure (a strategy, a `combine` with weights, or a
quota mix of strategies as `conf/strategy/*.yaml` ships them), so the default chosen on dev settings
is written back as config and the test run scores the queue users get. cleanlab's arms are
everything it offers on the same predictions: `get_label_quality_scores` with each method (with and
without `adjust_pred_probs`), `find_label_issues` with each `filter_by` (flagged rows first, ranked by
self-confidence or normalised margin), and Datalab's label issues from the OOF or from the embeddings
alone (its kNN-derived probabilities). Every arm returns a StrategyOutput: higher score = more
suspicious; `flagged` rows come first, as a queue would take them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from kibble.strategies.base import StrategyOutput

KIBBLE, CLEANLAB, RANDOM = "kibble", "cleanlab", "random"

FILTER_BY = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given",
             "low_normalized_margin", "low_self_confidence")
QUALITY_METHODS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")


@dataclass(frozen=True)
class Arm:
    """One ranking: its family, and for kibble arms the queue config that reproduces it."""

    name: str
    family: str
    run: Callable[["Inputs"], StrategyOutput]
    config: dict[str, Any] = field(default_factory=dict)  # strategies / quotas / params of conf/strategy


@dataclass
class Inputs:
    """One OOF: given labels (N,), probabilities (N, K), embeddings (N, D); computed parts are cached."""

    labels: np.ndarray
    probs: np.ndarray
    embeddings: np.ndarray
    seed: int = 0
    cache: dict[str, StrategyOutput] = field(default_factory=dict)

    def strategy(self, name: str, **params) -> StrategyOutput:
        from kibble.strategies.registry import run_strategy

        key = f"{name}{sorted(params.items())}"
        if key not in self.cache:
            self.cache[key] = run_strategy(name, self.labels, self.probs, self.embeddings, **params)
        return self.cache[key]


# ---------------------------------------------------------------- kibble


def _single(name: str, **params) -> Arm:
    cfg = {"strategies": [name], "quotas": None, "params": {name: params} if params else {}}
    return Arm(name, KIBBLE, lambda x: x.strategy(name, **params), cfg)


def _combined(parts: list[str], weights: list[float]) -> Arm:
    from kibble.strategies.cleaning import combine

    label = "+".join(f"{w:g}*{p}" if w != 1 else p for p, w in zip(parts, weights))
    cfg = {"strategies": ["combine"], "quotas": None, "params": {"combine": {"parts": parts, "weights": weights}}}
    return Arm(f"combine({label})", KIBBLE, lambda x: combine([x.strategy(p) for p in parts], weights), cfg)


def queue_ranking(outputs: dict[str, StrategyOutput], quotas: dict[str, float] | None = None) -> StrategyOutput:
    """A quota mix ranked the way build_queue orders it: the full queue (budget = every flagged row) gives
    each row its position; rows no strategy flags are left out (never queued)."""
    from kibble.queue.builder import build_queue

    n = len(next(iter(outputs.values())).score)
    ids = [f"{i:09d}" for i in range(n)]
    names = [str(i) for i in range(int(max(o.suggested.max(initial=0) for o in outputs.values())) + 1)]
    flagged = np.logical_or.reduce([o.flagged for o in outputs.values()])
    queue = build_queue(ids, ["0"] * n, outputs, names, int(flagged.sum()), quotas=quotas)
    score = np.zeros(n)
    rows = queue["sample_id"].astype(int).to_numpy()
    score[rows] = len(rows) - np.arange(len(rows))  # first in the queue = highest score
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    return StrategyOutput(score=score, suggested=np.zeros(n, dtype=np.int64), flagged=mask)


def _quota_mix(name: str, strategies: list[str]) -> Arm:
    cfg = {"strategies": strategies, "quotas": None, "params": {}}
    return Arm(name, KIBBLE, lambda x: queue_ranking({s: x.strategy(s) for s in strategies}), cfg)


def kibble_arms() -> list[Arm]:
    """Every queue a kibble user can configure from the shipped strategies (precision in its cheap
    renormalise mode: the train mode trains a model per low-precision class)."""
    singles = [_single(n) for n in ("kfold", "self_confidence", "normalized_margin", "confident_learning", "neighbors", "entropy", "precision")]
    combines = [_combined(parts, w) for parts in (["normalized_margin", "neighbors"], ["self_confidence", "neighbors"])
                for w in ([1.0, 1.0], [2.0, 1.0], [3.0, 1.0])]
    mixes = [_quota_mix("queue mix kfold+self_confidence (shipped default before the protocol)", ["kfold", "self_confidence"]),
             _quota_mix("queue mix strategy=all", ["kfold", "self_confidence", "normalized_margin", "entropy", "precision", "confident_learning"])]
    return [*singles, *combines, *mixes]


# ---------------------------------------------------------------- cleanlab


def _quality(method: str, adjust: bool) -> Arm:
    def run(x: Inputs) -> StrategyOutput:
        from cleanlab.rank import get_label_quality_scores

        q = get_label_quality_scores(x.labels, x.probs, method=method, adjust_pred_probs=adjust)
        return StrategyOutput(1.0 - q, x.probs.argmax(1), np.ones(len(q), dtype=bool))

    return Arm(f"cleanlab get_label_quality_scores({method}{', adjust_pred_probs' if adjust else ''})", CLEANLAB, run)


def _filter(filter_by: str, rank_by: str) -> Arm:
    def run(x: Inputs) -> StrategyOutput:
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores

        mask = np.asarray(find_label_issues(x.labels, x.probs, filter_by=filter_by), dtype=bool)
        q = get_label_quality_scores(x.labels, x.probs, method=rank_by)
        return StrategyOutput(1.0 - q, x.probs.argmax(1), mask)

    return Arm(f"cleanlab find_label_issues(filter_by={filter_by}), ranked by {rank_by}", CLEANLAB, run)


def _datalab(use_probs: bool) -> Arm:
    def run(x: Inputs) -> StrategyOutput:
        from cleanlab import Datalab

        lab = Datalab(data={"label": x.labels}, label_name="label", verbosity=0)
        kwargs = {"pred_probs": x.probs} if use_probs else {"features": np.asarray(x.embeddings, dtype=np.float32)}
        lab.find_issues(issue_types={"label": {}}, **kwargs)
        issues = lab.get_issues("label")
        return StrategyOutput(1.0 - issues["label_score"].to_numpy(), x.probs.argmax(1), issues["is_label_issue"].to_numpy(bool))

    what = "OOF pred_probs" if use_probs else "embeddings only (kNN pred_probs)"
    return Arm(f"cleanlab Datalab label issues ({what})", CLEANLAB, run)


def cleanlab_arms() -> list[Arm]:
    return [*(_quality(m, a) for m in QUALITY_METHODS for a in (False, True) if not (a and m == "confidence_weighted_entropy")),  # unsupported there
            *(_filter(f, r) for f in FILTER_BY for r in ("self_confidence", "normalized_margin")),
            _datalab(True), _datalab(False)]


def random_arm() -> Arm:
    def run(x: Inputs) -> StrategyOutput:
        n = len(x.labels)
        return StrategyOutput(np.random.default_rng(x.seed).random(n), x.probs.argmax(1), np.ones(n, dtype=bool))

    return Arm("random", RANDOM, run)


def all_arms() -> list[Arm]:
    return [*kibble_arms(), *cleanlab_arms(), random_arm()]


def score_arms(arms: list[Arm], inputs: Inputs, is_noisy: np.ndarray) -> list[dict[str, Any]]:
    """Detection metrics of every arm on one OOF; budget = the number of wrong labels."""
    from kibble.metrics.detection import detection_metrics

    rows = []
    for arm in arms:
        out = arm.run(inputs)
        m = detection_metrics(is_noisy, np.asarray(out.score, dtype=np.float64), budget=int(is_noisy.sum()), flagged=out.flagged)
        rows.append({"ranking": arm.name, "family": arm.family, "AUPRC": m["auprc"], "precision@budget": m["precision_at_budget"],
                     "recall@budget": m["recall_at_budget"], "AUROC": m["auroc"], "n_queued": m["n_queued"]})
    return rows
