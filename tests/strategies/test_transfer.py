"""Active transfer learning: ATL for uncertainty finds where the model errs; adaptive ATL for representative
sampling finds what the training data lacks and spreads its batch; fallback and bad input."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from kibble import KibbleError
from kibble.strategies import active
from kibble.strategies.active_registry import run_active
from kibble.strategies.transfer import HeldOut, atl_representative, atl_uncertainty


def blob(rng, centre: int, n: int, dim: int = 8, scale: float = 0.7) -> np.ndarray:
    return np.eye(dim)[centre] * 4 + rng.normal(scale=scale, size=(n, dim))


def confident(predicted: np.ndarray, k: int = 3) -> np.ndarray:
    p = np.full((len(predicted), k), 0.05)
    p[np.arange(len(predicted)), predicted] = 0.9
    return p


def erring_model(seed: int, wrong_share=(0.0, 0.0, 1.0, 0.0)):
    """Four regions (true class = region % 3). The model is confidently wrong on `wrong_share` of each
    region's items (held out and pool alike) and unsure only on part of region 0, where it is right."""
    rng = np.random.default_rng(seed)
    def split(n):
        emb = np.concatenate([blob(rng, r, n) for r in range(4)])
        region = np.repeat(np.arange(4), n)
        truth = region % 3
        wrong = np.concatenate([rng.random(n) < s for s in wrong_share])
        probs = confident(np.where(wrong, (truth + 1) % 3, truth))
        return emb, region, truth, probs
    hemb, _, htruth, hprobs = split(30)
    pemb, pregion, _, pprobs = split(15)
    pprobs[:10] = [0.5, 0.45, 0.05]  # uncertainty sampling's favourites: region 0, where the model is right
    return HeldOut(hemb, htruth, hprobs), pemb, pregion, pprobs


def test_atl_uncertainty_ranks_the_region_where_the_model_errs_first():
    for seed in range(3):
        held, emb, region, probs = erring_model(seed)
        out = atl_uncertainty(probs, emb, held.embeddings, held.labels, held.probs)
        assert out.score[region == 2].min() > out.score[region != 2].max()
        assert (out.suggested == probs.argmax(1)).all() and out.flagged.all()
        assert set(region[np.argsort(-active.margin(probs).score)[:10]]) == {0}  # uncertainty looks elsewhere
        emb_only = atl_uncertainty(probs, emb, held.embeddings, held.labels, held.probs, use_probs=False)
        assert set(region[np.argsort(-emb_only.score)[:15]]) == {2}
        via_registry = run_active("atl_uncertainty", probs, embeddings=emb, held_out=held)
        np.testing.assert_allclose(via_registry.score, out.score)


def test_atl_uncertainty_spreads_its_batch_over_error_regions():
    held, emb, region, probs = erring_model(0, wrong_share=(0.0, 0.0, 1.0, 0.6))  # errors in two regions, more in 2
    plain = atl_uncertainty(probs, emb, held.embeddings, held.labels, held.probs)
    assert set(region[np.argsort(-plain.score)[:2]]) == {2}
    out = atl_uncertainty(probs, emb, held.embeddings, held.labels, held.probs, batch_size=2, spread=True, top_factor=12, seed=0)
    picks = np.argsort(-out.score)[:2]
    assert set(region[picks]) == {2, 3} and (out.score[picks] > 1).all()


def test_atl_uncertainty_falls_back_with_one_log_line_when_the_held_out_set_has_too_few_errors(caplog: pytest.LogCaptureFixture):
    held, emb, _, probs = erring_model(1, wrong_share=(0.0, 0.0, 0.0, 0.0))
    with caplog.at_level(logging.WARNING, logger="kibble.strategies.transfer"):
        out = atl_uncertainty(probs, emb, held.embeddings, held.labels, held.probs, min_incorrect=5)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "0 incorrect and 120 correct" in lines[0] and "ranking by margin instead" in lines[0]
    np.testing.assert_allclose(out.score, active.margin(probs).score)


def under_represented(seed: int):
    """Training data from regions 0 and 1; the pool also holds regions 2 (12 items) and 3 (8 items)."""
    rng = np.random.default_rng(seed)
    train = np.concatenate([blob(rng, 0, 20, scale=0.5), blob(rng, 1, 20, scale=0.5)])
    pool = np.concatenate([blob(rng, r, n, scale=0.5) for r, n in ((0, 15), (1, 15), (2, 12), (3, 8))])
    return train, pool, np.repeat([0, 1, 2, 3], [15, 15, 12, 8])


def test_adaptive_representative_starts_where_training_data_is_missing_and_spreads_the_batch():
    missed = 0
    for seed in range(6):
        train, pool, region = under_represented(seed)
        out = atl_representative(pool, train, 4, sub_batches=4, seed=seed)
        picks = np.argsort(-out.score)[:4]
        assert region[picks[0]] in {2, 3} and set(region[picks]) == {2, 3}, seed  # only, and both, regions the training data lacks
        assert (out.suggested == -1).all() and (out.score[picks] > 1).all()
        once = atl_representative(pool, train, 4, sub_batches=1, seed=seed)  # not adaptive: one fit
        missed += set(region[np.argsort(-once.score)[:4]]) != {2, 3}
    assert missed >= 2  # without adaptation the batch often spends itself on one region


def test_adaptive_representative_from_zero_labels_starts_typical_and_keeps_spreading():
    rng = np.random.default_rng(0)
    pool = np.concatenate([blob(rng, r, 25, scale=0.5) for r in range(4)])
    region = np.repeat(np.arange(4), 25)
    out = run_active("atl_representative", None, embeddings=pool, batch_size=4, seed=0, sub_batches=3)
    assert len(set(region[np.argsort(-out.score)[:4]])) >= 3


def test_bad_input_gives_one_line_errors():
    held, emb, _, probs = erring_model(0)
    h = (held.embeddings, held.labels, held.probs)
    cases = [
        (lambda: atl_uncertainty(None, emb, *h), "needs the model's pool probabilities"),
        (lambda: atl_uncertainty(probs, emb, held.embeddings[:5], held.labels, held.probs), "held-out embeddings have 5 rows but held-out labels 120"),
        (lambda: atl_uncertainty(probs, emb, held.embeddings, held.labels, held.probs[:, :2] / held.probs[:, :2].sum(1, keepdims=True)),
         "held-out probs have 2 classes but the pool probs 3"),
        (lambda: atl_uncertainty(probs, emb, held.embeddings[:, :4], held.labels, held.probs), r"held-out embeddings must be \(M, D\) with D=8"),
        (lambda: atl_uncertainty(probs, emb, held.embeddings, held.labels + 5, held.probs), r"labels must lie in \[0, 3\)"),
        (lambda: atl_uncertainty(probs, emb, *h, spread=True), "spread=true picks a batch; give batch_size"),
        (lambda: atl_uncertainty(probs, emb, *h, batch_size=61), "larger than the pool"),
        (lambda: atl_uncertainty(probs, emb, *h, fallback="bogus"), "fallback='bogus'"),
        (lambda: run_active("atl_uncertainty", probs, embeddings=emb), "needs labelled items the model did not train on"),
        (lambda: atl_representative(emb, emb, 2, sub_batches=0), "sub_batches=0"),
        (lambda: atl_representative(emb, emb[:, :3], 2), r"labelled_embeddings must be \(M, D\)"),
        (lambda: atl_representative(emb, emb, 61), "larger than the pool"),
    ]
    for call, message in cases:
        with pytest.raises(KibbleError, match=message) as err:
            call()
        assert "\n" not in str(err.value)
