"""Drift statistics (kibble.monitor.drift), thresholds and verdict (checks), the queue's triage scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kibble import KibbleError
from kibble.monitor import drift
from kibble.monitor.checks import Batch, Settings, run_checks, verdict_line
from kibble.monitor.triage import monitor_queue, percentile_above, triage_scores


def gaussian(n: int, d: int = 8, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(shift, 1.0, (n, d))


def test_psi_and_chi_square():
    ref = np.array([100, 100, 100, 100])
    assert drift.psi(ref, ref) == pytest.approx(0.0)
    assert drift.psi(ref, [10, 10, 10, 370]) > 0.25
    same = drift.chi_square_test(ref, [25, 24, 26, 25])
    assert same.details["method"] == "asymptotic" and same.p_value > 0.5
    shifted = drift.chi_square_test(ref, [5, 5, 5, 85])
    assert shifted.p_value < 1e-6
    # 50 classes, 40 current rows: expected counts < 5 -> Monte-Carlo p-value, still calibrated-looking
    many = drift.chi_square_test(np.full(50, 40), np.bincount(np.arange(40) % 50, minlength=50), n_permutations=500)
    assert many.details["method"].startswith("monte-carlo") and many.p_value > 0.2
    skewed = drift.chi_square_test(np.full(50, 40), np.r_[40, np.zeros(49, int)], n_permutations=500)
    assert skewed.p_value <= 1 / 501 + 1e-12
    with pytest.raises(KibbleError, match="same length|one length"):
        drift.chi_square_test([1, 2], [1, 2, 3])


def test_ks_on_confidence_and_entropy():
    probs = np.array([[0.9, 0.1], [0.5, 0.5]])
    assert drift.entropy(probs)[1] == pytest.approx(np.log(2))
    rng = np.random.default_rng(0)
    assert drift.ks_test(rng.uniform(size=500), rng.uniform(size=200)).p_value > 0.01
    assert drift.ks_test(rng.uniform(size=500), rng.uniform(0.3, 1.0, size=200)).p_value < 1e-6
    with pytest.raises(KibbleError, match="non-empty"):
        drift.ks_test(np.zeros(3), np.zeros(0))


def test_mmd_permutation_test():
    same = drift.mmd_test(gaussian(300), gaussian(100, seed=1), n_permutations=200)
    assert same.p_value > 0.05 and same.details["bandwidth"] > 0
    moved = drift.mmd_test(gaussian(300), gaussian(100, shift=0.5, seed=1), n_permutations=200)
    assert moved.p_value <= 1 / 201 + 1e-12 and moved.statistic > same.statistic
    with pytest.raises(KibbleError, match="embedding sizes differ"):
        drift.mmd_test(gaussian(10, d=4), gaussian(10, d=5))
    with pytest.raises(KibbleError, match="empty"):
        drift.mmd_test(gaussian(10), np.zeros((0, 8)))


def test_domain_classifier_auc():
    same = drift.domain_classifier_test(gaussian(300), gaussian(100, seed=1))
    assert 0.35 < same.statistic < 0.65 and same.p_value > 0.05
    moved = drift.domain_classifier_test(gaussian(300), gaussian(100, shift=0.7, seed=1))
    assert moved.statistic > 0.85 and moved.p_value < 1e-4
    assert len(moved.details["fold_p_values"]) == 5


def test_knn_distances_and_percentiles():
    ref = gaussian(200, shift=3.0, seed=0)
    loo = drift.knn_distances(ref, None, k=3)
    far = drift.knn_distances(ref, gaussian(5, shift=-3.0, seed=1), k=3)  # the opposite direction
    assert loo.shape == (200,) and far.shape == (5,)
    assert (percentile_above(loo, far) > 0.9).all()
    # same direction, 3x the norm (a dark/blurred input): atypical in Euclidean, not in cosine geometry
    scaled = 3.0 * ref[:5]
    assert (percentile_above(loo, drift.knn_distances(ref, scaled, k=3)) > 0.9).all()
    cos_loo = drift.knn_distances(ref, None, k=3, normalize=True)
    assert (percentile_above(cos_loo, drift.knn_distances(ref, scaled, k=3, normalize=True)) < 0.5).all()
    assert percentile_above(np.array([1.0, 2.0, 3.0]), np.array([0.5, 2.5, 9.0])).tolist() == pytest.approx([0.0, 2 / 3, 1.0])


def softmax_batch(embeddings: np.ndarray, weights: np.ndarray, name: str) -> Batch:
    logits = embeddings @ weights
    p = np.exp(logits - logits.max(1, keepdims=True))
    return Batch(p / p.sum(1, keepdims=True), embeddings, name=name)


def test_run_checks_verdict_and_bad_input():
    names = ["a", "b", "c"]
    w = np.random.default_rng(3).normal(0, 1, (8, 3))
    ref = softmax_batch(gaussian(600, seed=1), w, "ref")
    iid = run_checks(ref, softmax_batch(gaussian(200, seed=2), w, "cur"), names, Settings(mmd_permutations=200))
    assert iid["verdict"] == "no drift" and not iid["drifted"]
    assert iid["per_test_threshold"] == pytest.approx(0.05 / 5) and iid["deciding_tests"] == list(Settings().verdict_tests)
    assert {c["name"] for c in iid["checks"]} == {"chi_square", "psi", "ks_confidence", "ks_entropy", "mmd", "domain_classifier"}
    moved = run_checks(ref, softmax_batch(gaussian(200, shift=0.6, seed=2), w, "cur"), names, Settings(mmd_permutations=200))
    assert moved["drifted"] and "DRIFT" in verdict_line(moved)
    fired = {c["name"] for c in moved["checks"] if c["drifted"]}
    assert {"mmd", "domain_classifier"} <= fired
    # without embeddings the embedding tests are skipped (listed), the others still decide
    no_emb = run_checks(Batch(ref.probs), Batch(ref.probs[:100]), names)
    assert no_emb["skipped_tests"] == ["mmd", "domain_classifier"] and no_emb["per_test_threshold"] == pytest.approx(0.05 / 3)
    with pytest.raises(KibbleError, match="2 classes but ref has 3"):
        run_checks(ref, Batch(np.full((5, 2), 0.5), name="cur"), names)
    with pytest.raises(KibbleError, match="embeddings have 4 dimensions but ref has 8"):
        run_checks(ref, Batch(ref.probs[:5], gaussian(5, d=4), name="cur"), names)
    with pytest.raises(KibbleError, match="empty batch"):
        Batch(np.zeros((0, 3)), name="cur")
    with pytest.raises(KibbleError, match="verdict_tests"):
        Settings(verdict_tests=["bogus"])
    with pytest.raises(KibbleError, match="unknown setting"):
        Settings.from_mapping({"alpah": 0.1})


def test_per_class_shares_and_confidence():
    names = ["a", "b"]
    ref = Batch(np.tile([[0.9, 0.1], [0.1, 0.9]], (50, 1)))
    cur = Batch(np.r_[np.tile([[0.9, 0.1]], (80, 1)), np.tile([[0.45, 0.55]], (20, 1))])
    result = run_checks(ref, cur, names)
    assert result["classes_gained"] == ["a"] and result["classes_lost"] == ["b"]
    assert result["classes_less_confident"] == ["b"]
    row = {r["class"]: r for r in result["per_class"]}
    assert row["a"]["current_share"] == pytest.approx(0.8) and row["b"]["confidence_change"] == pytest.approx(-0.35)


def test_triage_queue_reasons():
    ref_emb = gaussian(300, shift=3.0, seed=0)
    cur_emb = np.r_[gaussian(20, shift=3.0, seed=1), gaussian(3, shift=-3.0, seed=2)]
    ref_conf = np.random.default_rng(0).uniform(0.6, 1.0, 300)
    cur_conf = np.r_[np.full(20, 0.9), [0.95, 0.95, 0.95]]
    cur_conf[0] = 0.31
    scores = triage_scores(ref_conf, cur_conf, ref_emb, cur_emb, k=5)
    ids = [f"img{i}.png" for i in range(23)]
    queue = monitor_queue(ids, ids, ["a"] * 23, scores, budget=10, min_score=0.95, round_index=None)
    assert set(queue["sample_id"]) >= {"img0.png", "img20.png", "img21.png", "img22.png"}
    reasons = dict(zip(queue["sample_id"], queue["reason"]))
    assert reasons["img0.png"].startswith("low confidence 0.31")
    assert reasons["img21.png"].startswith("atypical: embedding kNN distance")
    assert (queue["kind"] == "new").all() and queue["rank"].tolist() == list(range(1, len(queue) + 1))
    assert monitor_queue(ids, ids, ["a"] * 23, scores, budget=0).empty
    with pytest.raises(KibbleError, match="min_score"):
        monitor_queue(ids, ids, ["a"] * 23, scores, min_score=2.0)


def test_real_embeddings_class_mix_shift(digits_feature_cache):
    """effnet-lite0 embeddings of the digits: an i.i.d. half passes, a batch of only 0/1/2 is flagged."""
    from kibble.data.manifest import load_manifest

    folder = next((digits_feature_cache / "features").iterdir())
    ids = pd.read_parquet(folder / "sample_ids.parquet")["sample_id"].tolist()
    matrix = np.load(folder / "features.npy").astype(np.float64)
    manifest = load_manifest(digits_feature_cache.parent / "manifest.parquet").set_index("sample_id").loc[ids]
    labels = manifest["label"].astype(str).to_numpy()
    train = (manifest["split"] == "train").to_numpy()
    names = sorted(set(labels))
    # a stand-in model on the embeddings: softmax over negative distances to the train class centroids
    centroids = np.stack([matrix[train & (labels == c)].mean(0) for c in names])
    scale = np.linalg.norm(matrix[train] - centroids[[names.index(c) for c in labels[train]]], axis=1).mean()

    def probs(rows):
        d = np.linalg.norm(matrix[rows, None, :] - centroids[None], axis=2) / scale * 5
        p = np.exp(-(d - d.min(1, keepdims=True)))
        return p / p.sum(1, keepdims=True)

    rest = np.flatnonzero(~train)
    np.random.default_rng(0).shuffle(rest)
    half = len(rest) // 2
    ref_rows, cur_rows = rest[:half], rest[half:]
    ref = Batch(probs(ref_rows), matrix[ref_rows], "reference")
    iid = run_checks(ref, Batch(probs(cur_rows), matrix[cur_rows], "current"), names)
    assert not iid["drifted"], verdict_line(iid)
    mix = cur_rows[np.isin(labels[cur_rows], ["0", "1", "2"])]
    shifted = run_checks(ref, Batch(probs(mix), matrix[mix], "current"), names)
    assert shifted["drifted"], verdict_line(shifted)
    fired = {c["name"] for c in shifted["checks"] if c["drifted"]}
    assert {"chi_square", "mmd"} <= fired
    assert set(shifted["classes_gained"]) == {"0", "1", "2"}
