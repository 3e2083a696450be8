"""One Imagewoof label-cleaning benchmark run: the import, the ImageNet head, the clean rounds, and per
(noise setting, seed) a noisy workspace with its k-fold round, reused when a killed run resumes.

Shared by scripts/bench_cleaning.py (the rankers' dev/test protocol) and scripts/tune_features_head.py
(the features-mode head's regularisation, chosen on the same dev settings before the rankers are).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from kibble.benchmarks import imagewoof_bench
from kibble.benchmarks.imagewoof_cleaning import FASTAI_COLUMNS, CleaningBench, breed_pairs, imagenet_head_probs, load_round, noisy_labels


QUEUE_MARKER = "bench_queue.json"  # the queue config a benchmark round was built with
HEAD_KEYS = ("model", "embedder", "data", "callbacks", "trainer", "cv")


class CleaningRun:
    """The import, the ImageNet head, and per seed the clean round (the truth, and lookalike20's source).

    The clean rounds are the noise's source, not a result: once made they are kept whatever head config
    later runs use, so every head and ranking is scored on the same noisy labels."""

    def __init__(self, workdir: Path, extra: list[str] | None = None, prefix: str = ""):
        """extra: overrides every round takes; prefix: of every workspace name (a --quick smoke run keeps
        its short rounds, clean ones included, apart from the real run's)."""
        self.prefix = prefix
        self.setup = imagewoof_bench(workdir, "cleaning")
        if self.setup is None:
            return
        self.bench = CleaningBench(self.setup, extra)
        self.imported, self.manifest = self.bench.import_clean()
        from kibble.data.classes import ClassList

        self.names = ClassList.load(self.imported / "classes.yaml").names
        self.pairs = breed_pairs(self.setup.root, self.names)
        fastai_csv = self.setup.root / "noisy_imagewoof.csv"  # seed 0's random5/random25/random50 labels
        if not fastai_csv.is_file():
            print(f"SKIP: {fastai_csv} not found beside the Imagewoof images")
            self.setup = None
            return
        self.fastai = pd.read_csv(fastai_csv).set_index("path")
        self.paths = self.manifest.set_index("sample_id")["path"]
        self.clean: dict[int, object] = {}
        self.imagenet: pd.DataFrame | None = None
        self.reused = 0  # noisy rounds found finished (a resumed or repeated run): its wall time leaves them out

    def reusable(self, ws: Path, labels: pd.Series | None, queue: bool, extra: list[str] | None = None) -> bool:
        """A finished round of this run's set-up is reused (a killed benchmark resumes): same train labels,
        the same head config (model and callbacks, as `extra` overrides them), and, where its queue is
        scored, the same shipped strategy config."""
        from omegaconf import OmegaConf

        from kibble.data.manifest import load_manifest

        rdir = ws / "rounds" / "000"
        if not ((rdir / "oof.parquet").is_file() and (rdir / "metrics.json").is_file() and (ws / "manifest.parquet").is_file()):
            return False
        if labels is None:
            return True
        current = load_manifest(ws / "manifest.parquet").set_index("sample_id")["label"]
        if not current.reindex(labels.index).astype(str).equals(labels.astype(str)):
            return False
        if not (rdir / "config.yaml").is_file():
            return False
        saved = OmegaConf.to_container(OmegaConf.load(rdir / "config.yaml"), resolve=False)
        now = head_config(self.bench.kfold_overrides(ws, 0) + list(extra or []))
        if {k: saved.get(k) for k in now} != now:
            return False
        if queue:  # the round's config.yaml leaves the queue out (`kibble queue` merges it back): a sidecar of ours says
            marker = rdir / QUEUE_MARKER
            if not (rdir / "scores.parquet").is_file() or not marker.is_file():
                return False
            if json.loads(marker.read_text()) != queue_spec(shipped_strategy()):
                return False
        return True

    def clean_round(self, seed: int):
        if seed not in self.clean:
            ws = self.bench.base / f"{self.prefix}clean_s{seed}"
            if not self.reusable(ws, None, False):
                ws = self.bench.make_workspace(ws.name, self.imported, self.manifest, pd.Series(dtype=object))
                self.bench.kfold_round(ws, 0, seed)
            self.clean[seed] = load_round(ws, 0)
            print(f"seed {seed}: clean-label OOF accuracy {self.clean[seed].metrics['oof_accuracy_given']:.4f}")
        return self.clean[seed]

    def labels(self, setting: str, seed: int) -> tuple[pd.Series, int]:
        """(noisy train labels by sample_id as class names, how many are wrong) of `setting` under `seed`."""
        clean = self.clean_round(seed)
        ids = clean.sample_id
        if self.imagenet is None:
            self.imagenet = pd.DataFrame(imagenet_head_probs(self.setup, ids, self.names), index=ids)
        fastai = None
        if setting in FASTAI_COLUMNS:
            fastai = self.fastai.loc[self.paths.loc[ids], FASTAI_COLUMNS[setting]].to_numpy()
        noisy = noisy_labels(setting, seed, clean.truth, self.names, fastai=fastai, clean_probs=clean.probs,
                             imagenet_probs=self.imagenet.loc[ids].to_numpy(), pairs=self.pairs)
        return pd.Series([self.names[i] for i in noisy], index=ids), int((noisy != clean.truth).sum())

    def noisy_round(self, setting: str, seed: int, queue_budget: bool = False, name: str | None = None,
                    extra: list[str] | None = None, train_only: bool = False) -> tuple[Path, object]:
        """The finished round of `setting` under `seed` in workspace `name` (default <setting>_s<seed>),
        trained with the `extra` overrides; with queue_budget its queue (budget = the wrong labels) is built.
        train_only: the workspace holds the train rows alone (a new backbone then embeds only those)."""
        labels, n_wrong = self.labels(setting, seed)
        name = self.prefix + (name or f"{setting}_s{seed}")
        ws = self.bench.base / name
        if self.reusable(ws, labels, queue_budget, extra):
            print(f"{setting} seed {seed}: reusing the finished round in {ws}")
            self.reused += 1
            return ws, load_round(ws, 0)
        manifest = self.manifest[self.manifest["split"].astype(str) == "train"] if train_only else self.manifest
        ws = self.bench.make_workspace(name, self.imported, manifest, labels)
        budget = [f"strategy.budget={n_wrong}"] if queue_budget else []
        self.bench.kfold_round(ws, 0, seed, extra=[*(extra or []), *budget], queue=queue_budget)
        if queue_budget:
            (ws / "rounds" / "000" / QUEUE_MARKER).write_text(json.dumps(queue_spec(shipped_strategy())))
        return ws, load_round(ws, 0)


def open_run(workdir: Path, quick: bool, quick_epochs: int = 3) -> CleaningRun:
    """The run a benchmark script opens: a --quick smoke run trains `quick_epochs` epochs in quick_ workspaces."""
    return CleaningRun(workdir, [f"trainer.max_epochs={quick_epochs}"] if quick else [], prefix="quick_" if quick else "")


def queue_spec(strategy: dict) -> dict:
    """What decides a queue's ranking: strategies, quotas, params."""
    return {k: strategy.get(k) for k in ("strategies", "quotas", "params")}


def head_config(overrides: list[str]) -> dict:
    """The parts of a k-fold config that decide the OOF a round makes: model, embedder (the backbone), data,
    callbacks (early stopping, checkpoint pick), trainer (epochs) and cv (folds, predicted splits)."""
    from omegaconf import OmegaConf

    from kibble.config import compose_config

    cfg = compose_config("kfold", overrides)
    return {k: OmegaConf.to_container(cfg[k], resolve=False) for k in HEAD_KEYS}


def shipped_strategy() -> dict:
    """conf/strategy/default.yaml as `kibble kfold` composes it (unresolved)."""
    from omegaconf import OmegaConf

    from kibble.config import compose_config

    return OmegaConf.to_container(compose_config("kfold", []).strategy, resolve=False)


def head_summary(overrides: list[str] | None = None, with_backbone: bool = True) -> str:
    """One line on the head `experiment=imagewoof_features` trains (for a benchmark's notes); with_backbone=False
    leaves the embedder out (a note comparing backbones under the same head)."""
    cfg = head_config(["experiment=imagewoof_features", *(overrides or [])])
    opt, stop = cfg["model"]["optimizer"], cfg["callbacks"].get("early_stopping") or {}
    kind = "hidden layer" if cfg["model"].get("hidden") else "linear"
    inner = float(cfg["data"].get("inner_val_fraction") or 0)
    if inner <= 0:
        stopping = "no inner split: every fold row trained on, the last epoch kept"
    else:
        stopping = f"early stopping on a {inner:.0%} inner split's {stop.get('monitor')} (patience {stop.get('patience')})" if stop else "no early stopping"
    embeddings = f"{cfg['embedder']['backbone']} embeddings, " if with_backbone else ""
    return (f"{embeddings}{kind} head, {opt['_target_'].rsplit('.', 1)[-1]} lr {opt.get('lr')} weight_decay {opt.get('weight_decay')}, "
            f"dropout {cfg['model'].get('dropout')}, label smoothing {cfg['model'].get('label_smoothing')}, "
            f"up to {cfg['trainer'].get('max_epochs')} epochs, {stopping}")
