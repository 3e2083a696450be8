"""Active-learning strategies by name (same style as registry.py), fed the inputs each one needs."""

from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple

import numpy as np

from kibble import KibbleError
from kibble.strategies import active, cold_start, transfer
from kibble.strategies.base import StrategyOutput
from kibble.strategies.transfer import HeldOut
from kibble.strategies.registry import lookup

ACTIVE_STRATEGIES: dict[str, Callable[..., StrategyOutput]] = {
    "least_confidence": active.least_confidence,
    "margin": active.margin,
    "ratio": active.ratio,
    "entropy": active.entropy,
    "bald": active.bald,
    "kmeans": active.kmeans_diverse,
    "representative": active.representative,
    "outlier": lambda probs, embeddings, **kw: active.representative(probs, embeddings, outlier=True, **kw),
    "hybrid": active.hybrid,
    "expected_cost": active.expected_cost,
    "random": active.random,
    "typiclust": cold_start.typiclust,
    "probcover": cold_start.probcover,
    "atl_uncertainty": transfer.atl_uncertainty,
    "atl_representative": transfer.atl_representative,
}

# What each strategy reads besides the pool probabilities (N, K).
NEEDS: dict[str, frozenset[str]] = {
    "bald": frozenset({"mc_probs"}),
    "kmeans": frozenset({"embeddings", "batch_size", "seed"}),
    "representative": frozenset({"embeddings"}),
    "outlier": frozenset({"embeddings"}),
    "hybrid": frozenset({"embeddings", "batch_size", "seed"}),
    "expected_cost": frozenset({"severity"}),
    "random": frozenset({"seed"}),
    "typiclust": frozenset({"embeddings", "batch_size", "seed", "labelled_embeddings"}),
    "probcover": frozenset({"embeddings", "batch_size", "seed", "labelled_embeddings"}),
    "atl_representative": frozenset({"embeddings", "batch_size", "seed", "labelled_embeddings"}),
    "atl_uncertainty": frozenset({"embeddings", "held_out", "seed"}),  # batch_size too when given (spread=true)
}

# Strategies that can pick a batch before there is any model (probs=None): the first batch of a
# cold start. kmeans and representative then see uniform probabilities (pure clustering / density).
MODEL_FREE = frozenset({"typiclust", "probcover", "atl_representative", "kmeans", "representative", "random"})
_TAKE_NO_PROBS = frozenset({"typiclust", "probcover", "atl_representative"})  # probs=None is their own argument


class Switch(NamedTuple):
    """`first:then@per_class`: `first` picks while the labelled set holds fewer than `per_class` labels per class
    (on average), `then` from there on. Cold-start strategies lead at a handful of labels per class and
    uncertainty sampling beyond (Hacohen et al. 2022, TypiClust's budget regimes); one arm can follow both."""

    first: str
    then: str
    per_class: float


def parse_switch(name: str) -> Switch | None:
    """The switch a name spells (`typiclust:margin@5`), None for a plain strategy name; bad ones: one line."""
    if ":" not in name:
        return None
    match = re.fullmatch(r"([a-z_]+):([a-z_]+)@(\d+(?:\.\d+)?)", name)
    if match is None or float(match.group(3)) <= 0:
        raise KibbleError(f"active strategy {name!r}: a switch is FIRST:THEN@N (N > 0 labels per class), e.g. typiclust:margin@5")
    switch = Switch(match.group(1), match.group(2), float(match.group(3)))
    for member in switch[:2]:
        get_active_strategy(member)
    return switch


def strategy_at(name: str, n_labels: int, n_classes: int) -> str:
    """The strategy that picks the next batch when `n_labels` labels over `n_classes` classes exist (a switch's
    member; a plain name is itself)."""
    switch = parse_switch(name)
    if switch is None:
        return name
    return switch.first if n_labels < switch.per_class * n_classes else switch.then


def get_active_strategy(name: str) -> Callable[..., StrategyOutput]:
    """Look an active-learning strategy up by name (a switch: its members are checked, the first returned)."""
    switch = parse_switch(name)
    return lookup(ACTIVE_STRATEGIES, switch.first if switch else name, "active-learning")


def needs(name: str) -> frozenset[str]:
    """Inputs strategy `name` needs beyond probabilities (mc_probs, embeddings, severity, batch_size, seed,
    labelled_embeddings, held_out); a switch needs what either member needs."""
    switch = parse_switch(name)
    if switch is not None:
        return needs(switch.first) | needs(switch.then)
    get_active_strategy(name)
    return NEEDS.get(name, frozenset())


def model_free(name: str) -> bool:
    """Whether strategy `name` can choose a batch without a model (a cold start from zero labels; a switch: its first)."""
    switch = parse_switch(name)
    get_active_strategy(name)
    return (switch.first if switch else name) in MODEL_FREE


def run_active(name: str, probs: np.ndarray | None, *, embeddings: np.ndarray | None = None, mc_probs: np.ndarray | None = None,
               severity: np.ndarray | None = None, batch_size: int | None = None, seed: int = 0,
               labelled_embeddings: np.ndarray | None = None, held_out: HeldOut | None = None, n_classes: int | None = None,
               **kwargs: Any) -> StrategyOutput:
    """Run strategy `name` over the pool; kwargs go to the strategy (e.g. uncertainty=margin, beta=1).

    probs=None (no model yet) is accepted by MODEL_FREE strategies only. labelled_embeddings: the
    already-labelled rows (typiclust, probcover, atl_representative; None at a cold start). held_out:
    labelled rows the model did not train on, with its predictions (atl_uncertainty). n_classes: the
    number of classes when there are no probs (probcover's purity heuristic)."""
    if parse_switch(name) is not None:
        raise KibbleError(f"active strategy {name!r} is a switch: pick its member for the labels there are with strategy_at() first")
    fn = get_active_strategy(name)
    want = needs(name)
    if name == "bald":
        if mc_probs is None:
            raise KibbleError("strategy 'bald' needs T >= 2 stochastic passes (MC dropout) over the pool; none were given")
        return fn(mc_probs, **kwargs)
    if probs is None and name not in MODEL_FREE:
        raise KibbleError(f"strategy {name!r} needs the model's pool probabilities (N, K); none were given "
                          f"(with no model yet use one of {sorted(MODEL_FREE)})")
    args: dict[str, Any] = {}
    if "embeddings" in want:
        if embeddings is None:
            raise KibbleError(f"strategy {name!r} needs pool embeddings (N, D); use features mode or cv.save_embeddings=true")
        args["embeddings"] = embeddings
    if "severity" in want:
        if severity is None:
            raise KibbleError(f"strategy {name!r} needs the severity matrix of classes.yaml; none was given")
        args["severity"] = severity
    if "batch_size" in want or (name == "atl_uncertainty" and batch_size is not None):
        if batch_size is None:
            raise KibbleError(f"strategy {name!r} picks a batch; give batch_size (the new-label budget)")
        args["batch_size"] = int(batch_size)
    if "seed" in want:
        args["seed"] = int(seed)
    if "labelled_embeddings" in want:
        args["labelled_embeddings"] = labelled_embeddings
    if "held_out" in want:
        if held_out is None:
            raise KibbleError(f"strategy {name!r} needs labelled items the model did not train on, with its predictions "
                              "(a k-fold round's OOF with cv.save_embeddings=true, or data.inner_val_fraction > 0 in `kibble loop mode=active`)")
        args.update(held_embeddings=held_out.embeddings, held_labels=held_out.labels, held_probs=held_out.probs)
    if name == "probcover" and probs is None and n_classes is not None and "delta" not in kwargs:
        kwargs.setdefault("n_clusters", int(n_classes))
    if name in _TAKE_NO_PROBS:
        return fn(probs=probs, **args, **kwargs)
    if probs is not None:
        return fn(probs, **args, **kwargs)
    return _without_model(fn, name, embeddings, args, kwargs, n_classes)


def _without_model(fn: Callable[..., StrategyOutput], name: str, embeddings: np.ndarray | None, args: dict[str, Any],
                   kwargs: dict[str, Any], n_classes: int | None) -> StrategyOutput:
    """kmeans / representative / random before any model: uniform probabilities, no suggested label."""
    if embeddings is None or np.ndim(embeddings) != 2:
        raise KibbleError(f"strategy {name!r} without a model needs the pool embeddings (N, D) to know the pool")
    n = len(embeddings)
    k = max(2, int(n_classes or 2))
    out = fn(np.full((n, k), 1.0 / k), **args, **kwargs)
    return StrategyOutput(score=out.score, suggested=np.full(n, -1, dtype=np.int64), flagged=out.flagged)
