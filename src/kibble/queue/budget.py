"""One round's annotation budget, split between relabelling (train rows) and new labels (pool rows).

`strategy.budget` is either a number (the relabel budget alone, as before) or a mapping:

    budget: {relabel: 100, new: 200}            # counts
    budget: {relabel: 0.05, new: 0.1}           # fractions: of the round's train rows / of the pool
    budget: {total: 300, relabel: 0.25, new: 0.75}   # shares of one total (a count)

so a team decides where its annotation hours go. A new-label budget larger than the pool is an
error (there is nothing to label), not silently clipped.

    budget: {total: 300, split: value}          # split by expected value (kibble.queue.value_budget)

lets the round decide: each side's items are valued (calibrated correction chance vs a new label's
worth) and the total goes to the best; until earlier rounds' reviews exist to calibrate on, the shares
(`relabel`/`new`, default half and half) are used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kibble import KibbleError
from kibble.queue.builder import resolve_budget

KEYS = ("relabel", "new", "total", "split", "value")


@dataclass(frozen=True)
class BudgetSplit:
    relabel: int
    new: int

    @property
    def total(self) -> int:
        return self.relabel + self.new


def _count(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise KibbleError(f"budget.{what}={value!r}; give a count (e.g. 100) or a fraction (e.g. 0.1)")
    return value


def split_budget(budget: Any, n_train: int, n_pool: int) -> BudgetSplit:
    """Resolve `budget` (a number or a {relabel, new[, total]} mapping) into item counts."""
    if budget is None:
        return BudgetSplit(0, 0)
    if not isinstance(budget, Mapping):
        return BudgetSplit(resolve_budget(budget, n_train), 0)
    unknown = sorted(set(budget) - set(KEYS))
    if unknown:
        raise KibbleError(f"budget has unknown key(s) {unknown}; use {list(KEYS)}, e.g. budget={{relabel: 100, new: 200}}")
    relabel = _count(budget.get("relabel") or 0, "relabel")
    new = _count(budget.get("new") or 0, "new")
    if budget.get("split") == "value":
        return _value_fallback(budget, relabel, new, n_pool)
    total = budget.get("total")
    if total is not None:
        total = int(_count(total, "total"))
        shares = [v for v in (relabel, new) if v]
        if all(isinstance(v, float) and v <= 1 for v in shares):
            if relabel + new > 1 + 1e-9:
                raise KibbleError(f"budget.relabel + budget.new = {relabel + new:g} > 1; shares of budget.total must sum to at most 1")
            n_relabel = int(round(relabel * total))
            n_new = min(int(round(new * total)), total - n_relabel)
        else:
            n_relabel, n_new = int(relabel), int(new)
            if n_relabel + n_new > total:
                raise KibbleError(f"budget.relabel + budget.new = {n_relabel + n_new} exceeds budget.total={total}")
    else:
        n_relabel = resolve_budget(relabel, n_train)
        n_new = resolve_budget(new, n_pool)
    if n_new > n_pool:
        raise KibbleError(f"budget.new={n_new} is larger than the pool ({n_pool} unlabeled images); lower budget.new or add images to the pool")
    return BudgetSplit(int(n_relabel), int(n_new))


def _value_fallback(budget: Mapping, relabel: float, new: float, n_pool: int) -> BudgetSplit:
    """budget.split=value before there are reviews to calibrate on: `relabel`/`new` as shares of `total` when both
    are fractions (<= 1), else half and half (a count such as conf/strategy/active.yaml's `new: 100` is not a share
    of a total); new labels never more than the pool holds, the rest to relabelling (the pool drains over rounds)."""
    from kibble.queue.value_budget import value_settings

    value_settings(budget)  # budget.total a count, known keys: the value mode's own checks
    total = int(budget["total"])
    shares = (relabel, new) if all(isinstance(v, float) and v <= 1 for v in (relabel, new)) and relabel + new > 0 else (0.5, 0.5)
    if sum(shares) > 1 + 1e-9:
        raise KibbleError(f"budget.relabel + budget.new = {sum(shares):g} > 1; shares of budget.total must sum to at most 1")
    wanted_new = int(round(shares[1] * total))
    n_new = min(wanted_new, int(n_pool))
    n_relabel = total - n_new if n_new < wanted_new else min(int(round(shares[0] * total)), total - n_new)
    return BudgetSplit(n_relabel, n_new)
