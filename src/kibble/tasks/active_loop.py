"""`kibble loop mode=active`: active learning from a small labelled seed set, measured against random.

For each seed and each arm (the configured strategy, then the baseline `random`), a copy of the
workspace under `W/active/<arm>/seed<S>/` runs `active.rounds` rounds of: train a head (features
mode, the same Lightning path as `kibble train`/`kfold`) on every labelled train image -> test
accuracy -> predict the pool -> the strategy picks `active.batch_size` images (or that round's entry of a
per-round list, see batch_schedule) -> a kind=new queue
(queue.csv + Label Studio tasks) -> the simulated annotator labels it -> `merge` (the pool rows
join train). A last training measures the final batch. From zero labels (`pool.labels_per_class=0`)
round 0 has no model: its batch comes from a model-free strategy (the arm's own, or `active.cold_start`
for an arm that needs a model) and its accuracy is NaN in curves.csv. Both arms share the seeds (same seed set,
same initialisation streams), so the curves differ only by the selection.

Every measured round also gets its accuracy gain per 100 labels with a paired-bootstrap band over the
test items, and the expected gain of the next round (kibble.metrics.stopping). With `stop.min_gain`
set, an (arm, seed) stops once even the upper end of that expected gain's band is below it: no more
batches are picked, one log line says why, and the round's metrics.json and curves.csv's
`stop_reason` keep it. Each arm and seed stops on its own curve, as a labelling campaign would; a
stopped run drops out of the later rounds' means (gains.csv's n_seeds) and of savings.csv's finals.

Outputs in `W/active/`: curves.csv (strategy, seed, round, n_labels, test_accuracy, gains and their
bands, stop_reason), gains.csv (per strategy and round, the mean gain over seeds with its band),
savings.csv, curves.png and report.html. The source workspace itself is never modified.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from kibble import KibbleError
from kibble.data.classes import ClassList
from kibble.data.datamodule import trainable_rows
from kibble.data.manifest import load_manifest
from kibble.io import atomic_write_csv
from kibble.metrics.learning_curve import CURVE_COLUMNS, savings_table
from kibble.metrics.stopping import EXPECTED_COLUMNS, GAIN_COLUMNS, check_settings, expected_gain, pooled_gains, round_gains, stop_reason
from kibble.paths import Workspace
from kibble.queue.formats import write_queue_files
from kibble.queue.new_labels import build_new_queue, pool_rows, score_pool
from kibble.rounds import update_round_metrics
from kibble.strategies.active_registry import get_active_strategy, model_free, needs, strategy_at
from kibble.strategies.transfer import HeldOut
from kibble.training.build import attach_features, build_data_and_model, build_trainer, features_mode, predict_rows, restore_best
from kibble.labels.merge import merge_reviews

log = logging.getLogger(__name__)
COPIED = ("manifest.parquet", "classes.yaml", "label_events.parquet")


def check_setup(cfg: DictConfig, manifest: pd.DataFrame, source: str) -> dict[str, Any]:
    """Validate everything before the first training: strategy names, pool size vs budget, truth, test rows."""
    act = cfg.active
    arms = [*strategies_of(act), str(act.baseline)]
    for name in arms:
        get_active_strategy(name)
    if not features_mode(cfg):
        raise KibbleError("kibble loop mode=active trains a head per round on cached embeddings; add model=features (or experiment=active_digits)")
    if "true_label" not in manifest.columns:
        raise KibbleError(f"{source}: no true_label column; the simulated annotator needs it (import with pool.labels_per_class=N or pool.fraction=F)")
    pool = pool_rows(manifest, source)
    batches = batch_schedule(act)
    rounds = len(batches)
    if sum(batches) > len(pool):
        asked = f"active.batch_size={batches} asks for {sum(batches)}" if is_list(act.batch_size) else f"active.batch_size x active.rounds = {sum(batches)}"
        raise KibbleError(f"{asked} new labels but the pool holds only {len(pool)} unlabeled images; "
                          "lower them or import with a larger pool (pool.fraction / pool.labels_per_class)")
    if pool["true_label"].isna().any():
        sid = pool.loc[pool["true_label"].isna(), "sample_id"].iloc[0]
        raise KibbleError(f"{source}: pool row {sid!r} has no true_label; the simulated annotator cannot label it")
    if eval_split(manifest) is None:
        raise KibbleError(f"{source}: no labelled test (or val) rows to measure accuracy on; import with source.test_fraction > 0")
    min_gain, window, _ = stop_settings(cfg)
    if min_gain is not None and window > rounds:
        raise KibbleError(f"stop.window={window} needs {window + 1} measured rounds but active.rounds={rounds} gives at most {rounds + 1} "
                          "(one of them the last); lower stop.window or raise active.rounds")
    if not trainable_rows(manifest).any():
        check_cold_start(act, arms, source)
    if any("held_out" in needs(n) for n in arms) and not float(cfg.data.get("inner_val_fraction") or 0) > 0:
        raise KibbleError("atl_uncertainty learns where the model errs from labelled images it did not train on; "
                          "set data.inner_val_fraction (e.g. 0.2) so each round holds some out")
    return {"n_pool": len(pool), "n_seed_labels": int(trainable_rows(manifest).sum())}


def check_cold_start(act: DictConfig, arms: list[str], source: str) -> None:
    """Zero labels: round 0 has no model, so its batch needs a model-free strategy (own or active.cold_start)."""
    cold = act.get("cold_start")
    if cold is not None and not model_free(str(cold)):
        raise KibbleError(f"active.cold_start={cold!r} needs a model; use a model-free strategy (typiclust, probcover, kmeans, "
                          "representative, atl_representative, random)")
    if cold is None:
        for name in arms:
            if not model_free(name):
                raise KibbleError(f"{source}: no labelled train rows, so round 0 has no model and strategy {name!r} needs one; "
                                  "use a cold-start strategy (active.strategy=typiclust or probcover) or set active.cold_start=typiclust")


def is_list(value: Any) -> bool:
    """A config list (ListConfig) or a plain list/tuple: several strategies, or one batch size per round."""
    return OmegaConf.is_list(value) or isinstance(value, (list, tuple))


def batch_schedule(act: DictConfig) -> list[int]:
    """New labels per round: `active.batch_size` for each of `active.rounds` rounds, or a list with one size per
    round (its length is then the number of rounds, e.g. [10, 10, 30, 50, 100] reaches 1, 2, 5, 10 and 20
    labels per class of ten classes from zero), so a learning curve can be dense where labels are few."""
    value = act.batch_size
    if is_list(value):
        batches = list(value)
        if not batches:
            raise KibbleError("active.batch_size=[]: give one size for every round, or a single size with active.rounds")
    else:
        rounds = act.rounds
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise KibbleError(f"active.rounds={rounds!r}; give a whole number of rounds >= 1")
        batches = [value] * rounds
    if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batches):
        raise KibbleError(f"active.batch_size={value!r}; every round's batch must be a whole number >= 1")
    return [int(b) for b in batches]


def stop_settings(cfg: DictConfig) -> tuple[float | None, int, float]:
    """`stop.min_gain` (accuracy points per 100 labels; null: never stop early), `stop.window`, `stop.level`."""
    stop = cfg.get("stop") or {}
    return check_settings(stop.get("min_gain"), stop.get("window", 2), stop.get("level", 0.9))


def strategies_of(act: DictConfig) -> list[str]:
    """active.strategy: one name or a list (each runs as its own arm beside the baseline)."""
    value = act.strategy
    return [str(v) for v in value] if is_list(value) else [str(value)]


def eval_split(manifest: pd.DataFrame) -> str | None:
    """Accuracy is measured on the test split, else val (e.g. Imagewoof ships train/ and val/)."""
    for split in ("test", "val"):
        if ((manifest["split"] == split) & manifest["label"].notna()).any():
            return split
    return None


def make_arm(source: Workspace, root: Path) -> Workspace:
    """A fresh copy of the source workspace's label state (images stay where they are)."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for name in COPIED:
        if (source.root / name).is_file():
            shutil.copy2(source.root / name, root / name)
    arm = Workspace(root)
    arm.update_state(round=0, data_root=str(source.data_root.resolve()))
    return arm


class ArmRunner:
    """One arm (strategy) x one seed: rounds of train -> select -> annotate -> merge."""

    def __init__(self, cfg: DictConfig, ws: Workspace, strategy: str, seed: int, features: tuple[list[str], np.ndarray]):
        self.cfg = cfg.copy()
        with open_dict(self.cfg):
            self.cfg.workspace = str(ws.root)
            self.cfg.seed = int(seed)
        self.ws, self.strategy, self.seed = ws, strategy, int(seed)
        self.ids, self.matrix = features
        self.position = {s: i for i, s in enumerate(self.ids)}
        self.classes = ClassList.load(ws.classes)
        self.annotator = hydra.utils.instantiate(cfg.annotator, seed=int(seed))
        act = cfg.active
        self.params = OmegaConf.to_container(act.params, resolve=True) if act.get("params") else {}
        self.mc_passes = int(act.get("mc_passes", 20))
        self.cold_start = str(act.get("cold_start") or strategy) if not model_free(strategy) else strategy
        self.min_gain, self.window, self.level = stop_settings(cfg)
        self.correct: dict[int, np.ndarray] = {}  # round -> per-test-item correctness (rounds with a model)
        self.test_ids: list[str] | None = None

    def train(self, round_index: int):
        L.seed_everything(self.seed * 1000 + round_index, workers=True, verbose=False)
        dm = hydra.utils.instantiate(self.cfg.data)
        dm.attach_features(self.ids, self.matrix)
        dm, model = build_data_and_model(self.cfg, dm=dm)
        # standardise with every image's embedding (no labels used): a seed set of a few images per class
        # gives near-zero spreads for some features, and the head then blows up on new images
        model.set_feature_stats(torch.from_numpy(np.ascontiguousarray(self.matrix, dtype=np.float32)))
        out = self.ws.round_dir(round_index) / "train"
        checkpoint = any(c is not None and str(c.get("_target_", "")).endswith("ModelCheckpoint") for c in (self.cfg.get("callbacks") or {}).values())
        trainer = build_trainer(self.cfg, out, with_logger=False, has_val=len(dm.val_rows) > 0, enable_progress_bar=False, enable_checkpointing=checkpoint)
        trainer.fit(model, datamodule=dm)
        restore_best(trainer, model)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        return dm, model.eval()

    def accuracy(self, dm, model) -> np.ndarray:
        """Per test item: did the model get it right (the same items, in the same order, every round)."""
        split = eval_split(dm.manifest)
        test = dm.manifest[(dm.manifest["split"] == split) & dm.manifest["label"].notna()]
        probs = predict_rows(model, dm, test, self.cfg.trainer)["probs"]
        y = np.array([self.classes.index[l] for l in test["label"]])
        self.test_ids = test["sample_id"].astype(str).tolist()
        return probs.argmax(1) == y

    def gains(self, rows: list[dict[str, Any]]) -> dict[str, float]:
        """The last round's gain per 100 labels and the expected gain of the next, each with its band."""
        labels = [row["n_labels"] for row in rows]
        correct = [self.correct.get(row["round"]) for row in rows]
        seed = self.seed * 1000 + len(rows)
        last = round_gains(labels, correct=correct, level=self.level, seed=seed)[-1]
        expected = expected_gain(labels, correct=correct, window=self.window, level=self.level, seed=seed)
        return {**dict(zip(GAIN_COLUMNS, (last.value, last.low, last.high))),
                **dict(zip(EXPECTED_COLUMNS, (expected.value, expected.low, expected.high))), "_expected": expected}

    def select(self, dm, model, manifest: pd.DataFrame, round_index: int, batch: int) -> pd.DataFrame:
        """The round's new-label queue; model=None (no labels yet): the cold-start strategy, without probabilities."""
        labelled = manifest[trainable_rows(manifest)]
        # a switch (typiclust:margin@5) picks by the labels there are; no model yet: the cold-start strategy
        name = strategy_at(self.strategy if model is not None else self.cold_start, len(labelled), len(self.classes.names))
        pool = pool_rows(manifest, str(self.ws.manifest))
        embeddings = self.rows_of(pool)
        probs = predict_rows(model, dm, pool, self.cfg.trainer)["probs"].astype(np.float64) if model is not None else None
        mc = held_out = None
        if name == "bald":
            from kibble.models.mc_dropout import mc_dropout_probs

            mc = mc_dropout_probs(model, embeddings, passes=self.mc_passes, seed=self.seed * 1000 + round_index)
        if "held_out" in needs(name) and len(dm.val_rows):  # labelled images this round's model did not train on
            val = dm.val_rows
            held_out = HeldOut(self.rows_of(val), np.array([self.classes.index[l] for l in val["label"]]),
                               predict_rows(model, dm, val, self.cfg.trainer)["probs"].astype(np.float64))
        severity = self.classes.severity_matrix(self.ws.root) if name == "expected_cost" else None
        outputs = score_pool([name], probs, embeddings=embeddings, mc_probs=mc, severity=severity, batch_size=batch,
                             seed=self.seed * 1000 + round_index, params={name: self.params.get(name, {})},
                             labelled_embeddings=self.rows_of(labelled), held_out=held_out,
                             n_classes=len(self.classes.names))
        return build_new_queue(pool, outputs, self.classes.names, batch, round_index=round_index)

    def rows_of(self, rows: pd.DataFrame) -> np.ndarray:
        """The cached embeddings of manifest rows, in row order."""
        return self.matrix[[self.position[s] for s in rows["sample_id"]]]

    def run(self, batches: list[int], progress=None) -> list[dict[str, Any]]:
        """len(batches) selection rounds (round r picks batches[r] images), then a last training."""
        rows, rounds = [], len(batches)
        for r in range(rounds + 1):
            round_dir = self.ws.round_dir(r)
            before = load_manifest(self.ws.manifest, self.classes.names)  # training and selection leave it as is
            n_labels = int(trainable_rows(before).sum())
            dm, model = self.train(r) if n_labels else (None, None)  # a cold start: no labels, no model yet
            if model is not None:
                self.correct[r] = self.accuracy(dm, model)
            acc = float(self.correct[r].mean()) if r in self.correct else float("nan")
            row = {"strategy": self.strategy, "seed": self.seed, "round": r, "n_labels": n_labels, "test_accuracy": acc}
            row |= self.gains([*rows, row])
            expected = row.pop("_expected")
            reason = stop_reason(expected, self.min_gain, self.window) if r < rounds else None  # the last round picks nothing anyway
            if reason:
                row["stop_reason"] = f"stopped after round {r} ({n_labels} labels): {reason}"
                log.info("%s seed %d: %s", self.strategy, self.seed, row["stop_reason"])
            if r < rounds and not reason:
                queue = self.select(dm, model, before, r, batches[r])
                write_queue_files(queue, round_dir, self.classes, data_root=self.ws.data_root, model_version=f"kibble-active-{r:03d}")
                reviews = self.annotator.review(queue, before, self.classes.names)
                atomic_write_csv(round_dir / "reviews.csv", reviews)
                merged = merge_reviews(self.ws, reviews, source="simulated", round_index=r, policy=OmegaConf.to_container(self.cfg.policy, resolve=True), origin=str(round_dir / "reviews.csv"))
                row["queue_size"] = int(len(queue))
                row["pool_labelled"] = merged["n_pool_labelled"]
            measured = {k: v for k, v in row.items() if k != "round" and not (isinstance(v, float) and np.isnan(v))}  # no model: no accuracy
            update_round_metrics(round_dir, {"round": r, "mode": "active", **measured})
            rows.append(row)
            if progress is not None:
                progress(rounds - r + 1 if reason else 1)  # a stop skips the remaining trainings
            if reason:
                break
        return rows


def run(cfg: DictConfig) -> dict[str, Any]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    ws = Workspace(cfg.workspace).require()
    classes = ClassList.load(ws.classes)
    manifest = load_manifest(ws.manifest, classes.names)
    info = check_setup(cfg, manifest, str(ws.manifest))
    act = cfg.active
    arms = list(dict.fromkeys([*strategies_of(act), str(act.baseline)]))
    seeds = [int(s) for s in act.seeds]
    batches = batch_schedule(act)
    rounds = len(batches)
    out_dir = ws.root / "active"

    dm = hydra.utils.instantiate(cfg.data)  # embed (or read the cache) once for every arm
    attach_features(cfg, dm)
    features = (list(dm.features), dm.matrix.numpy())

    curves: list[dict[str, Any]] = []
    correct: dict[tuple[str, int, int], np.ndarray] = {}
    test_ids: list[str] | None = None
    with Progress(TextColumn("[bold]active learning"), BarColumn(), TextColumn("{task.completed}/{task.total} trainings"), TimeElapsedColumn(),
                  disable=not act.get("progress", True)) as progress:
        task = progress.add_task("arms", total=len(arms) * len(seeds) * (rounds + 1))
        for seed in seeds:
            for arm in arms:
                arm_ws = make_arm(ws, out_dir / arm / f"seed{seed}")
                runner = ArmRunner(cfg, arm_ws, arm, seed, features)
                curves += runner.run(batches, progress=lambda n=1: progress.advance(task, n))
                atomic_write_csv(out_dir / "curves.csv", pd.DataFrame(curves))
                if test_ids is not None and runner.test_ids is not None and runner.test_ids != test_ids:
                    raise KibbleError(f"{arm} seed {seed}: its test items differ from the first arm's; the arms must share one test split")
                test_ids = test_ids or runner.test_ids
                correct |= {(arm, seed, r): c for r, c in runner.correct.items()}
    frame = pd.DataFrame(curves)
    if "stop_reason" not in frame.columns:
        frame["stop_reason"] = ""
    frame["stop_reason"] = frame["stop_reason"].fillna("")
    atomic_write_csv(out_dir / "curves.csv", frame)
    savings = savings_table(frame[CURVE_COLUMNS], baseline=str(act.baseline))
    atomic_write_csv(out_dir / "savings.csv", savings)
    min_gain, window, level = stop_settings(cfg)
    gains = pooled_gains(frame, correct, level=level)
    atomic_write_csv(out_dir / "gains.csv", gains)
    stops = frame.loc[frame["stop_reason"] != "", ["strategy", "seed", "round", "n_labels", "test_accuracy", "stop_reason"]]
    from kibble.report.active import write_active_report

    report = write_active_report(out_dir, frame, savings, title=f"active learning: {', '.join(arms[:-1]) or act.baseline} vs {act.baseline}",
                                 gains=gains, stop={"min_gain": min_gain, "window": window, "level": level})
    print(savings.to_string(index=False))
    for stop in stops.itertuples():
        print(f"{stop.strategy} seed {stop.seed}: {stop.stop_reason}")
    return {"curves": str(out_dir / "curves.csv"), "savings": savings.to_dict("records"), "gains": str(out_dir / "gains.csv"),
            "stops": stops.to_dict("records"), "report": str(report), **info}
