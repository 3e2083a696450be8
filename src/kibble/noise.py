"""Label-noise generators for benchmarks: realistic, instance-dependent flips (pure functions).

`lookalike_flips` models a hurried annotator: a random subset of samples gets the class a model
(trained on clean labels, out of fold) finds most probable among the WRONG ones, i.e. the breed
the image looks most like. Unlike uniform random flips, such errors sit where classes overlap,
so they are much harder to detect.
"""

from __future__ import annotations

import numpy as np

from kibble import KibbleError


def lookalike_flips(labels, probs, rate: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Flip exactly round(rate * N) labels, chosen uniformly at random (seeded), each to its row's
    most probable class other than its true label under `probs` (N, K).

    labels: int (N,) true class indices; probs: (N, K) clean-label out-of-fold probabilities.
    Returns (noisy labels (N,), bool mask of the flipped rows (N,)). Every flipped label differs from
    the truth; ties between wrong classes go to the lower class index.
    """
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    if labels.ndim != 1 or probs.ndim != 2 or len(labels) != len(probs):
        raise KibbleError(f"labels (N,) and probs (N, K) must match; got {labels.shape} and {probs.shape}")
    if probs.shape[1] < 2:
        raise KibbleError("look-alike noise needs at least 2 classes")
    if not np.issubdtype(labels.dtype, np.integer) or (len(labels) and (labels.min() < 0 or labels.max() >= probs.shape[1])):
        raise KibbleError(f"labels must be integer class indices in [0, {probs.shape[1]})")
    if not 0.0 <= float(rate) < 1.0:
        raise KibbleError(f"rate={rate}; use a fraction in [0, 1)")
    n = len(labels)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(n, size=int(round(float(rate) * n)), replace=False)
    masked = probs.copy()
    masked[np.arange(n), labels] = -np.inf
    wrong = masked.argmax(axis=1)
    noisy = labels.astype(np.int64).copy()
    noisy[chosen] = wrong[chosen]
    flipped = np.zeros(n, dtype=bool)
    flipped[chosen] = True
    return noisy, flipped
