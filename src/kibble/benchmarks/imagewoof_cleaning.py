"""Imagewoof label-cleaning benchmarks: workspaces with injected noise, their k-fold rounds, and the noise settings.

Noise settings are split by the protocol (kibble.benchmarks.protocol): DEV settings may choose
defaults; TEST settings are only reported. Every setting takes a seed, which draws the noise (where
the noise is random) and the fold split, so results come with a spread.

dev:  random5, random25 (uniform flips; seed 0 is fastai's official noisy_imagewoof.csv column, other
      seeds a fresh draw of the same recipe); lookalike20 (flips to the most probable wrong breed under
      kibble's OWN clean-label OOF: the detector's pipeline made the noise).
test: random50; pairs25 (class-conditional swaps between look-alike breeds fixed in PAIRS, 25 % of each
      breed); crowd (one label per image from five simulated annotators with their own confusion
      matrices, erring on images that are hard for an independent model); imagenet20 (flips to the most
      probable wrong breed under the backbone's ImageNet head, a head trained on other labels than ours).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kibble import KibbleError
from kibble.benchmarks import ImagewoofBench

DEV_SETTINGS = ["random5", "random25", "lookalike20"]
TEST_SETTINGS = ["random50", "pairs25", "crowd", "imagenet20"]
FASTAI_COLUMNS = {"random5": "noisy_labels_5", "random25": "noisy_labels_25", "random50": "noisy_labels_50"}
# look-alike breed pairs, fixed before any run (coat, build and size; one pair per breed)
PAIRS = [("beagle", "English_foxhound"), ("Australian_terrier", "Border_terrier"), ("golden_retriever", "Rhodesian_ridgeback"),
         ("Shih-Tzu", "Old_English_sheepdog"), ("Samoyed", "dingo")]
CROWD_ERROR_RATES = (0.05, 0.10, 0.15, 0.25, 0.40)


@dataclass
class RoundArrays:
    """A finished round's OOF aligned with the truth: sample ids, given and true class indices, probs, embeddings."""

    sample_id: np.ndarray
    given: np.ndarray
    truth: np.ndarray
    probs: np.ndarray
    embedding: np.ndarray
    metrics: dict = field(default_factory=dict)

    @property
    def is_noisy(self) -> np.ndarray:
        return self.given != self.truth


class CleaningBench:
    """Workspaces of one benchmark run under <work>/cleaning: the import once, then one copy per (setting, seed)."""

    def __init__(self, setup: ImagewoofBench, extra: list[str] | None = None):
        self.setup = setup
        self.base = setup.work / "cleaning"
        self.extra = list(extra or [])
        self.round_seconds: list[float] = []

    def common(self, ws: Path) -> list[str]:
        return [f"workspace={ws}", f"paths.cache_dir={self.setup.cache}", f"paths.effnet_lite0={self.setup.weights}"]

    def kfold_overrides(self, ws: Path, seed: int) -> list[str]:
        return [*self.common(ws), "experiment=imagewoof_features", "cv.save_embeddings=true", "cv.progress=false",
                "cv.predict_splits=[val]", f"seed={seed}", *self.extra]

    def import_clean(self) -> tuple[Path, pd.DataFrame]:
        """Import Imagewoof once (image_folder source, the library path `kibble import` takes); the settings'
        workspaces copy its files."""
        import hydra

        from kibble.config import compose_config
        from kibble.data.manifest import load_manifest
        from kibble.data.reimport import apply_import, plan_import
        from kibble.paths import Workspace

        ws = self.base / "imported"
        if not (ws / "manifest.parquet").is_file():
            cfg = compose_config("import", ["source=image_folder", f"source.root={self.setup.root}", *self.common(ws)])
            frame, names, display, data_root = hydra.utils.instantiate(cfg.source)
            plan = plan_import(Workspace(ws), frame, names, display, data_root, mode="new", source="source ImageFolder",
                               on_bad_image=cfg.on_bad_image, taxonomy=cfg.get("taxonomy", "auto"), origin=cfg.source._target_)
            apply_import(Workspace(ws), plan)
        return ws, load_manifest(ws / "manifest.parquet")

    def make_workspace(self, name: str, imported: Path, manifest: pd.DataFrame, noisy: pd.Series) -> Path:
        """A fresh workspace whose train labels are `noisy` (class names by sample_id), truth in `true_label`."""
        from kibble.data.manifest import save_manifest
        from kibble.io import atomic_write_parquet
        from kibble.labels.history import initial_events

        ws = self.base / name
        shutil.rmtree(ws, ignore_errors=True)
        ws.mkdir(parents=True)
        for f in ("classes.yaml", "state.json", "import_report.json"):
            shutil.copy2(imported / f, ws / f)
        frame = manifest.copy()
        frame["true_label"] = frame["label"]
        hit = frame["sample_id"].isin(noisy.index)
        frame.loc[hit, "label"] = frame.loc[hit, "sample_id"].map(noisy).to_numpy()
        save_manifest(frame, ws / "manifest.parquet")
        atomic_write_parquet(ws / "label_events.parquet", initial_events(frame))  # the noisy label is the import's
        return ws

    def kfold_round(self, ws: Path, rnd: int, seed: int, extra: list[str] | None = None, queue: bool = False) -> dict:
        from kibble.config import compose_config
        from kibble.training.round import run_round  # what `kibble kfold` runs on one device

        overrides = [*self.kfold_overrides(ws, seed), f"round={rnd}", "round_callbacks.report=null", *(extra or [])]
        if not queue:
            overrides.append("round_callbacks.queue=null")
        start = time.perf_counter()
        result = run_round(compose_config("kfold", overrides))
        self.round_seconds.append(time.perf_counter() - start)
        return result


def load_round(ws: Path, rnd: int) -> RoundArrays:
    """OOF arrays of a finished round, aligned with the manifest's truth."""
    from kibble.data.classes import ClassList
    from kibble.data.manifest import load_manifest
    from kibble.predictions.store import read_store, stack

    classes = ClassList.load(ws / "classes.yaml")
    oof, _ = read_store(ws / "rounds" / f"{rnd:03d}" / "oof.parquet", classes.names)
    manifest = load_manifest(ws / "manifest.parquet").set_index("sample_id")
    index = classes.index
    given = np.array([index[v] for v in oof["given_label"]], dtype=np.int64)
    truth = np.array([index[v] for v in manifest.loc[oof["sample_id"], "true_label"]], dtype=np.int64)
    metrics = json.loads((ws / "rounds" / f"{rnd:03d}" / "metrics.json").read_text())
    return RoundArrays(oof["sample_id"].to_numpy(), given, truth, stack(oof).astype(np.float64), stack(oof, "embedding"), metrics)


def imagenet_head_probs(setup: ImagewoofBench, sample_ids: np.ndarray, wnids: list[str]) -> np.ndarray:
    """Softmax over our classes of the backbone's own ImageNet classifier, applied to the cached pooled
    features: an independent model (trained on ImageNet's labels, not on this workspace's)."""
    import torch
    from timm.data import ImageNetInfo

    from kibble.data.feature_files import read_cache

    # the lite0 cache at its native 224 px (other backbones' caches may sit beside it: scripts/bench_backbones.py)
    folders = [p for p in setup.cache.glob("*/tf_efficientnet_lite0-*") if (p / "chunks").is_dir()
               and json.loads((p / "meta.json").read_text()).get("data_config", {}).get("input_size") == [3, 224, 224]]
    if len(folders) != 1:
        raise KibbleError(f"expected one 224 px tf_efficientnet_lite0 feature cache under {setup.cache}; found {len(folders)}")
    rows, features, _ = read_cache(folders[0])
    where = pd.Series(np.arange(len(rows)), index=rows["sample_id"].astype(str))
    missing = set(map(str, sample_ids)) - set(where.index)
    if missing:
        raise KibbleError(f"{len(missing)} samples are not in the feature cache")
    weights = torch.load(setup.weights, map_location="cpu")
    columns = [ImageNetInfo().label_names().index(w) for w in wnids]
    x = torch.from_numpy(np.asarray(features[where.loc[list(map(str, sample_ids))].to_numpy()], dtype=np.float32))
    logits = x @ weights["classifier.weight"][columns].T + weights["classifier.bias"][columns]
    return torch.softmax(logits.double(), dim=1).numpy()


def breed_pairs(root: Path, names: list[str]) -> list[tuple[int, int]]:
    """PAIRS as class indices, through the data set's classes.csv (wnid -> breed)."""
    breeds = pd.read_csv(root / "classes.csv").set_index("breed")["wnid"]
    index = {n: i for i, n in enumerate(names)}
    return [(index[breeds[a]], index[breeds[b]]) for a, b in PAIRS]


def noisy_labels(setting: str, seed: int, truth: np.ndarray, names: list[str], *, fastai: pd.Series | None = None,
                 clean_probs: np.ndarray | None = None, imagenet_probs: np.ndarray | None = None,
                 pairs: list[tuple[int, int]] | None = None) -> np.ndarray:
    """Class indices of the noisy train labels of `setting` under `seed` (truth: the clean class indices).

    fastai: the official noisy column for this setting (class names), in truth's order (used for seed 0);
    clean_probs: kibble's clean-label OOF (lookalike20); imagenet_probs: the ImageNet head (crowd,
    imagenet20); pairs: the look-alike pairs as class indices (pairs25, see breed_pairs)."""
    from kibble.noise import crowd_labels, lookalike_flips, pair_swaps, uniform_flips

    k = len(names)
    if setting in FASTAI_COLUMNS:
        rate = int(setting.removeprefix("random")) / 100
        if seed == 0 and fastai is not None:
            index = {n: i for i, n in enumerate(names)}
            return np.array([index[v] for v in fastai], dtype=np.int64)
        return uniform_flips(truth, k, rate, seed=seed)[0]
    if setting == "lookalike20":
        return lookalike_flips(truth, _need(clean_probs, setting), 0.20, seed=seed)[0]
    if setting == "imagenet20":
        return lookalike_flips(truth, _need(imagenet_probs, setting), 0.20, seed=seed)[0]
    if setting == "pairs25":
        if not pairs:
            raise KibbleError("noise setting pairs25 needs the look-alike pairs")
        return pair_swaps(truth, pairs, 0.25, seed=seed)[0]
    if setting == "crowd":
        return crowd_labels(truth, _need(imagenet_probs, setting), CROWD_ERROR_RATES, seed=seed)[0]
    raise KibbleError(f"unknown noise setting {setting!r}; valid: {DEV_SETTINGS + TEST_SETTINGS}")


def _need(probs: np.ndarray | None, setting: str) -> np.ndarray:
    if probs is None:
        raise KibbleError(f"noise setting {setting} needs its source model's probabilities")
    return probs
