"""Learning curves of active learning: accuracy against the number of labels, and label savings."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kibble import KibbleError

CURVE_COLUMNS = ["strategy", "seed", "round", "n_labels", "test_accuracy"]


def mean_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Mean (and std) accuracy per strategy and round over seeds: strategy, round, n_labels, accuracy, std, n_seeds."""
    _check_curves(curves)
    grouped = curves.groupby(["strategy", "round"], sort=True)
    out = grouped.agg(n_labels=("n_labels", "mean"), accuracy=("test_accuracy", "mean"), std=("test_accuracy", "std"), n_seeds=("seed", "nunique"))
    return out.reset_index()


def _check_curves(curves: pd.DataFrame) -> None:
    missing = [c for c in CURVE_COLUMNS if c not in curves.columns]
    if missing:
        raise KibbleError(f"learning curves need columns {CURVE_COLUMNS}; missing {missing}")


def labels_to_reach(n_labels, accuracy, target: float) -> float:
    """Labels at which a curve first reaches `target` accuracy (linear between points); NaN if never.

    A curve already at or above target at its first point returns that point's label count.
    """
    n = np.asarray(n_labels, dtype=np.float64)
    acc = np.asarray(accuracy, dtype=np.float64)
    if n.shape != acc.shape or n.ndim != 1 or len(n) == 0:
        raise KibbleError(f"n_labels and accuracy must be equal-length 1-D curves; got {n.shape} and {acc.shape}")
    order = np.argsort(n, kind="stable")
    n, acc = n[order], acc[order]
    if acc[0] >= target:
        return float(n[0])
    for i in range(1, len(n)):
        if acc[i] >= target:
            a0, a1 = acc[i - 1], acc[i]
            return float(n[i - 1] + (target - a0) / (a1 - a0) * (n[i] - n[i - 1])) if a1 > a0 else float(n[i])
    return float("nan")


def savings_table(curves: pd.DataFrame, baseline: str = "random") -> pd.DataFrame:
    """Per strategy: final mean accuracy, labels needed to reach the baseline's final mean accuracy,
    and that as a share of the baseline's labels (< 1 = the strategy saves labels)."""
    mean = mean_curves(curves)
    if baseline not in set(mean["strategy"]):
        raise KibbleError(f"no {baseline!r} curve to compare against; run the baseline arm too")
    base = mean[mean["strategy"] == baseline].sort_values("round")
    target, base_labels = float(base["accuracy"].iloc[-1]), float(base["n_labels"].iloc[-1])
    rows = []
    for name, part in mean.groupby("strategy", sort=False):
        part = part.sort_values("round")
        need = labels_to_reach(part["n_labels"], part["accuracy"], target)
        rows.append({
            "strategy": name, "final_labels": float(part["n_labels"].iloc[-1]), "final_accuracy": float(part["accuracy"].iloc[-1]),
            "final_accuracy_std": float(part["std"].iloc[-1]) if part["n_seeds"].iloc[-1] > 1 else float("nan"),
            f"labels_to_reach_{baseline}_final": need, f"share_of_{baseline}_labels": need / base_labels,
        })
    return pd.DataFrame(rows).sort_values(f"share_of_{baseline}_labels", na_position="last").reset_index(drop=True)


def per_seed_savings(curves: pd.DataFrame, baseline: str = "random") -> pd.DataFrame:
    """Each strategy against the baseline's curve of the *same* seed (same seed set, same initialisation):
    one row per (strategy, seed) with final accuracy, the accuracy gap to the baseline (final, and averaged
    over the rounds after the seed set), the labels needed to reach the baseline's final accuracy of that
    seed, that as a share of the baseline's final labels, and whether the curve got there at all.

    The baseline's own row measures the noise of its curve: a share below 1 means the baseline itself
    touched its final accuracy earlier. Seeds without a baseline curve are an error (nothing to pair with).
    """
    _check_curves(curves)
    if baseline not in set(curves["strategy"]):
        raise KibbleError(f"no {baseline!r} curve to compare against; run the baseline arm too")
    base = {seed: part.sort_values("round") for seed, part in curves[curves["strategy"] == baseline].groupby("seed")}
    rows = []
    for (name, seed), part in curves.groupby(["strategy", "seed"], sort=True):
        if seed not in base:
            raise KibbleError(f"strategy {name!r} has seed {seed} but {baseline!r} does not; per-seed savings pair the two by seed")
        rows.append(_seed_row(str(name), seed, part.sort_values("round"), base[seed], baseline))
    return pd.DataFrame(rows)


def _seed_row(name: str, seed, curve: pd.DataFrame, base: pd.DataFrame, baseline: str) -> dict:
    target, base_labels = float(base["test_accuracy"].iloc[-1]), float(base["n_labels"].iloc[-1])
    need = labels_to_reach(curve["n_labels"], curve["test_accuracy"], target)
    joined = curve.merge(base, on="round", suffixes=("", "_base"))
    later = joined[joined["round"] > joined["round"].min()]  # round 0 is the shared seed set
    return {
        "strategy": name, "seed": seed, "final_labels": float(curve["n_labels"].iloc[-1]),
        "final_accuracy": float(curve["test_accuracy"].iloc[-1]), f"{baseline}_final_accuracy": target,
        "accuracy_gap": float(curve["test_accuracy"].iloc[-1]) - target,
        "mean_accuracy_gap": float((later["test_accuracy"] - later["test_accuracy_base"]).mean()) if len(later) else float("nan"),
        f"labels_to_reach_{baseline}_final": need, f"share_of_{baseline}_labels": need / base_labels, "reached": bool(need == need),
    }


def budget_comparison(curves: pd.DataFrame, budgets, match_at, baseline: str = "random") -> pd.DataFrame:
    """Each (strategy, seed) against the baseline's curve of the same seed, at fixed label budgets.

    One row per (strategy, seed): `acc@N` (the accuracy measured at exactly N labels, NaN when the curve has
    no such point), `gap@N` (minus the baseline's at N), and for each M in `match_at` the labels the strategy
    needed to reach the baseline's accuracy at M labels (`need@M`, linear between points, NaN if never) and
    that as a share of M (`share@M`). Budgets are label counts (e.g. 10, 20, 50 for 1, 2, 5 per class of ten).
    Points without an accuracy (a cold start's round 0: no model yet) are left out of the curves.
    """
    _check_curves(curves)
    budgets, match_at = [int(b) for b in budgets], [int(m) for m in match_at]
    measured = curves[curves["test_accuracy"].notna()]
    if baseline not in set(measured["strategy"]):
        raise KibbleError(f"no {baseline!r} curve to compare against; run the baseline arm too")
    at = {key: dict(zip(part["n_labels"].astype(int), part["test_accuracy"].astype(float)))
          for key, part in measured.groupby(["strategy", "seed"], sort=True)}
    rows = []
    for (name, seed), part in measured.groupby(["strategy", "seed"], sort=True):
        base = at.get((baseline, seed))
        if base is None:
            raise KibbleError(f"strategy {name!r} has seed {seed} but {baseline!r} does not; budgets are compared seed by seed")
        mine, row = at[(name, seed)], {"strategy": str(name), "seed": seed}
        for b in budgets:
            row[f"acc@{b}"] = mine.get(b, np.nan)
            row[f"gap@{b}"] = mine.get(b, np.nan) - base.get(b, np.nan)
        part = part.sort_values("n_labels")
        for m in match_at:
            need = labels_to_reach(part["n_labels"], part["test_accuracy"], base[m]) if m in base else np.nan
            row[f"need@{m}"], row[f"share@{m}"] = need, need / m
        rows.append(row)
    return pd.DataFrame(rows)


def seed_summary(per_seed: pd.DataFrame, baseline: str = "random", alpha: float = 0.05) -> pd.DataFrame:
    """Mean and sample std over seeds of per_seed_savings: per strategy the share of the baseline's labels
    needed to reach its final accuracy (over the seeds that reached it; `n_reached` of `n_seeds` say how
    many), and the final and mean-over-rounds accuracy gaps with a paired t-test against the baseline
    (`*_p`; `*_verdict` is "tie" when p > alpha, i.e. the gap is within the seeds' spread)."""
    share, need = f"share_of_{baseline}_labels", f"labels_to_reach_{baseline}_final"
    missing = [c for c in ("strategy", "seed", "accuracy_gap", "mean_accuracy_gap", share, need, "final_accuracy") if c not in per_seed.columns]
    if missing:
        raise KibbleError(f"seed_summary needs the columns of per_seed_savings; missing {missing}")
    rows = []
    for name, part in per_seed.groupby("strategy", sort=False):
        reached = part[part[share].notna()]
        row = {"strategy": name, "n_seeds": int(part["seed"].nunique()), "n_reached": int(len(reached)),
               f"{share}_mean": _mean(reached[share]), f"{share}_std": _std(reached[share]),
               f"{need}_mean": _mean(reached[need]), f"{need}_std": _std(reached[need]),
               "final_accuracy_mean": _mean(part["final_accuracy"]), "final_accuracy_std": _std(part["final_accuracy"])}
        for gap in ("accuracy_gap", "mean_accuracy_gap"):
            p = paired_p(part[gap].to_numpy(float)) if name != baseline else float("nan")
            row |= {f"{gap}_mean": _mean(part[gap]), f"{gap}_std": _std(part[gap]), f"{gap}_p": p,
                    f"{gap}_verdict": "" if name == baseline else ("tie" if not p <= alpha else ("better" if part[gap].mean() > 0 else "worse"))}
        rows.append(row)
    return pd.DataFrame(rows)


def paired_p(differences) -> float:
    """Two-sided p-value of a paired t-test on per-seed differences (H0: mean difference 0).

    With one seed there is no spread to test against (NaN); with zero spread, 0 when every difference
    has the same non-zero sign and 1 when they are all zero."""
    d = np.asarray(differences, dtype=np.float64)
    d = d[~np.isnan(d)]
    if len(d) < 2:
        return float("nan")
    if np.std(d) == 0:
        return 1.0 if d[0] == 0 else 0.0
    from scipy import stats

    return float(stats.ttest_1samp(d, 0.0).pvalue)


def _mean(values: pd.Series) -> float:
    return float(values.mean()) if len(values) else float("nan")


def _std(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def curves_figure(curves: pd.DataFrame, title: str = "accuracy vs labels"):
    """A matplotlib figure: mean test accuracy vs labels per strategy, shaded +- 1 std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mean = mean_curves(curves)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, part in mean.groupby("strategy", sort=True):
        part = part.sort_values("round")
        style = "--" if name == "random" else "-"
        ax.plot(part["n_labels"], part["accuracy"], style, marker="o", ms=3, label=name)
        std = part["std"].fillna(0.0)
        ax.fill_between(part["n_labels"], part["accuracy"] - std, part["accuracy"] + std, alpha=0.15)
    ax.set_xlabel("labelled training images")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig
