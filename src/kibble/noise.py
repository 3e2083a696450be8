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


def _check_labels(labels, n_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise KibbleError(f"labels must be 1-D; got shape {labels.shape}")
    if n_classes < 2:
        raise KibbleError("label noise needs at least 2 classes")
    if not np.issubdtype(labels.dtype, np.integer) or (len(labels) and (labels.min() < 0 or labels.max() >= n_classes)):
        raise KibbleError(f"labels must be integer class indices in [0, {n_classes})")
    return labels.astype(np.int64)


def _check_rate(rate: float) -> float:
    if not 0.0 <= float(rate) < 1.0:
        raise KibbleError(f"rate={rate}; use a fraction in [0, 1)")
    return float(rate)


def uniform_flips(labels, n_classes: int, rate: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """fastai's noisy_imagewoof recipe with a fresh draw: exactly round(rate * N) rows, chosen at random,
    each get a class drawn uniformly from the K - 1 wrong ones. Returns (noisy labels, flipped mask)."""
    labels = _check_labels(labels, n_classes)
    rate = _check_rate(rate)
    rng = np.random.default_rng(seed)
    n = len(labels)
    chosen = rng.choice(n, size=int(round(rate * n)), replace=False)
    shift = rng.integers(1, n_classes, size=chosen.size)  # 1..K-1 steps away: never the true class
    noisy = labels.copy()
    noisy[chosen] = (labels[chosen] + shift) % n_classes
    flipped = np.zeros(n, dtype=bool)
    flipped[chosen] = True
    return noisy, flipped


def pair_swaps(labels, pairs, rate: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class-conditional noise between look-alike classes fixed in advance (a confusion list, e.g. breeds
    of one group): for each pair (a, b), round(rate * n_a) of a's rows become b and round(rate * n_b)
    of b's rows become a. Classes outside every pair keep their labels. A class may sit in one pair only,
    so the flipped share of a pair's rows is exactly `rate`. Returns (noisy labels, flipped mask)."""
    labels = np.asarray(labels)
    flat = [int(c) for pair in pairs for c in pair]
    if any(len(pair) != 2 or pair[0] == pair[1] for pair in pairs):
        raise KibbleError(f"pairs must be (a, b) with a != b; got {list(pairs)}")
    if len(set(flat)) != len(flat):
        raise KibbleError("a class may appear in one pair only")
    n_classes = max([int(labels.max()) if labels.size and np.issubdtype(labels.dtype, np.integer) else 0, *flat]) + 1
    labels = _check_labels(labels, n_classes)
    rate = _check_rate(rate)
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    for a, b in pairs:
        for src, dst in ((int(a), int(b)), (int(b), int(a))):
            rows = np.flatnonzero(labels == src)
            noisy[rng.choice(rows, size=int(round(rate * rows.size)), replace=False)] = dst
    return noisy, noisy != labels


def crowd_labels(labels, lookalike_probs, error_rates, seed: int = 0, lookalike_share: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """One label per item from a simulated crowd whose annotators each have their own confusion matrix.

    Each item goes to one annotator drawn at random. Annotator j errs on item i with probability
    error_rates[j] * h_i / mean(h), capped at 0.95, where h_i = 1 - lookalike_probs[i, true] is how hard
    the item looks to an independent model (people err on hard images, not uniformly). A wrong answer
    is, with probability `lookalike_share`, the independent model's most probable wrong class (a
    look-alike); otherwise a draw from the annotator's own confusion row (Dirichlet(1) over the K - 1
    wrong classes, fixed per annotator and true class). Returns (noisy labels, annotator index per item).
    """
    probs = np.asarray(lookalike_probs, dtype=np.float64)
    if probs.ndim != 2:
        raise KibbleError(f"lookalike_probs must be (N, K); got shape {probs.shape}")
    labels = _check_labels(labels, probs.shape[1])
    if len(labels) != len(probs):
        raise KibbleError(f"labels ({len(labels)}) and lookalike_probs ({len(probs)}) must have one row per item")
    rates = np.asarray(error_rates, dtype=np.float64)
    if rates.ndim != 1 or not len(rates) or (rates < 0).any() or (rates >= 1).any():
        raise KibbleError(f"error_rates must be one rate in [0, 1) per annotator; got {list(error_rates)}")
    if not 0.0 <= lookalike_share <= 1.0:
        raise KibbleError(f"lookalike_share={lookalike_share}; use a fraction in [0, 1]")
    n, k = probs.shape
    rng = np.random.default_rng(seed)
    confusion = rng.dirichlet(np.ones(k - 1), size=(len(rates), k))  # [annotator, true class] -> wrong classes
    who = rng.integers(0, len(rates), size=n)
    hard = 1.0 - probs[np.arange(n), labels]
    p_err = np.minimum(0.95, rates[who] * hard / max(hard.mean(), 1e-12))
    errs = rng.random(n) < p_err
    masked = probs.copy()
    masked[np.arange(n), labels] = -np.inf
    lookalike = masked.argmax(axis=1)
    own_pick = np.array([rng.choice(k - 1, p=confusion[who[i], labels[i]]) for i in range(n)], dtype=np.int64)
    own = np.where(own_pick >= labels, own_pick + 1, own_pick)  # index among the wrong classes -> class index
    wrong = np.where(rng.random(n) < lookalike_share, lookalike, own)
    return np.where(errs, wrong, labels), who
