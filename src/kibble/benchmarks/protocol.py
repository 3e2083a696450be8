"""The benchmark protocol in code: defaults chosen on dev settings only, by their worst case, then scored on test.

A table of results has one row per (setting, seed, ranking) with the ranking's `family` and a metric
column. `choose` picks, within one family, the ranking whose WORST dev setting is best, measured
relative to the best any ranking reached there (so a hard setting does not drown the others): real
label noise is unlike any one injected kind, and a ranking that wins on average over flips can lose
on human labels. The same rule picks kibble's default and cleanlab's headline. Test settings are
never seen by `choose`; `oracle` (picked with the truth, per test setting) exists to be labelled as
such, never as a headline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from kibble import KibbleError


def seed_means(table: pd.DataFrame, metric: str = "AUPRC") -> pd.DataFrame:
    """Mean over seeds: one row per (setting, ranking, family)."""
    return table.groupby(["setting", "ranking", "family"], sort=False)[metric].mean().reset_index()


def relative_to_best(table: pd.DataFrame, settings: list[str], metric: str = "AUPRC") -> pd.DataFrame:
    """settings x ranking: each ranking's seed-mean metric divided by the best ranking's on that setting."""
    means = seed_means(table[table["setting"].isin(settings)], metric)
    wide = means.pivot(index="ranking", columns="setting", values=metric)[settings]
    return wide / wide.max(axis=0)


def choose(table: pd.DataFrame, dev_settings: list[str], family: str, metric: str = "AUPRC") -> tuple[str, pd.DataFrame]:
    """(chosen ranking of `family`, the family's dev scoreboard: worst and mean relative score per ranking).

    Worst case first; ties go to the better mean, then to the earlier ranking in the table."""
    if table.empty or not dev_settings:
        raise KibbleError("choose: no dev results")
    missing = set(dev_settings) - set(table["setting"])
    if missing:
        raise KibbleError(f"choose: dev settings {sorted(missing)} have no results")
    rel = relative_to_best(table, dev_settings, metric)
    names = [n for n in dict.fromkeys(table.loc[table["family"] == family, "ranking"]) if n in rel.index]
    if not names:
        raise KibbleError(f"choose: no ranking of family {family!r}")
    board = pd.DataFrame({"worst": rel.loc[names].min(axis=1), "mean": rel.loc[names].mean(axis=1)})
    board["order"] = np.arange(len(board))
    board = board.sort_values(["worst", "mean", "order"], ascending=[False, False, True]).drop(columns="order")
    return str(board.index[0]), board


def oracle(table: pd.DataFrame, setting: str, family: str, metric: str = "AUPRC") -> tuple[str, float]:
    """The family's best ranking on `setting` by its seed mean, picked WITH the truth (report as oracle only)."""
    means = seed_means(table[(table["setting"] == setting) & (table["family"] == family)], metric)
    best = means.loc[means[metric].idxmax()]
    return str(best["ranking"]), float(best[metric])


def paired(table: pd.DataFrame, setting: str, a: str, b: str, metric: str = "AUPRC") -> dict[str, float]:
    """a vs b on one setting, paired by seed (same noise draw and folds): means, stds, the mean difference,
    its standard deviation, how many seeds a won, and a verdict that calls a difference within the seeds'
    spread a tie."""
    rows = table[table["setting"] == setting]
    va = rows[rows["ranking"] == a].set_index("seed")[metric]
    vb = rows[rows["ranking"] == b].set_index("seed")[metric]
    seeds = sorted(set(va.index) & set(vb.index))
    if not seeds:
        raise KibbleError(f"paired: no common seeds for {a!r} and {b!r} on {setting!r}")
    x, y = va.loc[seeds].to_numpy(float), vb.loc[seeds].to_numpy(float)
    diff = x - y
    sd = float(diff.std(ddof=1)) if len(seeds) > 1 else float("nan")
    if len(seeds) > 1 and sd > 0:
        p = float(stats.ttest_rel(x, y).pvalue)
    else:
        p = 0.0 if diff.mean() != 0 and np.all(np.sign(diff) == np.sign(diff.mean())) else 1.0
    wins = int((diff > 0).sum())
    verdict = "tie" if p > 0.05 else ("win" if diff.mean() > 0 else "loss")
    return {"a_mean": float(x.mean()), "a_std": float(x.std(ddof=1)) if len(x) > 1 else float("nan"),
            "b_mean": float(y.mean()), "b_std": float(y.std(ddof=1)) if len(y) > 1 else float("nan"),
            "diff": float(diff.mean()), "diff_std": sd, "wins": wins, "seeds": len(seeds), "p": p, "verdict": verdict}


def mean_std(values) -> str:
    """'0.9512 ± 0.0031' (sample std over seeds)."""
    v = np.asarray(list(values), dtype=float)
    return f"{v.mean():.4f} ± {v.std(ddof=1):.4f}" if len(v) > 1 else f"{v.mean():.4f}"
