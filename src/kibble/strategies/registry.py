"""Cleaning strategies by name, so configs and the CLI can pick one with a string.

A round validates its OOF once (`validate_inputs`) and runs every strategy on the validated arrays
(`run_strategy(..., validated=True)` calls the strategies' `compute_*` workers, which trust them).
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from kibble import KibbleError
from kibble.strategies import cleaning
from kibble.strategies.base import StrategyOutput, check_cleaning_inputs

CLEANING_STRATEGIES: dict[str, Callable[..., StrategyOutput]] = {
    "kfold": cleaning.kfold,
    "entropy": cleaning.entropy,
    "self_confidence": cleaning.self_confidence,
    "normalized_margin": cleaning.normalized_margin,
    "confident_learning": cleaning.confident_learning,
    "precision": cleaning.precision_renormalize,
    "neighbors": cleaning.neighbors,
    "random": cleaning.random,  # the baseline of `kibble loop baseline=random`
}

# The same strategies on validated input (cleanlab's `_compute_*` pattern): no second check per strategy.
_COMPUTE: dict[str, Callable[..., StrategyOutput]] = {
    "kfold": cleaning.compute_kfold,
    "entropy": cleaning.compute_entropy,
    "self_confidence": cleaning.compute_self_confidence,
    "normalized_margin": cleaning.compute_normalized_margin,
    "confident_learning": cleaning.compute_confident_learning,
    "precision": cleaning.compute_precision_renormalize,
    "random": cleaning.compute_random,
}

# Strategies that read embeddings (N, D) in place of OOF probabilities.
_EMBEDDING_STRATEGIES = frozenset({"neighbors"})

# A queue strategy made of others: `combine` mixes their rank-normalised scores (cleaning.combine),
# configured as params.combine = {parts: [...], weights: [...]}.
COMBINE = "combine"


def lookup(table: Mapping[str, Callable[..., StrategyOutput]], name: str, kind: str) -> Callable[..., StrategyOutput]:
    """table[name]; a typo gets the list of valid names rather than a bare KeyError."""
    try:
        return table[name]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(table))
        raise KibbleError(f"unknown {kind} strategy {name!r}; valid names: {valid}") from None


def get_strategy(name: str) -> Callable[..., StrategyOutput]:
    """Look a cleaning strategy up by name."""
    return lookup(CLEANING_STRATEGIES, name, "cleaning")


def needs_embeddings(name: str) -> bool:
    """True when the strategy needs embeddings rather than OOF probabilities."""
    get_strategy(name)
    return name in _EMBEDDING_STRATEGIES


def validate_inputs(names, labels: np.ndarray, probs: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The round's one validation pass: labels and probs checked (no copy) when any of `names` reads probs.

    Pass the returned arrays to run_strategy(..., validated=True). Names outside the registry are
    ignored (callers may have their own strategies).
    """
    if probs is None or not any(n in _COMPUTE for n in names):
        return np.asarray(labels), probs
    return check_cleaning_inputs(labels, probs)


def run_strategy(name: str, labels: np.ndarray, probs: np.ndarray | None,
                 embeddings: np.ndarray | None = None, *, validated: bool = False, **kwargs) -> StrategyOutput:
    """Run strategy `name`, feeding it embeddings or probs as it needs; kwargs go to the strategy.

    validated=True: labels and probs come from validate_inputs, so a probability strategy skips its check.
    """
    fn = get_strategy(name)
    if validated and probs is not None and name in _COMPUTE:
        fn = _COMPUTE[name]
    if needs_embeddings(name):
        if embeddings is None:
            raise KibbleError(f"strategy {name!r} needs embeddings (N, D); none were given "
                              "(extract features first, or pick a probability-based strategy)")
        return fn(labels, embeddings, **kwargs)
    if probs is None:
        raise KibbleError(f"strategy {name!r} needs out-of-fold probabilities (N, K); none were given")
    return fn(labels, probs, **kwargs)


def combine_spec(params: Mapping | None) -> tuple[list[str], list[float] | None]:
    """(parts, weights) of a `combine` strategy's params; a typo or a missing part fails with one line."""
    params = dict(params or {})
    unknown = set(params) - {"parts", "weights"}
    if unknown:
        raise KibbleError(f"strategy combine: unknown params {sorted(unknown)}; it takes parts and weights "
                          "(per-part settings go under params.<part>)")
    parts = [str(p) for p in (params.get("parts") or [])]
    if len(parts) < 2 or COMBINE in parts or len(set(parts)) != len(parts):
        raise KibbleError("strategy combine needs params.combine.parts: two or more distinct strategies, "
                          "e.g. {combine: {parts: [normalized_margin, neighbors], weights: [2, 1]}}")
    for part in parts:
        get_strategy(part)
    weights = params.get("weights")
    if weights is not None:
        weights = [float(w) for w in weights]
        if len(weights) != len(parts):
            raise KibbleError(f"strategy combine: {len(weights)} weights for {len(parts)} parts {parts}")
    return parts, weights


def queue_needs_embeddings(names, params: Mapping | None = None) -> bool:
    """True when any of the queue's strategies (a combine's parts included) reads embeddings."""
    params = params or {}
    for name in names:
        parts = combine_spec(params.get(COMBINE))[0] if name == COMBINE else [name]
        if any(needs_embeddings(p) for p in parts):
            return True
    return False


def run_combined(params: Mapping | None, labels: np.ndarray, probs: np.ndarray | None, embeddings: np.ndarray | None,
                 part_params: Mapping | None = None, done: Mapping[str, StrategyOutput] | None = None,
                 validated: bool = False) -> StrategyOutput:
    """The `combine` strategy: each part run (or taken from `done`), then cleaning.combine with the weights."""
    parts, weights = combine_spec(params)
    part_params = part_params or {}
    done = done or {}
    outputs = [done[p] if p in done else run_strategy(p, labels, probs, embeddings, validated=validated, **dict(part_params.get(p) or {}))
               for p in parts]
    return cleaning.combine(outputs, weights)
