"""Plain helpers the tests share (importable as `from helpers import ...`; tests/ is on pythonpath).

`compose_config` composes the REAL conf/ tree the way `kibble <task>` does, so a test exercises the
shipped configs, then points the run's output directory at a temp dir (lightning-hydra-template style).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


from kibble.config import compose_config  # noqa: E402,F401  (re-exported for the tests)
from kibble.paths import config_dir  # noqa: E402,F401

ROOT = Path(__file__).resolve().parents[1]
KIBBLE = Path(sys.executable).with_name("kibble")

# Shrinks a train-like config to a few batches on CPU: the wiring, not the model.
TINY_TRAIN = [
    "trainer=cpu",
    "trainer.max_epochs=1",
    "++trainer.limit_train_batches=2",
    "++trainer.limit_val_batches=1",
    "++trainer.limit_test_batches=1",
    "data.num_workers=0",
    "callbacks=quiet",
    "logger=none",
]
# A full fine-tune k-fold round at its smallest (test_resnet from scratch on 32 px digits): the wiring of
# the fine-tune path (DDP, resume, loop), not the model.
TINY_FINETUNE_KFOLD = [
    "model=small", "model.backbone=test_resnet", "data=digits", "trainer.max_epochs=1",
    "++trainer.limit_train_batches=3", "++trainer.limit_val_batches=2", "data.num_workers=0",
    "callbacks=quiet", "logger=none", "cv=kfold3", "cv.progress=false",
]
# The first three breeds of the official Stanford Dogs tree (folder name = <wnid>-<Breed>).
DOG_BREEDS = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02085936-Maltese_dog"]
# model=small at its smallest: a tiny timm resnet on 32 px images.
TINY_MODEL = ["model=small", "model.backbone=test_resnet", "model.input_size=32"]


def train_tiny_copy(workspace: Path, root: Path, train_batches: int) -> dict:
    """A private copy of `workspace` (under `root`) with the tiny image model trained on it for a few batches:
    {"ws": copy, "ckpt": best checkpoint, "root": root}."""
    import shutil

    from kibble.tasks import train

    ws = root / "ws"
    shutil.copytree(workspace, ws)
    cfg = compose_config("train", [f"workspace={ws}", *TINY_MODEL, "data=digits", *TINY_TRAIN, f"++trainer.limit_train_batches={train_batches}"],
                         output_dir=root / "train")
    return {"ws": ws, "ckpt": Path(train.run(cfg)["best_checkpoint"]), "root": root}


def import_workspace(workspace: str | Path, overrides: list[str] | None = None) -> Path:
    """Run the import task in-process into `workspace` (digits unless overrides say source=...)."""
    from kibble.tasks import import_data

    workspace = Path(workspace)
    cfg = compose_config("import", [f"workspace={workspace}", *(overrides or [])], output_dir=workspace.parent / f"{workspace.name}_import_out")
    import_data.run(cfg)
    return workspace


def run_kibble(*args: str, cwd: str | Path | None = None, timeout: float = 600, check: bool = False, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the venv's `kibble` console script as a user would; output captured as text.

    env: extra variables; tests/ is on the child's PYTHONPATH (ddp_support callbacks)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(ROOT / "tests"), **(env or {})}
    proc = subprocess.run(
        [str(KIBBLE), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"kibble {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def run_with_hard_timeout(args: list[str], log: Path, timeout: float, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run `kibble *args` in its own process group, output into `log`; on timeout kill the whole group
    (DDP child ranks included, which would otherwise keep running) and fail the test."""
    import signal

    import pytest

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HYDRA_FULL_ERROR": "0", **(env or {})}
    with log.open("w") as out:
        proc = subprocess.Popen([str(KIBBLE), *args], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"kibble {' '.join(args)} hung (> {timeout} s):\n{log.read_text()[-4000:]}")
    return code, log.read_text()


def write_noise_jpegs(folder: Path, names: list[str], size: int = 32, seed: int = 0) -> list[Path]:
    """Random-noise RGB JPEGs `folder/<name>` (a real decodable image each)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path, format="JPEG")
        out.append(path)
    return out


def synthetic_oof(rng, n: int, classes: list[str], adjust=None):
    """A round's OOF and manifest for queue tests: n train rows cycling through `classes`, softmax rows
    leaning to the given class, embeddings clustered by class. `adjust(probs)` edits the rows before they
    are normalised. Returns (oof, manifest, labels, probs, emb)."""
    import numpy as np
    import pandas as pd

    k = len(classes)
    labels = np.arange(n) % k
    probs = rng.dirichlet(np.ones(k), size=n)
    probs[np.arange(n), labels] += 1.5
    if adjust is not None:
        adjust(probs)
    probs = (probs / probs.sum(1, keepdims=True)).astype(np.float32)
    emb = (5 * np.eye(k)[labels] + rng.standard_normal((n, k))).astype(np.float32)
    ids = [f"s{i:03d}" for i in range(n)]
    given = [classes[i] for i in labels]
    oof = pd.DataFrame({"sample_id": ids, "fold": np.arange(n) % 5, "given_label": given, "probs": list(probs), "embedding": list(emb)})
    manifest = pd.DataFrame({"sample_id": ids, "path": [f"img/{s}.png" for s in ids], "label": given, "split": "train"})
    return oof, manifest, labels, probs, emb
