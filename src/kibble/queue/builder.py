"""Queue building: strategy scores -> one ranked, budgeted, de-duplicated relabel queue."""

from __future__ import annotations

import hashlib
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from kibble import KibbleError
from kibble.queue.formats import QUEUE_COLUMNS as FORMAT_COLUMNS
from kibble.strategies.base import StrategyOutput
from kibble.values import is_in, positions

QUEUE_COLUMNS = [*FORMAT_COLUMNS, "kind"]  # the file contract (queue/formats.py) + relabel|new
SETTLED_VERDICTS = ("confirmed", "corrected", "ambiguous", "out_of_scope")
HUMAN_SOURCES = ("review", "expert", "vendor", "simulated")


def resolve_budget(budget: int | float, n_candidates: int) -> int:
    """An int is a count; a float in (0, 1) is a fraction of the candidates."""
    if isinstance(budget, bool) or budget is None or budget < 0:
        raise KibbleError(f"queue budget={budget!r}; give a count (e.g. 100) or a fraction of train (e.g. 0.1)")
    if isinstance(budget, float) and budget < 1:
        return int(round(budget * n_candidates))
    return int(budget)


def settled_samples(events: pd.DataFrame, manifest: pd.DataFrame) -> set[str]:
    """Samples a human already reviewed whose label has not changed since that review."""
    if events is None or events.empty:
        return set()
    human = events[events["source"].isin(HUMAN_SOURCES) & events["verdict"].isin(SETTLED_VERDICTS)]
    if human.empty:
        return set()
    human = human.assign(_order=np.arange(len(human)))
    last = human.sort_values(["round", "_order"]).groupby("sample_id").tail(1).set_index("sample_id")
    # column-wise (10^5 reviewed samples in a 10^6-row manifest): the answer each last review gave, and the label now
    verdict = last["verdict"].astype(str).to_numpy(dtype=object)
    answer = np.where(np.isin(verdict, ("confirmed", "corrected")), last["label"].to_numpy(dtype=object),
                      last["previous_label"].to_numpy(dtype=object))
    where = positions(last.index.to_numpy(dtype=object), manifest["sample_id"])
    known = where >= 0
    current = np.full(len(last), None, dtype=object)
    current[known] = manifest["label"].to_numpy(dtype=object)[where[known]]
    keep = known & (np.isin(verdict, ("ambiguous", "out_of_scope")) | (current == answer))
    return set(last.index.to_numpy(dtype=object)[keep].tolist())


def allocate_quotas(names: Sequence[str], budget: int, quotas: Mapping[str, float] | None) -> dict[str, int]:
    """Split the budget between strategies (fractions; default equal shares), summing to budget."""
    if not names:
        raise KibbleError("queue: no strategies configured; set queue.strategies (e.g. [kfold, self_confidence])")
    if quotas:
        unknown = set(quotas) - set(names)
        if unknown:
            raise KibbleError(f"queue.quotas names {sorted(unknown)} which are not in queue.strategies {list(names)}")
        weights = np.array([float(quotas.get(n, 0.0)) for n in names])
    else:
        weights = np.ones(len(names))
    if weights.sum() <= 0:
        raise KibbleError("queue.quotas must give some strategy a positive share")
    raw = weights / weights.sum() * budget
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: budget - counts.sum()]:
        counts[i] += 1
    return dict(zip(names, counts.tolist()))


def _order(output: StrategyOutput, sample_ids: np.ndarray, exclude: np.ndarray) -> np.ndarray:
    """Flagged, eligible rows by descending score; ties broken by sample_id (deterministic)."""
    candidates = np.flatnonzero(output.flagged & ~exclude & np.isfinite(output.score))
    keys = np.lexsort((sample_ids[candidates], -output.score[candidates]))
    return candidates[keys]


def build_queue(
    sample_ids: Sequence[str],
    given_labels: Sequence[str],
    outputs: Mapping[str, StrategyOutput],
    class_names: Sequence[str],
    budget: int,
    round_index: int = 0,
    quotas: Mapping[str, float] | None = None,
    suppress: set[str] | None = None,
    paths: Sequence[str] | None = None,
    kind: str = "relabel",
) -> pd.DataFrame:
    """Each strategy fills its quota with its best flagged rows not already taken; leftover budget goes
    round-robin to the strategies' next best. Rows picked by several strategies keep all reasons."""
    sample_ids = np.asarray(sample_ids, dtype=object)
    names = list(outputs)
    exclude = is_in(sample_ids, list(suppress or ())) if suppress else np.zeros(len(sample_ids), dtype=bool)
    text_ids = sample_ids.astype(str)
    orders = {n: _order(outputs[n], text_ids, exclude) for n in names}
    rank_in = {}  # each strategy's rank of a row (its position in that strategy's order): 10^6-row rounds look it up 10^5 times
    for n in names:
        rank_in[n] = np.full(len(sample_ids), -1, dtype=np.int64)
        rank_in[n][orders[n]] = np.arange(len(orders[n]))
    quota = allocate_quotas(names, budget, quotas)
    taken: dict[int, list[str]] = {}
    cursor = {n: 0 for n in names}

    def take(name: str) -> bool:
        order = orders[name]
        while cursor[name] < len(order):
            row = int(order[cursor[name]])
            cursor[name] += 1
            if row not in taken:
                taken[row] = [name]
                return True
        return False

    is_taken = np.zeros(len(sample_ids), dtype=bool)
    for name in names:  # each strategy's quota: its best rows not taken before it (what `take` would pick, in one pass)
        if quota[name] <= 0:
            continue
        free = np.flatnonzero(~is_taken[orders[name]])[: quota[name]]
        picked = orders[name][free]
        is_taken[picked] = True
        taken.update((int(row), [name]) for row in picked)
        cursor[name] = int(free[-1]) + 1 if len(free) == quota[name] else len(orders[name])
    while len(taken) < budget and any(take(n) for n in names if len(taken) < budget):
        pass
    # every strategy that ranks a taken row within its own top-`budget` adds its reason
    for name in names:
        for row in orders[name][:budget]:
            if int(row) in taken and name not in taken[int(row)]:
                taken[int(row)].append(name)

    frame = _queue_rows(taken, names, outputs, rank_in, sample_ids, given_labels, paths, class_names)
    # interleave strategies by their own rank so the top of the queue mixes every strategy's best
    frame = frame.sort_values(["_rank_in", "_pos", "sample_id"], kind="stable").drop(columns=["_pos", "_rank_in"]).reset_index(drop=True)
    frame.insert(0, "rank", np.arange(1, len(frame) + 1))
    frame.insert(0, "round", int(round_index))
    frame.insert(0, "queue_id", [queue_id(round_index, s, kind) for s in frame["sample_id"].to_numpy(dtype=object)])
    frame["kind"] = kind
    return frame[QUEUE_COLUMNS]


def _queue_rows(taken: dict[int, list[str]], names: list[str], outputs: Mapping[str, StrategyOutput], rank_in: dict[str, np.ndarray],
                sample_ids: np.ndarray, given_labels: Sequence[str], paths: Sequence[str] | None, class_names: Sequence[str]) -> pd.DataFrame:
    """One row per taken row (its claimants in order: the first one's score and rank; the first suggestion any of
    them makes; every claimant's reason), built a claimant depth at a time, not row by row (10^5-item queues)."""
    rows = np.fromiter(taken, dtype=np.int64, count=len(taken))
    depth = max((len(c) for c in taken.values()), default=0)
    pos = {n: i for i, n in enumerate(names)}
    claimant = np.full((depth, len(rows)), -1, dtype=np.int64)  # claimant[d, i]: the d-th strategy that claims row i
    lists = list(taken.values())
    if depth:
        claimant[0] = [pos[c[0]] for c in lists]
    for i in (i for i, c in enumerate(lists) if len(c) > 1):
        claimant[1:len(lists[i]), i] = [pos[n] for n in lists[i][1:]]
    score, rank, suggestion = np.zeros(len(rows)), np.zeros(len(rows), dtype=np.int64), np.full(len(rows), -1, dtype=np.int64)
    reasons = np.full(len(rows), "", dtype=object)
    for d in range(depth):
        for p, name in enumerate(names):
            here = np.flatnonzero(claimant[d] == p)
            if not len(here):
                continue
            out, at = outputs[name], rows[here]
            if d == 0:
                score[here], rank[here] = out.score[at], rank_in[name][at]
            open_ = suggestion[here] < 0
            suggestion[here[open_]] = out.suggested[at[open_]]
            reasons[here] = reasons[here] + np.array([f"{'; ' if d else ''}{name} {v:.3f}" for v in out.score[at]], dtype=object)
    names_of = np.append(np.asarray(class_names, dtype=object), None)  # suggestion -1 -> None
    return pd.DataFrame({
        "sample_id": sample_ids[rows].astype(str).astype(object),
        "path": None if paths is None else _cells(paths, rows).astype(str).astype(object),
        "given_label": _cells(given_labels, rows),
        "suggested_label": names_of[np.where(suggestion >= 0, suggestion, -1)],
        "score": score.astype(float),
        "strategy": np.asarray(names, dtype=object)[claimant[0]] if depth else np.array([], dtype=object),
        "reason": reasons, "_pos": claimant[0] if depth else np.array([], dtype=np.int64), "_rank_in": rank,
    }, columns=["sample_id", "path", "given_label", "suggested_label", "score", "strategy", "reason", "_pos", "_rank_in"])


def _cells(values: Sequence[Any] | pd.Series, rows: np.ndarray) -> np.ndarray:
    """values[rows] as objects; a Series (e.g. an Arrow-backed column of 10^6 paths) converts only those cells."""
    if isinstance(values, pd.Series):
        return values.iloc[rows].to_numpy(dtype=object)
    return np.asarray(values, dtype=object)[rows]


def queue_id(round_index: int, sample_id: str, kind: str = "relabel") -> str:
    """Stable id of a queue item: the same sample queued in the same round gets the same id."""
    digest = hashlib.sha1(f"{round_index}|{kind}|{sample_id}".encode()).hexdigest()[:10]
    return f"r{int(round_index):03d}-{digest}"
