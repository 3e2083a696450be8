"""Chunked, validate-once strategies: chunked results equal unchunked ones bit for bit, float32 stays float32,
and a round's strategies share one validation pass."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from cleanlab.filter import find_label_issues

from kibble.strategies import active, base, cleaning
from kibble.strategies.registry import run_strategy, validate_inputs

CLEANING = ["kfold", "entropy", "self_confidence", "normalized_margin", "precision_renormalize", "confident_learning"]
ACTIVE = ["least_confidence", "margin", "ratio", "entropy"]


def oof(n=700, k=9, dtype=np.float32, seed=0):
    """Peaked rows, most labels agreeing with the argmax; some exact ties, some -1e-7 float noise."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(k, 0.4), size=n)
    ties = np.arange(0, n, 11)
    probs[ties] = 0.0
    probs[ties, (ties * 3) % k], probs[ties, (ties * 3 + 1) % k], probs[ties, (ties * 3 + 2) % k] = 0.375, 0.375, 0.25  # ties
    probs[5::13, -1] = 0.0
    probs /= probs.sum(1, keepdims=True)
    probs[5::13, -1] = -1e-7  # a softmax's float noise: accepted, read as 0
    labels = probs.argmax(1)
    labels[::4] = rng.integers(0, k, len(labels[::4]))
    return labels, probs.astype(dtype)


def assert_same(a, b):
    for field in ("score", "suggested", "flagged"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", CLEANING)
def test_chunked_cleaning_equals_unchunked(name, dtype, monkeypatch):
    labels, probs = oof(dtype=dtype)
    fn = getattr(cleaning, name)
    monkeypatch.setattr(base, "CHUNK_ELEMENTS", 1 << 30)  # one chunk
    whole = fn(labels, probs)
    for elements in (1, 25, 1000):  # one row, a few rows, many rows per chunk (uneven last chunk)
        monkeypatch.setattr(base, "CHUNK_ELEMENTS", elements)
        assert_same(fn(labels, probs), whole)


@pytest.mark.parametrize("name", ACTIVE + ["expected_cost"])
def test_chunked_active_equals_unchunked(name, monkeypatch):
    _, probs = oof(seed=1)
    k = probs.shape[1]
    severity = np.abs(np.subtract.outer(np.arange(k), np.arange(k))).astype(float)
    call = (lambda p: active.expected_cost(p, severity)) if name == "expected_cost" else getattr(active, name)
    monkeypatch.setattr(base, "CHUNK_ELEMENTS", 1 << 30)
    whole = call(probs)
    monkeypatch.setattr(base, "CHUNK_ELEMENTS", 20)
    chunked = call(probs)
    if name == "expected_cost":  # a matrix product: BLAS may round differently by block size
        np.testing.assert_allclose(chunked.score, whole.score, rtol=1e-12)
        np.testing.assert_array_equal(chunked.suggested, whole.suggested)
    else:
        assert_same(chunked, whole)


def test_float32_input_matches_the_float64_arithmetic():
    """Scores are float64 and computed from the float32 values as a float64 copy would give them."""
    labels, probs = oof()
    wide = np.clip(probs.astype(np.float64), 0, None)
    for name in ("kfold", "entropy", "self_confidence", "normalized_margin", "precision_renormalize"):
        assert_same(getattr(cleaning, name)(labels, probs), getattr(cleaning, name)(labels, wide))
    np.testing.assert_array_equal(cleaning.self_confidence(labels, probs).score, 1 - wide[np.arange(len(labels)), labels])


def test_confident_learning_equals_cleanlab_on_the_same_float32_arrays():
    labels, probs = oof(n=2000, k=5, seed=4)
    probs = np.clip(probs, 0, None)
    out = cleaning.confident_learning(labels, probs)
    np.testing.assert_array_equal(out.flagged, find_label_issues(labels, probs))


def test_validation_does_not_copy_the_matrix():
    labels, probs = oof()
    checked_labels, checked = base.check_cleaning_inputs(labels, probs)
    assert checked is probs
    assert base.check_probs(probs) is probs


def test_a_round_validates_once_and_the_workers_trust_it(monkeypatch):
    labels, probs = oof()
    calls = []
    real = base._check_matrix
    monkeypatch.setattr(base, "_check_matrix", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    names = ["kfold", "entropy", "self_confidence", "normalized_margin", "precision", "confident_learning"]
    checked_labels, checked = validate_inputs(names, labels, probs)
    outputs = {n: run_strategy(n, checked_labels, checked, validated=True) for n in names}
    assert len(calls) == 1
    for n in names:  # same results as the public, self-validating calls
        assert_same(outputs[n], run_strategy(n, labels, probs))
    assert validate_inputs(["neighbors"], labels, probs)[1] is probs  # nothing reads probs: nothing checked
    assert len(calls) == 1 + len(names)


@pytest.mark.parametrize("n, k", [(60, 3), (400, 12), (3000, 40), (150, 60)])
def test_prune_by_noise_rate_is_cleanlabs_mask(n, k):
    """kibble's bounded-memory confident learning flags exactly what cleanlab's find_label_issues flags, ties
    included (probabilities rounded to 2 decimals), classes with 0 or 1 rows included (n=150, k=60)."""
    from cleanlab.filter import find_label_issues

    from kibble.strategies.cleaning import confident_learning
    from kibble.strategies.confident_joint import prune_by_noise_rate

    rng = np.random.default_rng(n + k)
    logits = rng.normal(0, 2, (n, k))
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = np.round(probs / probs.sum(axis=1, keepdims=True), 2).astype(np.float32)
    probs /= probs.sum(axis=1, keepdims=True)
    labels = np.where(rng.random(n) < 0.7, probs.argmax(axis=1), rng.integers(0, k, n))
    from cleanlab.count import compute_confident_joint

    from kibble.strategies.confident_joint import confident_joint

    expected = find_label_issues(labels, probs, n_jobs=1)
    assert np.array_equal(prune_by_noise_rate(labels, probs), expected)
    assert np.array_equal(confident_learning(labels, probs).flagged, expected)
    assert np.array_equal(confident_joint(labels, probs), compute_confident_joint(labels, probs))
    wide = probs.astype(np.float64)  # float64 input: compared as cleanlab compares, no float32 threshold
    assert np.array_equal(prune_by_noise_rate(labels, wide), find_label_issues(labels, wide, n_jobs=1))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 40), st.integers(0, 3), st.integers(0, 2**31 - 1))
def test_top_counts_pick_what_argsort_puts_first(lines, width, levels, seed):
    """The partition path picks, per line, the rows a full argsort puts in its first counts[j], ties included
    (few distinct values: the cut is often tied, and the tie-break is argsort's own)."""
    from kibble.strategies.confident_joint import _top_counts

    rng = np.random.default_rng(seed)
    values = rng.integers(0, levels + 1, (lines, width)).astype(np.float64) if levels else rng.random((lines, width))
    counts = rng.integers(0, width + 3, lines)
    expected = np.zeros(width, dtype=bool)
    for j in range(lines):
        expected[np.argsort(values[j])[: counts[j]]] = True
    assert np.array_equal(_top_counts(values, counts), expected)


@settings(max_examples=40, deadline=None)
@given(st.integers(20, 400), st.integers(2, 12), st.floats(0.0, 0.9), st.integers(0, 3), st.integers(0, 2**31 - 1))
def test_pruning_only_the_beaten_rows_flags_what_cleanlab_flags(n, k, noise, decimals, seed):
    """Class rows whose argmax is their label are skipped when every pruning column finds its count strictly below
    the label among the others; otherwise (or when a tie at a cut needs the whole line's sort) the class is pruned whole.
    Either way the mask is cleanlab's: any noise rate, coarse probabilities (many ties), float32 and float64."""
    from cleanlab.filter import find_label_issues

    from kibble.strategies import confident_joint as cj

    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(k, 0.5), n)
    if decimals:
        probs = np.round(probs, decimals) + 1e-3
        probs /= probs.sum(axis=1, keepdims=True)
    labels = np.where(rng.random(n) < noise, rng.integers(0, k, n), probs.argmax(axis=1))
    for dtype in (np.float32, np.float64):
        p = probs.astype(dtype)
        assert np.array_equal(cj.prune_by_noise_rate(labels, p), find_label_issues(labels, p, n_jobs=1))


def test_the_beaten_rows_are_those_whose_argmax_is_another_class(monkeypatch: pytest.MonkeyPatch):
    from kibble.strategies import confident_joint as cj

    probs = np.array([[0.6, 0.3, 0.1], [0.4, 0.4, 0.2], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]], dtype=np.float32)
    assert cj.row_pass(np.array([0, 1, 0, 2]), probs).beaten.tolist() == [False, True, True, False]
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(10, 0.3), 5000).astype(np.float32)
    labels = np.where(rng.random(5000) < 0.1, rng.integers(0, 10, 5000), probs.argmax(axis=1))
    passed = cj.row_pass(labels, probs)
    assert np.array_equal(passed.argmax, probs.argmax(axis=1)) and passed.minimum == probs.min()
    calls = []
    real = cj._class_mask
    monkeypatch.setattr(cj, "_class_mask", lambda *a, **kw: calls.append(kw["screened"]) or real(*a, **kw))
    cj.prune_by_noise_rate(labels, probs)
    assert calls and all(calls)  # 10 % noise: every class is settled from its beaten rows alone
