"""Benchmark label-noise generators: exact rates, never the true class, seeded, validated inputs."""

import numpy as np
import pytest

from kibble import KibbleError
from kibble.noise import crowd_labels, lookalike_flips, pair_swaps, uniform_flips


def test_uniform_flips_exact_rate_and_always_wrong():
    labels = np.repeat(np.arange(10), 50)
    noisy, flipped = uniform_flips(labels, 10, 0.25, seed=3)
    assert flipped.sum() == 125
    assert (noisy[flipped] != labels[flipped]).all() and (noisy[~flipped] == labels[~flipped]).all()
    assert set(np.unique(noisy[flipped])) == set(range(10))  # spread over the wrong classes
    again, _ = uniform_flips(labels, 10, 0.25, seed=3)
    other, _ = uniform_flips(labels, 10, 0.25, seed=4)
    assert (again == noisy).all() and (other != noisy).any()


def test_pair_swaps_stay_inside_pairs():
    labels = np.repeat(np.arange(6), 40)
    noisy, flipped = pair_swaps(labels, [(0, 1), (2, 3)], 0.25, seed=0)
    assert flipped.sum() == 40  # 10 of each of the 4 paired classes
    assert (noisy[labels == 0][flipped[labels == 0]] == 1).all() and (noisy[labels == 3][flipped[labels == 3]] == 2).all()
    assert not flipped[labels >= 4].any()


def test_pair_swaps_refuse_overlapping_pairs():
    with pytest.raises(KibbleError, match="one pair only"):
        pair_swaps(np.arange(4), [(0, 1), (1, 2)], 0.1)


def test_crowd_labels_err_on_hard_items_toward_lookalikes():
    rng = np.random.default_rng(0)
    n, k = 4000, 5
    labels = rng.integers(0, k, n)
    probs = np.full((n, k), 0.02)
    easy = np.arange(n) < n // 2
    probs[np.arange(n), labels] = np.where(easy, 0.92, 0.4)
    probs[np.arange(n), (labels + 1) % k] += np.where(easy, 0.0, 0.52)  # hard items: one strong look-alike
    probs /= probs.sum(1, keepdims=True)
    noisy, who = crowd_labels(labels, probs, [0.05, 0.3], seed=1)
    wrong = noisy != labels
    assert wrong[~easy].mean() > 3 * wrong[easy].mean()
    assert wrong[who == 1].mean() > 2 * wrong[who == 0].mean()
    assert ((noisy[wrong & ~easy] == (labels[wrong & ~easy] + 1) % k).mean()) > 0.6


def test_crowd_labels_validate():
    with pytest.raises(KibbleError, match="error_rates"):
        crowd_labels([0, 1], np.eye(2), [1.2])


def test_lookalike_flips_pick_most_probable_wrong_class():
    probs = np.array([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])
    noisy, flipped = lookalike_flips(np.array([0, 2]), probs, 0.5, seed=0)
    assert flipped.sum() == 1
    row = int(np.flatnonzero(flipped)[0])
    assert noisy[row] == [1, 1][row]
