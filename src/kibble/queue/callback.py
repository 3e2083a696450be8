"""The queue as a round callback: strategies over the round's OOF -> queue files in rounds/NNN/.

The scoring runs unlocked; reading the history (which samples are settled) and writing the round's
queue files run inside the workspace lock, so a merge cannot slip in between (`kibble.labels.lock`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from kibble import KibbleError
from kibble.data_issues import ISSUE_COLUMNS, ISSUES, find_data_issues, issue_queue_order
from kibble.metrics.detection import truth_aware_summary
from kibble.io import atomic_write_csv, atomic_write_parquet, remove_file
from kibble.queue.budget import BudgetSplit, split_budget
from kibble.queue.builder import QUEUE_COLUMNS, build_queue, queue_id, resolve_budget, settled_samples
from kibble.queue.formats import is_pushed, keep_queue_version, versioned_name, write_queue_files
from kibble.annotation.gold import GOLD_FILE, load_gold, normalise_gold, round_gold
from kibble.labels.history import load_events
from kibble.labels.lock import lock_timeout_of, workspace_transaction
from kibble.queue.new_labels import concat_queues, round_new_queue
from kibble.queue.value_budget import past_curve, past_outcomes, past_score_floors, split_by_value, value_settings
from kibble.rounds import RoundContext, update_round_metrics
from kibble.strategies.base import StrategyOutput
from kibble.values import positions
from kibble.strategies.registry import COMBINE, combine_spec, get_strategy, queue_needs_embeddings, run_combined, run_strategy, validate_inputs

log = logging.getLogger(__name__)


def truth_summary(ctx: RoundContext, outputs: dict[str, StrategyOutput], queue: pd.DataFrame,
                  gold_table: pd.DataFrame | None) -> dict[str, Any] | None:
    """Queue precision/recall and per-strategy detection when the manifest knows the true labels
    (benchmarks, injected noise, an audited `true_label` column); None otherwise. Gold rows and new-label
    items are not the strategies' picks, so they are left out."""
    if "true_label" not in ctx.manifest.columns:
        return None
    truth = ctx.manifest.set_index("sample_id")["true_label"].reindex(ctx.oof["sample_id"])
    known = truth.notna().to_numpy()
    if not known.any():
        return None
    is_noisy = known & (truth.fillna("").astype(str).to_numpy() != ctx.oof["given_label"].astype(str).to_numpy())
    gold_ids = set(gold_table["sample_id"].astype(str)) if gold_table is not None else set()
    picks = queue[(queue["kind"] != "new") & ~queue["sample_id"].astype(str).isin(gold_ids)]
    position = pd.Series(np.arange(len(ctx.oof)), index=ctx.oof["sample_id"].astype(str).to_numpy())
    rows = position.reindex(picks["sample_id"].astype(str)).dropna().astype(int).to_numpy()
    return truth_aware_summary(is_noisy, outputs, rows, known)


DATA_ISSUES_FILE = "data_issues.csv"
DATA_ISSUE_KEYS = ("budget", "checks", "queue", "near_duplicate_threshold", "outlier_k", "outlier_mads")
# Issues that enter the queue by default: near-certain image problems. near_duplicate and outlier are
# found and reported (and named in a relabel row's reason) but queued only when listed in `queue`: they
# are hints from a still-learning model's embeddings, and some data sets hold many legitimately
# near-identical images; by default they would displace label picks with unverified flags.
IMAGE_ISSUES = ("blank", "odd_size", "low_information")


def data_issue_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """`strategy.data_issues` checked: budget (a share of the queue budget in [0, 1), or a count), checks (found),
    queue (may enter the queue; default the image checks), thresholds."""
    settings = dict(settings or {})
    unknown = set(settings) - set(DATA_ISSUE_KEYS)
    if unknown:
        raise KibbleError(f"strategy.data_issues: unknown keys {sorted(unknown)}; use {list(DATA_ISSUE_KEYS)}")
    budget = settings.get("budget", 0.0)
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget < 0:
        raise KibbleError(f"strategy.data_issues.budget={budget!r}; give a share of the queue budget (e.g. 0.1) or a count (e.g. 20)")
    checks = list(ISSUES if settings.get("checks") is None else settings["checks"])  # [] = no checks (10^6-image rounds)
    unknown = set(checks) - set(ISSUES)
    if unknown:
        raise KibbleError(f"strategy.data_issues.checks names {sorted(unknown)}; use any of {list(ISSUES)}")
    queue = list(IMAGE_ISSUES if settings.get("queue") is None else settings["queue"])
    unknown = set(queue) - set(ISSUES)
    if unknown:
        raise KibbleError(f"strategy.data_issues.queue names {sorted(unknown)}; use any of {list(ISSUES)}")
    return {**settings, "budget": budget, "checks": checks, "queue": queue}


def data_issue_rows(ctx: RoundContext, issues: pd.DataFrame, n: int, suppress: set[str], queued: Sequence[str] = IMAGE_ISSUES) -> pd.DataFrame:
    """Up to n kind=data_issue queue rows for samples with a `queued` issue (first by priority; the reason names all)."""
    if int(n) <= 0 or issues.empty:
        return pd.DataFrame(columns=QUEUE_COLUMNS)
    order = issue_queue_order(issues[issues["issue"].isin(list(queued))], suppress).head(int(n))
    if order.empty:
        return pd.DataFrame(columns=QUEUE_COLUMNS)
    oof = ctx.oof.set_index(ctx.oof["sample_id"].astype(str))
    paths = ctx.manifest.set_index(ctx.manifest["sample_id"].astype(str))["path"]
    sid = order["sample_id"].astype(str)
    reasons = issue_queue_order(issues).set_index("sample_id")["reason"]
    order["reason"] = sid.map(reasons).to_numpy()
    return pd.DataFrame({
        "queue_id": [queue_id(ctx.round_index, s, "data_issue") for s in sid], "round": int(ctx.round_index),
        "rank": np.arange(1, len(order) + 1), "sample_id": sid.to_numpy(), "path": paths.reindex(sid).to_numpy(),
        "given_label": oof["given_label"].reindex(sid).to_numpy(), "suggested_label": None,
        "score": order["score"].astype(float).to_numpy(), "strategy": "data_issues", "reason": order["reason"].to_numpy(),
        "kind": "data_issue",
    })[QUEUE_COLUMNS]


def tag_data_issues(queue: pd.DataFrame, issues: pd.DataFrame, queued: Sequence[str] = IMAGE_ISSUES) -> pd.DataFrame:
    """Relabel rows of samples with a data issue name it in their reason; those with a `queued` issue
    (by default blank / odd-size / low-information: no relabelling fixes those images) become kind=data_issue."""
    if issues.empty or queue.empty:
        return queue
    order = issue_queue_order(issues).set_index("sample_id")
    queue = queue.copy()
    sid = queue["sample_id"].astype(str)
    hit = (queue["kind"] == "relabel") & sid.isin(order.index)
    if not hit.any():
        return queue
    queue.loc[hit, "reason"] = sid[hit].map(order["reason"]) + "; " + queue.loc[hit, "reason"].astype(str)
    image = hit & sid.isin(set(issues.loc[issues["issue"].isin(list(queued)), "sample_id"].astype(str)))
    queue.loc[image, "kind"] = "data_issue"
    queue.loc[image, "queue_id"] = [queue_id(int(r), s, "data_issue") for r, s in zip(queue.loc[image, "round"], sid[image])]
    return queue


class BuildQueue:
    """Rank the round's train samples with the configured strategies; write queue.csv + Label Studio files.

    budget: a count, or a fraction of the round's train samples. quotas: share of the budget per
    strategy (default equal). params: per-strategy keyword arguments, e.g. {neighbors: {k: 10}}.
    """

    def __init__(
        self,
        strategies: Sequence[str] = ("kfold", "self_confidence"),
        budget: int | float = 0.1,
        quotas: Mapping[str, float] | None = None,
        params: Mapping[str, Mapping[str, Any]] | None = None,
        image_url: Any = None,
        suppress_reviewed: bool = True,
        extra_strategies: Mapping[str, Any] | None = None,
        new_strategies: Sequence[str] = ("entropy",),
        new_params: Mapping[str, Mapping[str, Any]] | None = None,
        new_quotas: Mapping[str, float] | None = None,
        gold: Mapping[str, Any] | None = None,
        data_issues: Mapping[str, Any] | None = None,
    ):
        self.strategies = list(strategies)
        self.budget = budget
        self.quotas = dict(quotas) if quotas else None
        self.params = {k: dict(v) for k, v in (params or {}).items()}
        self.image_url = image_url
        self.suppress_reviewed = suppress_reviewed
        self.extra_strategies = dict(extra_strategies or {})
        # new labels for the unlabeled pool (issue 6): active strategies, used when budget.new > 0
        self.new_strategies = list(new_strategies)
        self.new_params = {k: dict(v) for k, v in (new_params or {}).items()}
        self.new_quotas = dict(new_quotas) if new_quotas else None
        # image / embedding problems (kibble.data_issues): always found and written; budget: their queue share
        self.data_issues = data_issue_settings(data_issues)
        self.gold = dict(gold) if gold else None  # gold questions hidden in the queue (issue 8, annotation/gold.py)
        value_settings(budget)  # a bad budget.split / budget.value fails here, before the round trains
        for name in self.strategies:  # a typo fails here, before the round trains, not after
            if name == COMBINE:
                combine_spec(self.params.get(COMBINE))
            elif name not in self.extra_strategies:
                get_strategy(name)

    @property
    def needs_embeddings(self) -> bool:
        """The round must store embeddings in its OOF (neighbors, or a combine with neighbors)."""
        return queue_needs_embeddings([n for n in self.strategies if n not in self.extra_strategies], self.params)

    def _trained_strategies(self) -> list[str]:
        """Strategies that train a model (precision with mode=train) rather than read the OOF."""
        return [n for n in self.strategies if n == "precision" and self.params.get(n, {}).get("mode", "renormalize") == "train"]

    def collective(self, ctx: RoundContext) -> None:
        """Every DDP rank runs this before rank 0 builds the queue: strategies that train do so under the
        folds' strategy, with all ranks in their collectives; their outputs wait in ctx.shared."""
        from kibble.strategies.trained import trained_precision

        for name in self._trained_strategies():
            params = {k: v for k, v in self.params.get(name, {}).items() if k != "mode"}
            ctx.shared[f"strategy:{name}"] = trained_precision(ctx, **params)

    def score(self, ctx: RoundContext) -> dict[str, StrategyOutput]:
        labels, probs, embeddings = ctx.given_indices(), ctx.probs(), ctx.embeddings()
        labels, probs = validate_inputs(self.strategies, labels, probs)  # once per round, not once per strategy
        if any(f"strategy:{n}" not in ctx.shared for n in self._trained_strategies()):
            self.collective(ctx)  # `kibble queue` and other single-process callers
        outputs = {}
        for name in self.strategies:
            if name == COMBINE:
                continue  # after its parts, which it may share with the other strategies
            params = {k: v for k, v in self.params.get(name, {}).items() if not (name == "precision" and k in ("mode", "max_classes"))}
            if f"strategy:{name}" in ctx.shared:
                outputs[name] = ctx.shared[f"strategy:{name}"]
            elif name in self.extra_strategies:  # strategies that need the round (e.g. precision with training)
                outputs[name] = self.extra_strategies[name](ctx, **self.params.get(name, {}))
            else:
                outputs[name] = run_strategy(name, labels, probs, embeddings, validated=True, **params)
        if COMBINE in self.strategies:
            mixed = run_combined(self.params.get(COMBINE), labels, probs, embeddings, self.params, outputs, validated=True)
            outputs = {n: mixed if n == COMBINE else outputs[n] for n in self.strategies}  # config order
        return outputs

    def find_issues(self, ctx: RoundContext) -> pd.DataFrame:
        """The round's data-issues table: image checks always, near-duplicates and outliers when the OOF has embeddings."""
        from kibble.data.manifest import resolve_image_path

        settings = {k: v for k, v in self.data_issues.items() if k not in ("budget", "queue")}
        files = None
        if set(settings["checks"]) & set(IMAGE_ISSUES):  # 10^6 rows: no path work when no image is checked
            paths = ctx.manifest["path"].to_numpy(dtype=object)[positions(ctx.oof["sample_id"], ctx.manifest["sample_id"])]
            root = ctx.workspace.data_root
            files = [Path("/nonexistent") if pd.isna(p) else resolve_image_path(str(p), root) for p in paths]
        return find_data_issues(ctx.oof["sample_id"].astype(str).tolist(), files, ctx.embeddings(),
                                image_cache=ctx.workspace.cache / "image_stats.parquet", **settings)

    def __call__(self, ctx: RoundContext) -> dict[str, Any]:
        outputs = self.score(ctx)
        issues = self.find_issues(ctx)
        cfg = ctx.cfg if ctx.cfg is not None else {}
        with workspace_transaction(ctx.workspace, f"kibble {cfg.get('task_name') or 'queue'}", lock_timeout_of(cfg)):  # all queue files or none
            return self._write(ctx, outputs, issues)

    def _split_by_value(self, ctx: RoundContext, outputs: dict[str, StrategyOutput], fixed: BudgetSplit, suppress: set[str],
                        settings: Mapping[str, Any], events: pd.DataFrame, n_pool: int) -> tuple[BudgetSplit, dict[str, Any]]:
        """budget.split=value: both sides' candidates for the whole total, valued (kibble.queue.value_budget);
        the fixed shares while earlier rounds hold too few answered relabel items to calibrate on."""
        earlier = [ctx.workspace.round_dir(r) for r in range(ctx.round_index)]
        outcomes = past_outcomes(earlier, events)
        if len(outcomes) < int(settings["min_reviews"]):
            return fixed, {"mode": "fixed", "relabel": fixed.relabel, "new": fixed.new,
                           "why": f"budget.split=value: earlier rounds hold {len(outcomes)} answered relabel items, fewer than "
                                  f"value.min_reviews={settings['min_reviews']} to calibrate on; the fixed shares were used"}
        total = int(self.budget["total"])
        relabel = build_queue(ctx.oof["sample_id"].to_numpy(dtype=object), ctx.oof["given_label"].reset_index(drop=True), outputs,
                              ctx.classes.names, total, round_index=ctx.round_index, quotas=self.quotas, suppress=suppress)
        new, new_outputs = round_new_queue(ctx, self.new_strategies, min(total, n_pool), self.new_params, self.new_quotas, suppress,
                                           seed=ctx.round_index) if n_pool else (relabel.iloc[:0], {})
        pool_mean = {name: float(out.score.mean()) for name, out in new_outputs.items() if len(out.score)}
        chosen = split_by_value(relabel, new, total, settings, outcomes, pool_mean, past_curve(earlier), past_score_floors(earlier))
        return BudgetSplit(chosen.relabel, chosen.new), chosen.info

    def _write(self, ctx: RoundContext, outputs: dict[str, StrategyOutput], issues: pd.DataFrame | None = None) -> dict[str, Any]:
        """The queue from the strategies' outputs, written to rounds/NNN/; the caller holds the workspace lock."""
        oof = ctx.oof
        events = load_events(ctx.workspace.label_events)
        suppress = settled_samples(events, ctx.manifest) if self.suppress_reviewed else set()
        n_pool = int((ctx.manifest["split"] == "pool").sum())
        split = split_budget(self.budget, len(oof), n_pool)
        split_info = None
        if (settings := value_settings(self.budget)) is not None:
            split, split_info = self._split_by_value(ctx, outputs, split, suppress, settings, events, n_pool)
        budget = split.relabel
        # the OOF rows' paths as a column (build_queue reads only the queued rows' cells): hashed in Arrow, no Python lists
        where = positions(oof["sample_id"], ctx.manifest["sample_id"])
        paths = ctx.manifest["path"].iloc[np.maximum(where, 0)].reset_index(drop=True).where(pd.Series(where >= 0), None)
        issues = issues if issues is not None else pd.DataFrame(columns=ISSUE_COLUMNS)
        share = self.data_issues["budget"]  # a share of the relabel budget: the queue keeps its size
        n_issue = min(budget, int(round(share * budget)) if isinstance(share, float) and share < 1 else resolve_budget(share, budget))
        issue_rows = data_issue_rows(ctx, issues, n_issue, suppress, self.data_issues["queue"])
        queue = build_queue(
            oof["sample_id"].to_numpy(dtype=object), oof["given_label"].reset_index(drop=True), outputs, ctx.classes.names, budget - len(issue_rows),
            round_index=ctx.round_index, quotas=self.quotas, suppress=suppress | set(issue_rows["sample_id"]), paths=paths,
        )
        queue = concat_queues(tag_data_issues(queue, issues, self.data_issues["queue"]), issue_rows)
        if split.new:  # one budget: relabel items, then new labels for pool images (kind=new)
            new_queue, _ = round_new_queue(ctx, self.new_strategies, split.new, self.new_params, self.new_quotas, suppress, seed=ctx.round_index)
            queue = concat_queues(queue, new_queue)
        gold_table = None
        if self.gold and normalise_gold(self.gold)["rate"] > 0:  # gold rows look like the others; only gold.csv says which
            queue, gold_table = round_gold(ctx, queue, self.gold)
        pushed = is_pushed(ctx.round_dir)  # in annotators' hands: the replaced version is kept beside the new one
        version = keep_queue_version(ctx.round_dir) if pushed else None
        files = write_queue_files(queue, ctx.round_dir, ctx.classes, self.image_url, data_root=ctx.workspace.data_root, model_version=f"kibble-round-{ctx.round_index:03d}")
        scores = pd.DataFrame({"sample_id": oof["sample_id"]})
        for name, out in outputs.items():
            scores[f"{name}_score"] = out.score.astype(np.float64)
            scores[f"{name}_flagged"] = out.flagged.astype(bool)
            scores[f"{name}_suggested"] = out.suggested.astype(np.int64)
        atomic_write_parquet(ctx.round_dir / "scores.parquet", scores)
        atomic_write_csv(ctx.round_dir / DATA_ISSUES_FILE, issues[ISSUE_COLUMNS])
        gold_path = ctx.round_dir / GOLD_FILE
        if pushed and gold_path.is_file() and gold_table is not None:  # answers to the old version's gold rows stay gold (never vote)
            gold_table = pd.concat([gold_table, load_gold([ctx.round_dir])], ignore_index=True).drop_duplicates("sample_id")
        if gold_table is not None:
            atomic_write_csv(gold_path, gold_table)
        elif not pushed:
            remove_file(gold_path)  # a rebuilt queue nobody was shown, without gold: no stale gold list
        summary = {
            "queue_size": int(len(queue)),
            "queue_budget": budget,
            "queue_suppressed": int(len(suppress)),
            "queue_by_strategy": queue["strategy"].value_counts().to_dict(),
            "data_issues": issues["issue"].value_counts().to_dict(),
            "queue_data_issue": int((queue["kind"] == "data_issue").sum()),
        }
        if version is not None:
            summary["queue_replaced_version"] = version
            log.info("round %d was pushed to Label Studio: the previous queue is kept as %s (and gold)", ctx.round_index,
                     versioned_name("queue.csv", version))
        if split.new:
            summary.update(queue_new=int((queue["kind"] == "new").sum()), queue_budget_new=split.new)
        if split_info is not None:
            summary["budget_split"] = split_info
            log.info("queue budget: %s", split_info["why"])
        truth = truth_summary(ctx, outputs, queue, gold_table)
        if truth is not None:
            summary["truth"] = truth
            log.info("queue vs true_label (%d train rows know it): precision %.3f, recall %.3f; AUPRC by strategy: %s",
                     truth["n_with_true_label"], truth["queue_precision"], truth["queue_recall"],
                     ", ".join(f"{n} {m['auprc']:.3f}" for n, m in truth["strategies"].items()))
        update_round_metrics(ctx.round_dir, summary)
        log.info("queue: %d items (budget %d, %d already reviewed suppressed) -> %s", len(queue), budget, len(suppress), files["csv"])
        return {**summary, "files": {k: str(v) for k, v in files.items()}}
