"""`kibble kfold`: OOF contract on digits, resume after a crash, single-fold jobs, bad input, parallel folds.

Features mode (frozen effnet-lite0 at 96 px, a linear head per fold): deterministic on CPU and a
few seconds per fold. Every workspace here points at the session digits workspace's images and one
shared feature cache, so the images are embedded once per session.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import pytest

from helpers import run_kibble
from kibble import KibbleError
from kibble.config import compose_config
from kibble.data.classes import ClassList
from kibble.io import read_json
from kibble.paths import Workspace
from kibble.predictions.store import read_store, sidecar_path, stack, write_store
from kibble.tasks import kfold
from kibble.training import kfold as kfold_engine
from kibble.training.kfold import KFoldRound

# every test here needs a trained round (the shared fixture embeds + trains ~1 min on 2 cores)
pytestmark = pytest.mark.slow

N_FOLDS = 5


# ---------------------------------------------------------------- helpers


def shared_images(digits_workspace: Path) -> Path:
    return (Workspace(digits_workspace).data_root).resolve()


def feature_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One feature cache for the whole session (test_loop uses the same path)."""
    return tmp_path_factory.getbasetemp() / "kibble_feature_cache"


def features_overrides(ws: Path, weights: Path, cache: Path) -> list[str]:
    return [
        f"workspace={ws}", "model=features_lite0", f"paths.effnet_lite0={weights}", "embedder.input_size=96",
        "embedder.num_workers=0", f"paths.cache_dir={cache}", "trainer.max_epochs=15", "logger=none", "cv.progress=false",
    ]


def copy_workspace(src: Path, dst: Path, images: Path) -> Path:
    """A private workspace whose manifest paths resolve to the shared images (same feature-cache key)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("runs", "multiruns", "cache"))
    Workspace(dst).update_state(data_root=str(images))
    return dst


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime_ns) of every file under folder."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def check_oof(ws: Path, n_folds: int, round_index: int = 0) -> pd.DataFrame:
    """The OOF contract (DESIGN §3): every train sample once, in its own fold; rows sum to 1; class order."""
    ws = Workspace(ws)
    round_dir = ws.round_dir(round_index)
    classes = ClassList.load(ws.classes)
    oof, meta = read_store(round_dir / "oof.parquet", classes.names)
    assert meta["complete"] is True
    assert meta["class_names"] == classes.names
    assert meta["n_folds"] == n_folds and meta["round"] == round_index
    assert meta["manifest_fingerprint"] and meta["config_hash"]
    manifest = pd.read_parquet(ws.manifest)
    train = manifest[manifest["split"] == "train"]
    assert not oof["sample_id"].duplicated().any()
    assert sorted(oof["sample_id"]) == sorted(train["sample_id"])
    folds = pd.read_parquet(round_dir / "folds.parquet").set_index("sample_id")["fold"]
    assert sorted(folds.unique()) == list(range(n_folds))
    np.testing.assert_array_equal(oof["fold"].to_numpy(), folds.loc[oof["sample_id"]].to_numpy())
    assert oof["given_label"].tolist() == train.set_index("sample_id").loc[oof["sample_id"], "label"].tolist()
    probs = stack(oof)
    assert probs.shape == (len(train), len(classes.names))
    assert np.isfinite(probs).all() and (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    return oof


def oof_accuracy(oof: pd.DataFrame, class_names: list[str]) -> float:
    index = {n: i for i, n in enumerate(class_names)}
    return float((stack(oof).argmax(1) == np.array([index[l] for l in oof["given_label"]])).mean())


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def setup(digits_workspace: Path, effnet_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return {"images": shared_images(digits_workspace), "weights": effnet_weights, "cache": feature_cache(tmp_path_factory)}


@pytest.fixture(scope="module")
def round0(digits_workspace: Path, setup: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An uninterrupted 5-fold round 0 on clean digits (read-only: copy it to mutate)."""
    root = tmp_path_factory.mktemp("kfold_round0")
    ws = copy_workspace(digits_workspace, root / "ws", setup["images"])
    cfg = compose_config("kfold", features_overrides(ws, setup["weights"], setup["cache"]), output_dir=root / "out")
    result = kfold.run(cfg)
    return {"ws": ws, "result": result}


@pytest.fixture(scope="module")
def round0_one_by_one(digits_workspace: Path, setup: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Round 0 with the folds trained one by one (cv.heads_together=false): a fold's own job
    (cv.fold=k) reproduces it exactly."""
    root = tmp_path_factory.mktemp("kfold_round0_one_by_one")
    ws = copy_workspace(digits_workspace, root / "ws", setup["images"])
    cfg = compose_config("kfold", [*features_overrides(ws, setup["weights"], setup["cache"]), "cv.heads_together=false"], output_dir=root / "out")
    return {"ws": ws, "result": kfold.run(cfg)}


@pytest.fixture
def fresh_ws(fresh_digits_workspace: Path, setup: dict) -> Path:
    Workspace(fresh_digits_workspace).update_state(data_root=str(setup["images"]))
    return fresh_digits_workspace


@pytest.fixture
def unassembled(round0: dict, setup: dict, tmp_path: Path) -> Path:
    """A copy of round 0 with every fold complete but nothing assembled (no oof, predictions, queue, metrics)."""
    ws = copy_workspace(round0["ws"], tmp_path / "ws", setup["images"])
    round_dir = Workspace(ws).round_dir(0)
    for path in round_dir.iterdir():
        if path.is_file() and path.name not in ("folds.parquet", "round.json"):
            path.unlink()
    return ws


@contextmanager
def crash_while_saving_fold(monkeypatch: pytest.MonkeyPatch, k: int):
    """Inside the block, writing fold k's held-out store raises (a crash after the fold trained)."""
    real_write = kfold_engine.write_store

    def crash(path, frame, meta):
        if Path(path).parent.name == f"fold_{k}" and Path(path).name == "heldout.parquet":
            raise RuntimeError(f"injected crash while saving fold {k}")
        return real_write(path, frame, meta)

    with monkeypatch.context() as patch:
        patch.setattr(kfold_engine, "write_store", crash)
        yield


def run_kfold(ws: Path, setup: dict, out: Path, *extra: str) -> dict:
    cfg = compose_config("kfold", [*features_overrides(ws, setup["weights"], setup["cache"]), *extra], output_dir=out)
    return kfold.run(cfg)


# ---------------------------------------------------------------- the round


def test_kfold_round_on_digits(round0: dict):
    ws, result = Workspace(round0["ws"]), round0["result"]
    round_dir = ws.round_dir(0)
    classes = ClassList.load(ws.classes)
    assert result["folds_run"] == list(range(N_FOLDS)) and result["pending_folds"] == []
    oof = check_oof(ws.root, N_FOLDS)
    accuracy = oof_accuracy(oof, classes.names)
    assert accuracy >= 0.90, f"OOF accuracy vs clean labels {accuracy:.4f}"

    # each fold trained without its held-out samples (fit + inner val + held-out = train)
    for k in range(N_FOLDS):
        meta = read_json(sidecar_path(round_dir / f"fold_{k}" / "heldout.parquet"))
        assert meta["fold"] == k and meta["complete"] is True
        assert meta["n_fit"] + meta["n_inner_val"] + meta["n_heldout"] == len(oof)
        assert meta["n_heldout"] == int((oof["fold"] == k).sum())

    # fold-ensemble predictions of the test rows
    manifest = pd.read_parquet(ws.manifest)
    test = manifest[manifest["split"] == "test"]
    preds, pmeta = read_store(round_dir / "predictions.parquet", classes.names)
    assert pmeta["complete"] is True
    assert sorted(preds["sample_id"]) == sorted(test["sample_id"]) and len(test) > 0
    assert set(preds["split"]) == {"test"} and set(preds["fold"]) == {-1}
    np.testing.assert_allclose(stack(preds).sum(1), 1.0, atol=1e-4)

    # OOF summary callback and the default queue callback
    metrics = read_json(round_dir / "metrics.json")
    assert metrics["round"] == 0 and metrics["n_oof"] == len(oof)
    assert metrics["oof_accuracy_given"] == pytest.approx(accuracy)
    assert set(metrics["oof_per_class"]) == set(classes.names)
    assert all(0.0 <= v["precision"] <= 1.0 and 0.0 <= v["recall"] <= 1.0 for v in metrics["oof_per_class"].values())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert result["oof_accuracy_given"] == pytest.approx(accuracy)
    queue = pd.read_csv(round_dir / "queue.csv", dtype={"sample_id": str})
    assert 0 < len(queue) <= round(0.1 * len(oof)) and queue["sample_id"].isin(oof["sample_id"]).all()


def test_folds_trained_together_match_one_by_one(round0: dict, round0_one_by_one: dict, setup: dict):
    """The default features round trains the five heads as one batched model: same inner splits, the same
    accuracy as five separate fits (up to random streams), and fold checkpoints that reproduce the store."""
    import hydra

    from kibble.training.build import attach_features, load_classifier

    together, alone = Workspace(round0["ws"]), Workspace(round0_one_by_one["ws"])
    classes = ClassList.load(together.classes)
    for k in range(N_FOLDS):
        meta = read_json(sidecar_path(together.round_dir(0) / f"fold_{k}" / "heldout.parquet"))
        single = read_json(sidecar_path(alone.round_dir(0) / f"fold_{k}" / "heldout.parquet"))
        assert meta["trained_with_folds"] == list(range(N_FOLDS)) and "trained_with_folds" not in single
        assert (meta["n_fit"], meta["n_inner_val"], meta["n_heldout"]) == (single["n_fit"], single["n_inner_val"], single["n_heldout"])
    acc_together = oof_accuracy(check_oof(together.root, N_FOLDS), classes.names)
    acc_alone = oof_accuracy(check_oof(alone.root, N_FOLDS), classes.names)
    assert abs(acc_together - acc_alone) <= 0.03, (acc_together, acc_alone)

    cfg = compose_config("kfold", features_overrides(together.root, setup["weights"], setup["cache"]))
    dm = hydra.utils.instantiate(cfg.data)
    attach_features(cfg, dm)
    for k in (0, 3):
        model = load_classifier(together.round_dir(0) / f"fold_{k}" / "checkpoints" / "best.ckpt")
        held, _ = read_store(together.round_dir(0) / f"fold_{k}" / "heldout.parquet", classes.names)
        x = dm.matrix[[dm.features[s] for s in held["sample_id"]]]
        with torch.no_grad():
            probs = model(x).softmax(-1).numpy()
        np.testing.assert_allclose(probs, stack(held), atol=1e-5)


def test_interrupted_round_of_heads_together_resumes(fresh_ws: Path, setup: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A crash while the together fit writes fold 3: folds 0-2 stay complete, the re-run trains 3 and 4 together."""
    from kibble.training import round as round_engine

    round_dir = Workspace(fresh_ws).round_dir(0)
    with crash_while_saving_fold(monkeypatch, 3):
        with pytest.raises(RuntimeError, match="injected crash"):
            run_kfold(fresh_ws, setup, tmp_path / "out1")
    assert not (round_dir / "oof.parquet").exists() and not (round_dir / "fold_4" / "heldout.parquet").exists()
    done = {k: snapshot(round_dir / f"fold_{k}") for k in range(3)}
    assert all(done.values())

    calls = []
    real_together = round_engine.train_folds_together
    monkeypatch.setattr(round_engine, "train_folds_together", lambda kround, ks, show: calls.append(list(ks)) or real_together(kround, ks, show))
    monkeypatch.setattr(KFoldRound, "run_fold", lambda self, k: pytest.fail(f"fold {k} trained alone"))
    result = run_kfold(fresh_ws, setup, tmp_path / "out2")
    assert calls == [[3, 4]] and result["folds_run"] == [3, 4] and result["pending_folds"] == []
    assert {k: snapshot(round_dir / f"fold_{k}") for k in range(3)} == done  # folds 0-2 untouched
    classes = ClassList.load(Workspace(fresh_ws).classes)
    assert oof_accuracy(check_oof(fresh_ws, N_FOLDS), classes.names) >= 0.90


def test_interrupted_round_resumes(round0_one_by_one: dict, fresh_ws: Path, setup: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    round_dir = Workspace(fresh_ws).round_dir(0)
    with crash_while_saving_fold(monkeypatch, 3):
        with pytest.raises(RuntimeError, match="injected crash"):
            run_kfold(fresh_ws, setup, tmp_path / "out1", "cv.heads_together=false")
    assert not (round_dir / "oof.parquet").exists()
    assert not (round_dir / "fold_3" / "heldout.parquet").exists()
    assert not (round_dir / "fold_4").exists()
    done = {k: snapshot(round_dir / f"fold_{k}") for k in range(3)}
    assert all(done.values())

    calls = []
    real_run_fold = KFoldRound.run_fold

    def spy(self, k):
        calls.append(k)
        return real_run_fold(self, k)

    monkeypatch.setattr(KFoldRound, "run_fold", spy)
    result = run_kfold(fresh_ws, setup, tmp_path / "out2", "cv.heads_together=false")
    assert calls == [3, 4] and result["folds_run"] == [3, 4] and result["pending_folds"] == []
    assert {k: snapshot(round_dir / f"fold_{k}") for k in range(3)} == done  # folds 0-2 untouched
    oof = check_oof(fresh_ws, N_FOLDS)
    reference = pd.read_parquet(Workspace(round0_one_by_one["ws"]).round_dir(0) / "oof.parquet")
    assert oof["sample_id"].tolist() == reference["sample_id"].tolist()
    assert oof["fold"].tolist() == reference["fold"].tolist()
    np.testing.assert_allclose(stack(oof), stack(reference), atol=1e-5)


def test_single_fold_jobs_then_assemble(round0_one_by_one: dict, fresh_ws: Path, setup: dict, tmp_path: Path):
    round_dir = Workspace(fresh_ws).round_dir(0)
    result = run_kfold(fresh_ws, setup, tmp_path / "out1", "cv.fold=2")
    assert result["folds_run"] == [2] and result["pending_folds"] == [0, 1, 3, 4]
    assert sorted(p.name for p in round_dir.glob("fold_*")) == ["fold_2"]
    assert not (round_dir / "oof.parquet").exists()

    before = snapshot(round_dir)
    result = run_kfold(fresh_ws, setup, tmp_path / "out2", "cv.assemble_only=true")
    assert result["folds_run"] == [] and result["pending_folds"] == [0, 1, 3, 4]
    assert snapshot(round_dir) == before  # nothing trained, nothing assembled

    # the other folds, run as other jobs (here: round 0's identical folds), meet in the store
    reference_dir = Workspace(round0_one_by_one["ws"]).round_dir(0)
    for k in (0, 1, 3, 4):
        shutil.copytree(reference_dir / f"fold_{k}", round_dir / f"fold_{k}")
    result = run_kfold(fresh_ws, setup, tmp_path / "out3", "cv.assemble_only=true")
    assert result["folds_run"] == [] and result["pending_folds"] == []
    oof = check_oof(fresh_ws, N_FOLDS)
    reference = pd.read_parquet(reference_dir / "oof.parquet")
    np.testing.assert_allclose(stack(oof), stack(reference), atol=1e-5)  # fold 2 alone == fold 2 in a full run
    assert (round_dir / "metrics.json").is_file() and (round_dir / "queue.csv").is_file()

    with pytest.raises(KibbleError, match="cv.fold=7"):
        run_kfold(fresh_ws, setup, tmp_path / "out4", "cv.fold=7")


# ---------------------------------------------------------------- bad input: clear error, nothing written


def test_manifest_changed_since_folds_assigned(unassembled: Path, setup: dict, tmp_path: Path):
    ws = Workspace(unassembled)
    manifest = pd.read_parquet(ws.manifest)
    row = manifest.index[manifest["split"] == "train"][0]
    manifest.loc[row, "label"] = "1" if manifest.loc[row, "label"] != "1" else "2"
    manifest.to_parquet(ws.manifest, index=False)
    before = snapshot(ws.root / "rounds")
    with pytest.raises(KibbleError, match="manifest changed") as err:
        run_kfold(ws.root, setup, tmp_path / "out")
    assert "round=1" in str(err.value)  # the fix: start the next round
    assert snapshot(ws.root / "rounds") == before
    assert not (ws.round_dir(0) / "oof.parquet").exists()


def test_class_list_changed(unassembled: Path, setup: dict, tmp_path: Path):
    ws = Workspace(unassembled)
    classes = ClassList.load(ws.classes)
    classes.classes[0], classes.classes[1] = classes.classes[1], classes.classes[0]  # same names, new order
    classes.save(ws.classes)
    assert ClassList.load(ws.classes).names[:2] == ["1", "0"]
    before = snapshot(ws.root / "rounds")
    with pytest.raises(KibbleError, match="classes.yaml changed"):
        run_kfold(ws.root, setup, tmp_path / "out")
    assert snapshot(ws.root / "rounds") == before
    assert not (ws.round_dir(0) / "oof.parquet").exists()


def test_fold_file_from_another_round(unassembled: Path, setup: dict, tmp_path: Path):
    ws = Workspace(unassembled)
    cfg = compose_config("kfold", [*features_overrides(ws.root, setup["weights"], setup["cache"]), "round=1"], output_dir=tmp_path / "out0")
    KFoldRound(cfg)  # assigns round 1's folds, trains nothing
    assert (ws.round_dir(1) / "folds.parquet").is_file()
    shutil.copytree(ws.round_dir(0) / "fold_1", ws.round_dir(1) / "fold_1")
    before = snapshot(ws.root / "rounds")
    with pytest.raises(KibbleError, match="belongs to round 0") as err:
        run_kfold(ws.root, setup, tmp_path / "out", "round=1")
    assert str(ws.round_dir(1) / "fold_1" / "heldout.parquet") in str(err.value)
    assert snapshot(ws.root / "rounds") == before  # no fold of round 1 was trained before the error
    assert not (ws.round_dir(1) / "oof.parquet").exists()


def test_nan_probabilities_in_a_fold_file(unassembled: Path, setup: dict, tmp_path: Path):
    ws = Workspace(unassembled)
    path = ws.round_dir(0) / "fold_2" / "heldout.parquet"
    frame = pd.read_parquet(path)
    probs = stack(frame)
    probs[3, :] = np.nan
    frame["probs"] = list(probs)
    frame.to_parquet(path, index=False)  # a corrupted file behind a complete sidecar
    before = snapshot(ws.root / "rounds")
    with pytest.raises(KibbleError, match="NaN") as err:
        run_kfold(ws.root, setup, tmp_path / "out")
    assert str(path) in str(err.value) and frame["sample_id"].iloc[3] in str(err.value)
    assert snapshot(ws.root / "rounds") == before
    assert not (ws.round_dir(0) / "oof.parquet").exists()
    # and the writer refuses to store NaN in the first place
    with pytest.raises(KibbleError, match="NaN"):
        write_store(tmp_path / "bad.parquet", frame, {"class_names": ClassList.load(ws.classes).names})
    assert not (tmp_path / "bad.parquet").exists()


# ---------------------------------------------------------------- parallel folds through a Hydra launcher


def test_multirun_folds_with_joblib_then_assemble(fresh_ws: Path, setup: dict, tmp_path: Path):
    overrides = [*features_overrides(fresh_ws, setup["weights"], setup["cache"]), "cv=kfold3"]
    proc = run_kibble(
        "kfold", "-m", *overrides, "cv.fold=0,1,2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={tmp_path / 'multirun'}", timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    round_dir = Workspace(fresh_ws).round_dir(0)
    for k in range(3):
        assert read_json(sidecar_path(round_dir / f"fold_{k}" / "heldout.parquet"))["complete"] is True
    proc = run_kibble("kfold", *overrides, "cv.assemble_only=true", f"hydra.run.dir={tmp_path / 'assemble'}", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    oof = check_oof(fresh_ws, 3)
    assert oof_accuracy(oof, ClassList.load(Workspace(fresh_ws).classes).names) >= 0.85
    assert (round_dir / "queue.csv").is_file()


def test_queue_strategy_that_reads_embeddings_stores_them(fresh_ws: Path, setup: dict, tmp_path: Path):
    """A combine with neighbors in the queue turns cv.save_embeddings on by itself (no 'needs embeddings' failure)."""
    result = run_kfold(fresh_ws, setup, tmp_path / "out", "cv=kfold3", "strategy.strategies=[combine]",
                       "+strategy.params.combine.parts=[normalized_margin,neighbors]", "+strategy.params.combine.weights=[2,1]")
    oof = check_oof(fresh_ws, 3)
    assert "embedding" in oof.columns
    queue = pd.read_csv(Workspace(fresh_ws).round_dir(0) / "queue.csv")
    assert len(queue) == result["callbacks"]["queue"]["queue_size"] > 0 and (queue["strategy"] == "combine").all()


def test_round_with_nothing_to_predict_outside_train(fresh_ws: Path, setup: dict, tmp_path: Path):
    """cv.predict_splits=[] (or a workspace of train rows alone): every fold's store of other rows is empty,
    and the round still trains, assembles its OOF and builds its queue."""
    result = run_kfold(fresh_ws, setup, tmp_path / "out", "cv.predict_splits=[]", "trainer.max_epochs=2", "round_callbacks.report=null")
    assert result["pending_folds"] == [] and result["folds_run"] == list(range(N_FOLDS))
    oof = check_oof(fresh_ws, N_FOLDS)
    round_dir = Workspace(fresh_ws).round_dir(0)
    for k in range(N_FOLDS):
        others, _ = read_store(round_dir / f"fold_{k}" / "others.parquet", ClassList.load(Workspace(fresh_ws).classes).names)
        assert len(others) == 0
    queue = pd.read_csv(round_dir / "queue.csv", dtype={"sample_id": str})
    assert 0 < len(queue) and queue["sample_id"].isin(oof["sample_id"]).all()
