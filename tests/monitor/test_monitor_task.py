"""`kibble monitor` end to end on digits: a tiny trained model, reference = predictions with embeddings
on half the test split, current = a folder of the other half (as is, or blurred + darkened)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import TINY_MODEL, TINY_TRAIN, compose_config, run_kibble
from kibble import KibbleError
from kibble.paths import Workspace
from kibble.predictions.store import read_store, sidecar_path, stack, write_store
from kibble.tasks import monitor, predict, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(digits_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    import albumentations as A
    from PIL import Image

    root = tmp_path_factory.mktemp("monitor")
    ws = root / "ws"
    shutil.copytree(digits_workspace, ws)
    cfg = compose_config("train", [f"workspace={ws}", *TINY_MODEL, "data=digits", *TINY_TRAIN, "++trainer.limit_train_batches=6"],
                         output_dir=root / "train")
    ckpt = Path(train.run(cfg)["best_checkpoint"])
    # predictions + embeddings on the whole test split, then split it in two halves
    out = root / "test.parquet"
    predict.run(compose_config("predict", [f"workspace={ws}", f"ckpt_path={ckpt}", "split=test", "save_embeddings=true", f"out={out}"],
                               output_dir=root / "predict"))
    frame, meta = read_store(out)
    order = np.random.default_rng(0).permutation(len(frame))
    half = len(frame) // 2
    reference, current = frame.iloc[np.sort(order[:half])], frame.iloc[np.sort(order[half:])]
    write_store(root / "reference.parquet", reference.reset_index(drop=True), meta)
    write_store(root / "current.parquet", current.reset_index(drop=True), meta)
    data_root = Workspace(ws).data_root
    # the other half as image folders: unchanged (i.i.d.) and strongly blurred + darkened (shifted)
    shift = A.Compose([A.GaussianBlur(blur_limit=(7, 7), sigma_limit=(3.0, 3.0), p=1.0),
                       A.RandomBrightnessContrast(brightness_limit=(-0.6, -0.6), contrast_limit=(-0.5, -0.5), p=1.0)])
    for name in ("iid", "shifted"):
        (root / name).mkdir()
    for path in current["path"]:
        src = data_root / path
        flat = str(path).replace("/", "__")
        shutil.copy(src, root / "iid" / flat)
        image = np.asarray(Image.open(src).convert("RGB"))
        Image.fromarray(shift(image=image)["image"]).save(root / "shifted" / flat)
    return {"ws": ws, "ckpt": ckpt, "root": root, "n_current": len(current)}


def monitor_cfg(setup: dict, tmp_path: Path, *overrides: str):
    return compose_config("monitor", [f"workspace={setup['ws']}", f"reference={setup['root'] / 'reference.parquet'}",
                                      f"out_dir={tmp_path / 'out'}", *overrides], output_dir=tmp_path / "run")


def test_iid_store_is_not_flagged_and_writes_outputs(setup: dict, tmp_path: Path):
    result = monitor.run(monitor_cfg(setup, tmp_path, f"current={setup['root'] / 'current.parquet'}"))
    assert result["verdict"] == "no drift", result["checks"]
    out = tmp_path / "out"
    saved = json.loads((out / "monitor.json").read_text())
    assert saved["verdict"] == "no drift" and {c["name"] for c in saved["checks"]} >= {"chi_square", "psi", "ks_confidence", "ks_entropy", "mmd", "domain_classifier"}
    html = (out / "monitor.html").read_text()
    assert "Drift verdict" in html and "Distributions" in html and "data:image/png;base64" in html
    assert (out / "figures" / "confidence.png").is_file() and (out / "figures" / "knn_distance.png").is_file()
    queue = pd.read_csv(out / "queue.csv")
    assert len(queue) <= 50 and (queue["kind"] == "new").all()
    tasks = json.loads((out / "queue.labelstudio.json").read_text())
    assert len(tasks) == len(queue) and (out / "labeling_config.xml").is_file()


def test_folder_iid_vs_shifted(setup: dict, tmp_path: Path):
    common = [f"ckpt_path={setup['ckpt']}", "queue.budget=20"]
    iid = monitor.run(monitor_cfg(setup, tmp_path / "a", f"current={setup['root'] / 'iid'}", *common))
    assert iid["verdict"] == "no drift", iid["checks"]
    assert iid["n_current"] == setup["n_current"] and (tmp_path / "a" / "out" / "current.parquet").is_file()
    shifted = monitor.run(monitor_cfg(setup, tmp_path / "b", f"current={setup['root'] / 'shifted'}", *common))
    assert shifted["drifted"], shifted["checks"]
    fired = {c["name"] for c in shifted["checks"] if c["drifted"]}
    assert fired & {"mmd", "domain_classifier"}, fired
    queue = pd.read_csv(tmp_path / "b" / "out" / "queue.csv")
    assert len(queue) == 20 and queue["reason"].str.match(r"^(low confidence|atypical: embedding kNN distance)").all()
    assert queue["strategy"].isin(["monitor_low_confidence", "monitor_atypical"]).all()
    stored, _ = read_store(tmp_path / "b" / "out" / "current.parquet")
    assert stack(stored, "embedding").shape[0] == setup["n_current"]


def test_bad_inputs(setup: dict, tmp_path: Path):
    frame, meta = read_store(setup["root"] / "current.parquet")
    renamed = tmp_path / "renamed.parquet"
    write_store(renamed, frame, {**meta, "class_names": [f"c{i}" for i in range(len(meta["class_names"]))]})
    with pytest.raises(KibbleError, match="class list .* differs from reference"):
        monitor.run(monitor_cfg(setup, tmp_path, f"current={renamed}"))
    narrow = tmp_path / "narrow.parquet"
    write_store(narrow, frame.assign(embedding=[np.asarray(v)[:3] for v in frame["embedding"]]), meta)
    with pytest.raises(KibbleError, match="embeddings have 3 dimensions"):
        monitor.run(monitor_cfg(setup, tmp_path, f"current={narrow}"))
    empty = tmp_path / "empty.parquet"
    write_store(empty, frame.iloc[:0], meta)
    with pytest.raises(KibbleError, match="empty batch"):
        monitor.run(monitor_cfg(setup, tmp_path, f"current={empty}"))
    bare = tmp_path / "bare.parquet"
    write_store(bare, frame.drop(columns=["embedding"]), meta)
    with pytest.raises(KibbleError, match="save_embeddings=true"):
        monitor.run(monitor_cfg(setup, tmp_path, f"current={bare}"))
    with pytest.raises(KibbleError, match="give ckpt_path"):
        monitor.run(monitor_cfg(setup, tmp_path, f"current={setup['root'] / 'iid'}"))
    assert not sidecar_path(tmp_path / "out" / "monitor.json").exists()


def test_cli_exit_status_on_drift(setup: dict, tmp_path: Path):
    args = ["monitor", f"workspace={setup['ws']}", f"reference={setup['root'] / 'reference.parquet'}",
            f"current={setup['root'] / 'shifted'}", f"ckpt_path={setup['ckpt']}", f"out_dir={tmp_path / 'out'}", "monitor.fail_on_drift=true"]
    proc = run_kibble(*args)
    assert proc.returncode == monitor.DRIFT_EXIT_CODE, proc.stderr[-2000:]
    assert "monitor: DRIFT (" in proc.stdout and (tmp_path / "out" / "monitor.json").is_file()
    bad = run_kibble("monitor", f"reference={setup['root'] / 'reference.parquet'}", f"current={tmp_path / 'nope.parquet'}", f"out_dir={tmp_path / 'x'}",
                     cwd=tmp_path)  # the default workspace= (run directory) lands in tmp_path
    assert bad.returncode == 1, bad.stderr[-2000:]
    assert bad.stderr.strip().splitlines()[-1] == f"kibble monitor: error: current={tmp_path / 'nope.parquet'}: no such predictions file or image folder"
