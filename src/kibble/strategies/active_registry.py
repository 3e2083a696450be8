"""Active-learning strategies by name (same style as registry.py), fed the inputs each one needs."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from kibble import KibbleError
from kibble.strategies import active
from kibble.strategies.base import StrategyOutput
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
}


def get_active_strategy(name: str) -> Callable[..., StrategyOutput]:
    """Look an active-learning strategy up by name."""
    return lookup(ACTIVE_STRATEGIES, name, "active-learning")


def needs(name: str) -> frozenset[str]:
    """Inputs strategy `name` needs beyond probabilities (mc_probs, embeddings, severity, batch_size, seed)."""
    get_active_strategy(name)
    return NEEDS.get(name, frozenset())


def run_active(name: str, probs: np.ndarray | None, *, embeddings: np.ndarray | None = None, mc_probs: np.ndarray | None = None,
               severity: np.ndarray | None = None, batch_size: int | None = None, seed: int = 0, **kwargs: Any) -> StrategyOutput:
    """Run strategy `name` over the pool; kwargs go to the strategy (e.g. uncertainty=margin, beta=1)."""
    fn = get_active_strategy(name)
    want = needs(name)
    if name == "bald":
        if mc_probs is None:
            raise KibbleError("strategy 'bald' needs T >= 2 stochastic passes (MC dropout) over the pool; none were given")
        return fn(mc_probs, **kwargs)
    if probs is None:
        raise KibbleError(f"strategy {name!r} needs the model's pool probabilities (N, K); none were given")
    args: dict[str, Any] = {}
    if "embeddings" in want:
        if embeddings is None:
            raise KibbleError(f"strategy {name!r} needs pool embeddings (N, D); use features mode or cv.save_embeddings=true")
        args["embeddings"] = embeddings
    if "severity" in want:
        if severity is None:
            raise KibbleError(f"strategy {name!r} needs the severity matrix of classes.yaml; none was given")
        args["severity"] = severity
    if "batch_size" in want:
        if batch_size is None:
            raise KibbleError(f"strategy {name!r} picks a batch; give batch_size (the new-label budget)")
        args["batch_size"] = int(batch_size)
    if "seed" in want:
        args["seed"] = int(seed)
    return fn(probs, **args, **kwargs)
