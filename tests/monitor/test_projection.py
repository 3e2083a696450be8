"""The embedding tests' projection: components fitted on the pooled rows keep small references honest.

400-dimensional isotropic embeddings, 60 reference vs 60 current rows drawn from one distribution:
16 components fitted on the reference alone follow that sample's noise, so the reference spreads
wider along them than the current batch and MMD calls every such batch drifted; fitted on both
sides pooled, the same batches pass (the false alarm the Imagewoof benchmark showed at 200 images).
"""

from __future__ import annotations

import numpy as np
import pytest

from kibble import KibbleError
from kibble.monitor import drift
from kibble.monitor.checks import Batch, Settings, project, run_checks

DIM, ROWS, COMPONENTS, TRIALS = 400, 60, 16, 5


def iid_pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(ROWS, DIM)), rng.normal(size=(ROWS, DIM))


def mmd_p_values(fit: str) -> np.ndarray:
    out = []
    for seed in range(TRIALS):
        ref, cur = project(*iid_pair(seed), COMPONENTS, fit)
        out.append(drift.mmd_test(ref, cur, n_permutations=200, seed=seed).p_value)
    return np.array(out)


def test_reference_only_components_make_an_iid_small_batch_look_drifted():
    ref, cur = project(*iid_pair(0), COMPONENTS, "reference")
    # the reference's own components: its spread along them is far above the current batch's
    assert ref.var(axis=0).sum() > 3 * cur.var(axis=0).sum()
    assert (mmd_p_values("reference") <= 0.01).all()


def test_pooled_components_keep_iid_small_batches_quiet():
    ref, cur = project(*iid_pair(0), COMPONENTS, "pooled")
    assert ref.shape == cur.shape == (ROWS, COMPONENTS)
    assert 0.7 < ref.var(axis=0).sum() / cur.var(axis=0).sum() < 1.4
    p = mmd_p_values("pooled")
    assert (p > 0.01).all() and np.median(p) > 0.1


def test_run_checks_uses_pooled_components_by_default():
    names = ["a", "b"]
    ref_e, cur_e = iid_pair(1)
    probs = np.tile([[0.7, 0.3], [0.3, 0.7]], (ROWS // 2, 1))
    ref, cur = Batch(probs, ref_e, "ref"), Batch(probs, cur_e, "cur")
    small = Settings(pca_components=COMPONENTS, mmd_permutations=200)
    assert small.pca_fit == "pooled"
    assert not run_checks(ref, cur, names, small)["drifted"]
    old = run_checks(ref, cur, names, Settings(pca_components=COMPONENTS, mmd_permutations=200, pca_fit="reference"))
    assert old["drifted"] and [c["name"] for c in old["checks"] if c["drifted"]] == ["mmd"]
    assert old["settings"]["pca_fit"] == "reference"


def test_projection_settings_are_checked():
    with pytest.raises(KibbleError, match="pca_fit='both'; use one of"):
        Settings(pca_fit="both")
    with pytest.raises(KibbleError, match="fit='x'"):
        project(np.zeros((5, 3)), np.zeros((5, 3)), 2, "x")
    ref, cur = iid_pair(2)
    assert project(ref, cur, None)[0] is ref  # no components: the embeddings as they are
    few = ref[:3]
    assert project(few, cur[:3], 16)[0] is few  # 6 pooled rows cannot give 16 components: left as they are
