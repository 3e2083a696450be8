"""Annotator quality: accuracy on gold items, agreement on overlapping items, speed, flags, vote weights.

Pure functions over a reviews table (`REVIEW_COLUMNS`: one row per annotator answer) and a gold
table (`sample_id, gold_label`). They write nothing; `labels/merge.py` calls `annotator_quality`
after ingesting reviews and records the result in the events and `rounds/NNN/annotator_quality.json`.

Why log-odds weights: for a K-class vote where an annotator is right with probability p and
otherwise picks a wrong class uniformly, the Bayes-optimal weighted vote gives that annotator the
weight log((K-1) p / (1-p)) (Nitzan & Paroush 1982; the "one-coin" Dawid-Skene model). p is the
annotator's gold accuracy with a Laplace prior, (correct + 1) / (n + 2), so a handful of gold
answers cannot give an infinite weight; an annotator no better than chance gets weight 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any
from itertools import combinations

import numpy as np
import pandas as pd

from kibble import KibbleError
from kibble.values import map_distinct

QUALITY_COLUMNS = [
    "annotator", "n_answers", "gold_n", "gold_correct", "gold_accuracy", "weight",
    "kappa_mean", "agreement_with_others", "answers_per_hour", "flagged", "flag_reason",
]
LABEL_VERDICTS = ("confirmed", "corrected")
_TAG = re.compile(r"\s*\[kibble (?P<body>[^\]]*)\]\s*$")


# ------------------------------------------------------------------------------ validation
def _check_reviews(reviews: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("sample_id", "label", "verdict", "annotator") if c not in reviews.columns]
    if missing:
        raise KibbleError(f"annotator quality: reviews lack column(s) {missing}; pass a reviews table (REVIEW_COLUMNS)")
    bad = reviews["annotator"].isna() | (reviews["annotator"].astype(str).str.strip() == "")
    if bad.any():
        sid = reviews.loc[bad, "sample_id"].iloc[0]
        raise KibbleError(f"annotator quality: the answer for sample {sid!r} has no annotator id; every answer must name who gave it")
    return reviews


def answer_value(verdict: str, label) -> str | None:
    """What an answer says, as one nominal category: the class, `<ambiguous>`, `<out_of_scope>`; skipped -> None."""
    if verdict in LABEL_VERDICTS:
        return None if label is None or (isinstance(label, float) and math.isnan(label)) else str(label)
    if verdict in ("ambiguous", "out_of_scope"):
        return f"<{verdict}>"
    return None


def answer_values(verdicts: pd.Series, labels: pd.Series) -> np.ndarray:
    """`answer_value` of every row, column-wise (10^5-answer rounds); equal to it row by row (tests check)."""
    verdict = map_distinct(verdicts, str, missing="nan")
    label = map_distinct(labels, lambda v: None if isinstance(v, float) and math.isnan(v) else str(v))
    out = np.full(len(verdict), None, dtype=object)
    says_label = np.isin(verdict, LABEL_VERDICTS)
    out[says_label] = label[says_label]
    other = np.isin(verdict, ("ambiguous", "out_of_scope"))
    out[other] = "<" + verdict[other] + ">"
    return out


def answer_matrix(reviews: pd.DataFrame) -> pd.DataFrame:
    """items x annotators of nominal answers (None = did not answer / skipped); items are sample_ids."""
    reviews = _check_reviews(reviews)
    frame = pd.DataFrame({"sample_id": reviews["sample_id"].astype(str), "annotator": reviews["annotator"].astype(str),
                          "value": answer_values(reviews["verdict"], reviews["label"])})
    frame = frame.dropna(subset=["value"]).drop_duplicates(["sample_id", "annotator"], keep="last")
    if frame.empty:
        return pd.DataFrame()
    return frame.pivot(index="sample_id", columns="annotator", values="value")


# ---------------------------------------------------------------------------------- gold
def gold_accuracy(reviews: pd.DataFrame, gold: pd.DataFrame) -> pd.DataFrame:
    """Per annotator: gold answers, correct ones, accuracy. A skip does not count; ambiguous is not correct."""
    reviews = _check_reviews(reviews)
    cols = ["annotator", "gold_n", "gold_correct", "gold_accuracy"]
    if gold is None or gold.empty:
        return pd.DataFrame(columns=cols)
    truth = dict(zip(gold["sample_id"].astype(str), gold["gold_label"].astype(str)))
    rows = []
    for who, part in reviews.groupby(reviews["annotator"].astype(str), sort=True):
        on_gold = part[part["sample_id"].astype(str).isin(truth) & (part["verdict"].astype(str) != "skipped")]
        n = len(on_gold)
        correct = int(sum(answer_value(str(v), lab) == truth[str(s)] for s, v, lab in zip(on_gold["sample_id"], on_gold["verdict"], on_gold["label"])))
        rows.append({"annotator": who, "gold_n": n, "gold_correct": correct, "gold_accuracy": correct / n if n else float("nan")})
    return pd.DataFrame(rows, columns=cols)


def log_odds_weight(correct: int, n: int, n_classes: int) -> float:
    """log((K-1) p / (1-p)) with p = (correct+1)/(n+2), floored at 0 (see the module docstring)."""
    if n_classes < 2:
        raise KibbleError(f"n_classes={n_classes}; weights need at least 2 classes")
    if not 0 <= correct <= n:
        raise KibbleError(f"gold correct={correct} out of n={n}; correct must be between 0 and n")
    p = (correct + 1.0) / (n + 2.0)
    return max(math.log((n_classes - 1) * p / (1.0 - p)), 0.0)


# ----------------------------------------------------------------------------- agreement
def cohen_kappa(a: Sequence, b: Sequence) -> float:
    """Cohen's kappa of two annotators' answers on the items both answered; nan if < 2 items.

    kappa = (p_o - p_e) / (1 - p_e), observed agreement against the agreement expected from each
    annotator's own answer frequencies: the formula of sklearn's `cohen_kappa_score` (unweighted),
    computed here in numpy because importing scikit-learn costs seconds on every merge that has
    overlapping answers (tests/annotation check both agree).
    """
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise KibbleError(f"cohen_kappa: {len(a)} vs {len(b)} answers; give both annotators' answers on the same items")
    if len(a) < 2:
        return float("nan")
    codes, _ = pd.factorize(pd.Series([str(v) for v in a + b]))
    return _kappa_of_codes(codes[: len(a)], codes[len(a):])


def _kappa_of_codes(x: np.ndarray, y: np.ndarray) -> float:
    """Cohen's kappa of two integer-coded answer vectors of equal length (categories >= 0)."""
    if len(x) < 2:
        return float("nan")
    k = int(max(x.max(), y.max())) + 1
    if len(np.union1d(x, y)) == 1:
        return 1.0  # perfect agreement on a single category (the formula is 0/0 here)
    observed = float(np.mean(x == y))
    expected = float(np.dot(np.bincount(x, minlength=k), np.bincount(y, minlength=k))) / len(x) ** 2
    return float((observed - expected) / (1.0 - expected)) if expected < 1.0 else float("nan")


def krippendorff_alpha(matrix: pd.DataFrame | np.ndarray) -> float:
    """Krippendorff's alpha, nominal metric, items x raters with missing values (None/nan).

    alpha = 1 - (n-1) * sum_{c!=k} o_ck / sum_{c!=k} n_c n_k, from the coincidence matrix o of
    the pairable values (items with at least two answers). nan when nothing is pairable; 1.0 when
    all pairable values are one category.
    """
    values = matrix.to_numpy(dtype=object) if isinstance(matrix, pd.DataFrame) else np.asarray(matrix, dtype=object)
    if values.ndim != 2:
        raise KibbleError(f"krippendorff_alpha: expected an items x raters table, got shape {values.shape}")
    present = ~pd.isna(values)
    codes, _ = pd.factorize(pd.Series([str(v) for v in values[present]], dtype=object))  # row-major: unit by unit
    units = np.nonzero(present)[0]
    per_unit = np.zeros((values.shape[0], max(int(codes.max()) + 1, 1) if len(codes) else 1))
    np.add.at(per_unit, (units, codes), 1.0)  # answers per (item, category): one array op, not a loop over items
    m = per_unit.sum(axis=1)
    per_unit, m = per_unit[m >= 2], m[m >= 2]  # pairable items only
    if not len(m):
        return float("nan")
    w = 1.0 / (m - 1.0)
    o = (per_unit * w[:, None]).T @ per_unit - np.diag((per_unit * w[:, None]).sum(axis=0))  # coincidence matrix
    n_c = o.sum(axis=1)
    n = n_c.sum()
    disagree_observed = o.sum() - np.trace(o)
    disagree_expected = n_c.sum() ** 2 - (n_c ** 2).sum()
    if disagree_expected == 0:
        return 1.0
    return float(1.0 - (n - 1.0) * disagree_observed / disagree_expected)


def agreement(reviews: pd.DataFrame) -> dict:
    """Agreement on items answered by several annotators.

    Returns {method, value, n_items, pairs: [{a, b, n_items, kappa}], per_annotator: {name: {kappa_mean,
    agreement_with_others}}}: Cohen's kappa with two annotators, Krippendorff's alpha (nominal)
    with more; pairwise kappas always; `agreement_with_others` is the share of an annotator's
    answers equal to the majority of the other annotators on that item (ties skipped).
    """
    matrix = answer_matrix(reviews)
    out: dict = {"method": None, "value": float("nan"), "n_items": 0, "pairs": [], "per_annotator": {}}
    if matrix.empty:
        return out
    shared = matrix[matrix.notna().sum(axis=1) >= 2]
    names = list(matrix.columns)
    out["n_items"] = int(len(shared))
    kappas: dict[str, list[float]] = {n: [] for n in names}
    values = shared.to_numpy(dtype=object)  # two annotators' common items all have >= 2 answers: `shared` holds them
    present = ~pd.isna(values)
    coded = np.full(values.shape, -1, dtype=np.int64)
    coded[present] = pd.factorize(pd.Series([str(v) for v in values[present]], dtype=object))[0]
    for (i, a), (j, b) in combinations(enumerate(names), 2):
        both = present[:, i] & present[:, j]
        kappa = _kappa_of_codes(coded[both, i], coded[both, j]) if both.any() else float("nan")
        out["pairs"].append({"a": a, "b": b, "n_items": int(both.sum()), "kappa": kappa})
        if not math.isnan(kappa):
            kappas[a].append(kappa)
            kappas[b].append(kappa)
    if len(names) == 2:
        out["method"], out["value"] = "cohen_kappa", out["pairs"][0]["kappa"]
    elif len(names) > 2:
        out["method"], out["value"] = "krippendorff_alpha", krippendorff_alpha(shared)
    long = shared.reset_index().melt(id_vars="sample_id", var_name="annotator", value_name="value").dropna(subset=["value"])
    # integer codes: the per-annotator group-bys below hash ints, not 10^5 strings each time
    long = pd.DataFrame({col: pd.factorize(long[col].astype(str).to_numpy(dtype=object))[0] for col in ("sample_id", "value")}
                        | {"annotator": long["annotator"].astype(str).to_numpy(dtype=object)})
    for name in names:
        agree, total = _agreement_with_others(long, name)
        out["per_annotator"][name] = {
            "kappa_mean": float(np.mean(kappas[name])) if kappas[name] else float("nan"),
            "agreement_with_others": agree / total if total else float("nan"),
        }
    return out


def _agreement_with_others(long: pd.DataFrame, name: str) -> tuple[int, int]:
    """(items where `name`'s answer equals the others' strict majority, items where the others have one).

    `long`: (sample_id, annotator, value) answers on shared items. Group-bys, not a loop over items:
    a 100,000-review merge assesses its round in well under a second.
    """
    mine = long[long["annotator"] == name].set_index("sample_id")["value"]
    others = long[(long["annotator"] != name) & long["sample_id"].isin(mine.index)]
    if others.empty:
        return 0, 0
    counts = others.groupby(["sample_id", "value"]).size().rename("n").reset_index().sort_values(["sample_id", "n"], ascending=[True, False], kind="stable")
    place = counts.groupby("sample_id").cumcount()
    top = counts[place == 0].set_index("sample_id")
    second = counts[place == 1].set_index("sample_id")["n"].reindex(top.index)
    top = top[~(second == top["n"]).to_numpy()]  # a tie among the others: no majority to agree with
    return int((mine.reindex(top.index) == top["value"]).sum()), int(len(top))


# --------------------------------------------------------------------------------- speed
def answers_per_hour(reviews: pd.DataFrame) -> pd.Series:
    """Per annotator: answers / hours spent, from `lead_time` seconds; nan when no answer has a time."""
    reviews = _check_reviews(reviews)
    if "lead_time" not in reviews.columns:
        return pd.Series(dtype=float)
    times = pd.to_numeric(reviews["lead_time"], errors="coerce")
    if (times < 0).any():
        raise KibbleError(f"lead_time {float(times[times < 0].iloc[0])} is negative; lead_time is seconds spent on an answer")
    timed = reviews.assign(_t=times).dropna(subset=["_t"])
    out = {}
    for who, part in timed.groupby(timed["annotator"].astype(str)):
        hours = part["_t"].sum() / 3600.0
        out[who] = len(part) / hours if hours > 0 else float("nan")
    return pd.Series(out, dtype=float)


# ------------------------------------------------------------------------------- summary
def annotator_quality(
    reviews: pd.DataFrame,
    gold: pd.DataFrame | None,
    n_classes: int,
    threshold: float = 0.8,
    min_gold: int = 5,
) -> tuple[pd.DataFrame, dict]:
    """One row per annotator (`QUALITY_COLUMNS`) plus the agreement summary.

    Flagged: at least `min_gold` gold answers and gold accuracy below `threshold`.
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise KibbleError(f"quality.threshold={threshold}; use an accuracy in [0, 1]")
    if int(min_gold) < 1:
        raise KibbleError(f"quality.min_gold={min_gold}; use at least 1 gold answer")
    reviews = _check_reviews(reviews)
    acc = gold_accuracy(reviews, gold if gold is not None else pd.DataFrame()).set_index("annotator")
    agree = agreement(reviews)
    speed = answers_per_hour(reviews)
    rows = []
    for who, part in reviews.groupby(reviews["annotator"].astype(str), sort=True):
        gold_n = int(acc.loc[who, "gold_n"]) if who in acc.index else 0
        correct = int(acc.loc[who, "gold_correct"]) if who in acc.index else 0
        accuracy = correct / gold_n if gold_n else float("nan")
        flagged = gold_n >= int(min_gold) and accuracy < float(threshold)
        per = agree["per_annotator"].get(who, {})
        rows.append({
            "annotator": who, "n_answers": int(len(part)), "gold_n": gold_n, "gold_correct": correct,
            "gold_accuracy": accuracy, "weight": log_odds_weight(correct, gold_n, n_classes),
            "kappa_mean": per.get("kappa_mean", float("nan")),
            "agreement_with_others": per.get("agreement_with_others", float("nan")),
            "answers_per_hour": float(speed.get(who, float("nan"))), "flagged": bool(flagged),
            "flag_reason": f"gold accuracy {accuracy:.2f} < {float(threshold):.2f} on {gold_n} gold items" if flagged else "",
        })
    return pd.DataFrame(rows, columns=QUALITY_COLUMNS), agree


# ------------------------------------------------------------------------ events' note tag
def quality_tag(row: dict | None, gold_item: bool = False) -> str:
    """The machine-readable suffix merge appends to an event's note, e.g. `[kibble weight=2.603 gold_accuracy=0.600 gold_n=12 flagged]`."""
    parts = []
    if row is not None and row.get("gold_n"):
        parts += [f"weight={row['weight']:.3f}", f"gold_accuracy={row['gold_accuracy']:.3f}", f"gold_n={int(row['gold_n'])}"]
        if row.get("flagged"):
            parts.append("flagged")
    if gold_item:
        parts.append("gold_item")
    return f"[kibble {' '.join(parts)}]" if parts else ""


def parse_tag(note) -> dict:
    """The tag's fields: {weight: float, flagged: bool, gold_item: bool}; {} without a tag."""
    if not isinstance(note, str):
        return {}
    match = _TAG.search(note)
    if not match:
        return {}
    out: dict = {"flagged": False, "gold_item": False}
    for token in match.group("body").split():
        key, _, value = token.partition("=")
        if value:
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = value
        else:
            out[key] = True
    return out


def human_note(note) -> str:
    """The note without kibble's quality tag: what the annotator wrote."""
    if not isinstance(note, str):
        return ""
    return _TAG.sub("", note).strip()


def human_notes(notes: Any) -> np.ndarray:
    """human_note of each note, computed once per distinct note (most notes repeat or are empty)."""
    return map_distinct(notes, human_note, missing=human_note(None))


def with_tag(note, tag: str) -> str:
    note = human_note(note)
    return f"{note} {tag}".strip() if tag else note
