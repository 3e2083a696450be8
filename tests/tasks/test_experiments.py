"""Every shipped experiment config composes with the real conf/ and runs `kibble train` with
debug=fast on CPU, on the digits workspace, shrunk so it stays fast and offline:
pretrained weights come from the converted effnet-lite0 file (or none; features-mode experiments are pinned to
model=features_lite0 for it), inputs are small."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from helpers import compose_config
from kibble.paths import config_dir
from kibble.tasks import train

EXPERIMENTS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))
PRIMARY = sorted(p.stem for p in config_dir().glob("*.yaml") if "experiment" in p.read_text())


def weights_or_none(request: pytest.FixtureRequest) -> str | None:
    try:
        return str(request.getfixturevalue("effnet_weights"))
    except pytest.skip.Exception:
        return None


def shrink(cfg, weights: str | None) -> list[str]:
    """Overrides that keep a composed train config offline and tiny."""
    out = []
    model = cfg.model
    if cfg.get("embedder") is not None:
        out += ["embedder.input_size=32", "embedder.num_workers=0"]
        if weights is None:
            out += ["embedder.backbone=test_efficientnet", "embedder.pretrained=none"]
    elif "backbone" in model:
        if str(model.get("pretrained")) == "hub":
            out.append("model.pretrained=none")  # tests never download
        if weights is None and str(model.get("pretrained")) not in ("none", "hub"):
            out += ["model.backbone=test_efficientnet", "model.pretrained=none"]
        out.append("model.input_size=" + ("64" if "efficientnet" in str(model.backbone) else "32"))
    return out


def test_experiments_are_found():
    assert {"demo_digits", "imagewoof", "imagewoof_features"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_trains(experiment: str, fresh_digits_workspace: Path, tmp_path: Path, request: pytest.FixtureRequest):
    weights = weights_or_none(request)
    base = [f"workspace={fresh_digits_workspace}", f"experiment={experiment}", "debug=fast"]
    if weights:
        base.append(f"paths.effnet_lite0={weights}")
    try:
        cfg = compose_config("train", base, output_dir=tmp_path / "compose")
    except ConfigCompositionException as train_error:
        # an experiment of another task (e.g. `kibble loop experiment=...`) must compose with that task
        for name in (p for p in PRIMARY if p != "train"):
            try:
                compose_config(name, base[:2], output_dir=tmp_path / name)
                return  # composes; running it is that task's tests' job
            except ConfigCompositionException:
                continue
        raise train_error
    if cfg.get("embedder") is not None and weights:
        if cfg.embedder.backbone != "tf_efficientnet_lite0":
            # features mode defaults to lite1 (imagewoof_features); the session's weights and cache are lite0's
            base.append("model=features_lite0")
        # embeddings of the digits at 32 px are computed once per session (the embedding path itself is
        # exercised by that fixture and by the predict tests)
        shutil.copytree(request.getfixturevalue("digits_feature_cache"), fresh_digits_workspace / "cache", dirs_exist_ok=True)
    cfg = compose_config("train", base + shrink(cfg, weights), output_dir=tmp_path / "run")
    assert cfg.trainer.fast_dev_run
    result = train.run(cfg)
    assert result["n_train"] > 0
    assert 0.0 <= result["test_accuracy"] <= 1.0
    assert (tmp_path / "run" / "metrics.json").is_file()


@pytest.mark.parametrize("config_name", PRIMARY)
def test_primary_configs_compose(config_name: str, digits_workspace: Path, tmp_path: Path):
    """Every task's primary config composes with its defaults (no missing groups or bad interpolations)."""
    cfg = compose_config(config_name, [f"workspace={digits_workspace}"], output_dir=tmp_path)
    assert cfg.workspace == str(digits_workspace)
