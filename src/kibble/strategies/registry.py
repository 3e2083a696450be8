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
}

# The same strategies on validated input (cleanlab's `_compute_*` pattern): no second check per strategy.
_COMPUTE: dict[str, Callable[..., StrategyOutput]] = {
    "kfold": cleaning.compute_kfold,
    "entropy": cleaning.compute_entropy,
    "self_confidence": cleaning.compute_self_confidence,
    "normalized_margin": cleaning.compute_normalized_margin,
    "confident_learning": cleaning.compute_confident_learning,
    "precision": cleaning.compute_precision_renormalize,
}

# Strategies that read embeddings (N, D) in place of OOF probabilities.
_EMBEDDING_STRATEGIES = frozenset({"neighbors"})


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
