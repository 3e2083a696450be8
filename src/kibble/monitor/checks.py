"""Run the drift tests on a reference and a current batch, apply the thresholds, reach one verdict.

The false-alarm rate is controlled per batch (family-wise): the tests named in `verdict_tests`
each get alpha / (number of those tests that ran) (Bonferroni), so an i.i.d. batch raises the
alarm with probability <= alpha whatever the dependence between the tests. PSI has no p-value
and its null distribution depends on the batch size and the number of classes, so it is reported
against its conventional threshold (0.25 = "major shift") but informs, not decides, by default;
the per-class table is informative too.

Embedding tests run on the top principal components of the reference and current rows pooled:
fewer dimensions give the kernel and the domain classifier more power per sample and keep a
1,000-image batch to about a second ("Failing Loudly", Rabanser et al. 2019). Pooled, not the
reference's own: components fitted on the reference alone soak up that sample's noise, so at a few
hundred reference images (1,280-dimensional embeddings) the reference spreads wider along them than
any new batch and MMD fired on i.i.d. batches (Imagewoof, 200 vs 200 images: 4 of 4). A projection
fitted on the pooled rows is the same whichever rows are called "current", so the permutation and
per-fold tests stay exact at every size (docs/design-notes.md, "Monitoring"; scripts/bench_drift.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from kibble import KibbleError
from kibble.monitor import drift

P_VALUE_TESTS = ("chi_square", "ks_confidence", "ks_entropy", "mmd", "domain_classifier")
ALL_TESTS = (*P_VALUE_TESTS, "psi")
PCA_FITS = ("pooled", "reference")


@dataclass
class Settings:
    """Thresholds and test sizes (conf/monitor.yaml `monitor:`); defaults are the documented choice."""

    alpha: float = 0.05
    correction: str = "bonferroni"  # bonferroni | none
    verdict_tests: Sequence[str] = P_VALUE_TESTS
    psi_threshold: float = 0.25
    max_reference: int = 2000
    pca_components: int | None = 64
    pca_fit: str = "pooled"  # pooled | reference (the old fit: false alarms at small references)
    mmd_permutations: int = 500
    chi_square_permutations: int = 2000
    domain_folds: int = 5
    domain_C: float = 1.0
    share_change: float = 0.05  # per class: a predicted-class share moving this much is listed
    confidence_drop: float = 0.10  # per class: mean confidence falling this much is listed
    min_class_count: int = 5  # per class: confidence changes need this many current rows
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise KibbleError(f"monitor.alpha={self.alpha}; give a false-alarm rate in (0, 1), e.g. 0.05")
        if self.pca_fit not in PCA_FITS:
            raise KibbleError(f"monitor.pca_fit={self.pca_fit!r}; use one of {list(PCA_FITS)} (pooled keeps the false-alarm rate at alpha)")
        if self.correction not in ("bonferroni", "none"):
            raise KibbleError(f"monitor.correction={self.correction!r}; use bonferroni or none")
        unknown = [t for t in self.verdict_tests if t not in ALL_TESTS]
        if unknown or not self.verdict_tests:
            raise KibbleError(f"monitor.verdict_tests={list(self.verdict_tests)}; choose a non-empty subset of {list(ALL_TESTS)}")

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None) -> "Settings":
        values = dict(values or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise KibbleError(f"monitor: unknown setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


@dataclass
class Batch:
    """Softmax outputs (N, K) and optional embeddings (N, D) of one side of the comparison."""

    probs: np.ndarray
    embeddings: np.ndarray | None = None
    name: str = "batch"

    def __post_init__(self) -> None:
        self.probs = np.asarray(self.probs, dtype=np.float64)
        if self.probs.ndim != 2 or len(self.probs) == 0:
            raise KibbleError(f"{self.name}: empty batch (probabilities of shape {self.probs.shape}); nothing to monitor")
        if self.embeddings is not None:
            self.embeddings = np.asarray(self.embeddings, dtype=np.float64)
            if self.embeddings.ndim != 2 or len(self.embeddings) != len(self.probs):
                raise KibbleError(f"{self.name}: {len(self.probs)} probability rows but embeddings of shape {self.embeddings.shape}")

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        return self.probs.max(axis=1)

    @property
    def entropy(self) -> np.ndarray:
        return drift.entropy(self.probs)


@dataclass
class Check:
    """A test's outcome: drifted when p <= threshold (or, for PSI, score >= threshold)."""

    name: str
    group: str  # prediction | confidence | embedding
    statistic: float
    p_value: float | None
    threshold: float
    drifted: bool
    decides: bool  # part of the verdict (else informative)
    details: dict[str, Any] = field(default_factory=dict)


def check_compatible(reference: Batch, current: Batch) -> None:
    if reference.probs.shape[1] != current.probs.shape[1]:
        raise KibbleError(f"{current.name}: {current.probs.shape[1]} classes but {reference.name} has {reference.probs.shape[1]}; "
                          "predict both with the same model")
    if reference.embeddings is not None and current.embeddings is not None and reference.embeddings.shape[1] != current.embeddings.shape[1]:
        raise KibbleError(f"{current.name}: embeddings have {current.embeddings.shape[1]} dimensions but {reference.name} has "
                          f"{reference.embeddings.shape[1]}; embed both with the same model")


def reference_sample(n: int, limit: int, seed: int) -> np.ndarray:
    """Row indices of at most `limit` reference rows (all when fewer), in order."""
    if limit <= 0 or n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def project(reference: np.ndarray, current: np.ndarray, components: int | None,
            fit: str = "pooled") -> tuple[np.ndarray, np.ndarray]:
    """Both sides on the top principal components of `fit`'s rows (None/0 components: unchanged).

    fit="pooled" (reference and current stacked) is a symmetric function of all rows, so under "no
    drift" relabelling rows as reference or current leaves it unchanged and the permutation tests
    stay exact. fit="reference" is kept to reproduce the old behaviour: with few reference rows its
    components follow that sample's own noise and the reference looks wider than any new batch.
    """
    if fit not in PCA_FITS:
        raise KibbleError(f"project: fit={fit!r}; use one of {list(PCA_FITS)}")
    rows = np.concatenate([reference, current]) if fit == "pooled" else reference
    if not components or components >= min(rows.shape):
        return reference, current
    from sklearn.decomposition import PCA

    pca = PCA(n_components=int(components), svd_solver="randomized", random_state=0).fit(rows)
    return pca.transform(reference), pca.transform(current)


def run_checks(reference: Batch, current: Batch, class_names: list[str], settings: Settings | None = None) -> dict[str, Any]:
    """Every test, its threshold and the overall verdict, as a JSON-ready dict."""
    s = settings or Settings()
    check_compatible(reference, current)
    if len(class_names) != reference.probs.shape[1]:
        raise KibbleError(f"{len(class_names)} class names for {reference.probs.shape[1]} probability columns")
    k = len(class_names)
    ref_counts, cur_counts = drift.class_counts(reference.predicted, k), drift.class_counts(current.predicted, k)
    results: dict[str, tuple[str, drift.TestResult]] = {
        "chi_square": ("prediction", drift.chi_square_test(ref_counts, cur_counts, s.chi_square_permutations, seed=s.seed)),
        "psi": ("prediction", drift.TestResult("psi", drift.psi(ref_counts, cur_counts))),
        "ks_confidence": ("confidence", drift.ks_test(reference.confidence, current.confidence, "ks_confidence")),
        "ks_entropy": ("confidence", drift.ks_test(reference.entropy, current.entropy, "ks_entropy")),
    }
    if reference.embeddings is not None and current.embeddings is not None:
        rows = reference_sample(len(reference.embeddings), s.max_reference, s.seed)
        ref_z, cur_z = project(reference.embeddings[rows], current.embeddings, s.pca_components, s.pca_fit)
        results["mmd"] = ("embedding", drift.mmd_test(ref_z, cur_z, s.mmd_permutations, seed=s.seed))
        results["domain_classifier"] = ("embedding", drift.domain_classifier_test(ref_z, cur_z, s.domain_folds, s.domain_C, seed=s.seed))
    deciding = [t for t in s.verdict_tests if t in results]
    n_p = sum(1 for t in deciding if t != "psi")
    per_test = s.alpha / max(n_p, 1) if s.correction == "bonferroni" else s.alpha
    checks = []
    for name, (group, res) in results.items():
        if name == "psi":
            threshold, drifted = s.psi_threshold, res.statistic >= s.psi_threshold
        else:
            threshold, drifted = per_test, res.p_value is not None and res.p_value <= per_test
        checks.append(Check(name, group, float(res.statistic), res.p_value, threshold, bool(drifted), name in deciding, res.details))
    verdict_drift = any(c.drifted and c.decides for c in checks)
    table = drift.class_table(reference.predicted, current.predicted, reference.confidence, current.confidence, class_names)
    skipped = [t for t in s.verdict_tests if t not in results]
    return {
        "verdict": "drift" if verdict_drift else "no drift",
        "drifted": bool(verdict_drift),
        "n_reference": int(len(reference.probs)),
        "n_current": int(len(current.probs)),
        "alpha": s.alpha,
        "correction": s.correction,
        "per_test_threshold": per_test,
        "deciding_tests": deciding,
        "skipped_tests": skipped,
        "checks": [asdict(c) for c in checks],
        "per_class": table,
        "classes_gained": [r["class"] for r in table if r["share_change"] >= s.share_change],
        "classes_lost": [r["class"] for r in table if r["share_change"] <= -s.share_change],
        "classes_less_confident": [
            r["class"] for r in table
            if r["confidence_change"] is not None and r["current_count"] >= s.min_class_count and r["confidence_change"] <= -s.confidence_drop
        ],
        "settings": {k_: (list(v) if isinstance(v, (list, tuple)) else v) for k_, v in asdict(s).items()},
    }


def verdict_line(result: dict[str, Any]) -> str:
    """One line for logs and schedulers: the verdict and the tests that fired."""
    fired = [c for c in result["checks"] if c["drifted"] and c["decides"]]
    head = f"monitor: {result['verdict'].upper()} ({result['n_current']} current vs {result['n_reference']} reference images"
    if not fired:
        return head + f"; no deciding test below p <= {result['per_test_threshold']:.4g})"
    parts = [f"{c['name']} p={c['p_value']:.2g}" if c["p_value"] is not None else f"{c['name']}={c['statistic']:.3g}" for c in fired]
    return head + "; " + ", ".join(parts) + ")"
