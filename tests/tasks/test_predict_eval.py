"""`kibble predict` (checkpoint -> prediction store, manifest split or folder) and basic `kibble eval`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from helpers import TINY_MODEL, TINY_TRAIN, compose_config, run_kibble, train_tiny_copy, write_noise_jpegs
from kibble import KibbleError
from kibble.data.manifest import load_manifest
from kibble.metrics.classification import classification_metrics
from kibble.predictions.store import make_frame, read_store, sidecar_path, stack, write_store
from kibble.tasks import evaluate, predict, train


@pytest.fixture(scope="module")
def trained(digits_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A private digits workspace with a tiny image model trained on it (a few batches)."""
    return train_tiny_copy(digits_workspace, tmp_path_factory.mktemp("predict_eval"), train_batches=4)


@pytest.fixture(scope="module")
def trained_features(trained: dict, effnet_weights: Path, digits_feature_cache: Path) -> Path:
    """A features-mode head (frozen effnet-lite0 at 32 px) trained on the same workspace."""
    shutil.copytree(digits_feature_cache, trained["ws"] / "cache", dirs_exist_ok=True)
    cfg = compose_config(
        "train",
        [f"workspace={trained['ws']}", "model=features_lite0", f"paths.effnet_lite0={effnet_weights}", "embedder.input_size=32", "embedder.num_workers=0", *TINY_TRAIN],
        output_dir=trained["root"] / "train_features",
    )
    return Path(train.run(cfg)["best_checkpoint"])


def predict_cfg(ws: Path, ckpt: Path, tmp_path: Path, *overrides: str):
    return compose_config("predict", [f"workspace={ws}", f"ckpt_path={ckpt}", *overrides], output_dir=tmp_path / "predict")


def eval_cfg(ws: Path, tmp_path: Path, *overrides: str):
    return compose_config("eval", [f"workspace={ws}", *overrides], output_dir=tmp_path / "eval")


def test_predict_test_split(trained: dict, tmp_path: Path):
    ws, ckpt = trained["ws"], trained["ckpt"]
    result = predict.run(predict_cfg(ws, ckpt, tmp_path))
    out = ws / "predictions" / "test.parquet"
    assert result["out"] == str(out) and out.is_file() and sidecar_path(out).is_file()
    manifest = load_manifest(ws / "manifest.parquet")
    test = manifest[manifest["split"] == "test"]
    frame, meta = read_store(out, class_names=[str(i) for i in range(10)])
    assert meta["complete"] is True and meta["split"] == "test"
    assert meta["ckpt_path"] == str(ckpt.resolve()) and meta["model"] == "ImageClassifier"
    assert frame["sample_id"].tolist() == test["sample_id"].tolist()
    assert frame["given_label"].tolist() == test["label"].tolist()
    probs = stack(frame)
    assert probs.shape == (len(test), 10)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert frame["predicted_label"].tolist() == [str(i) for i in probs.argmax(1)]
    np.testing.assert_allclose(frame["confidence"], probs.max(1))
    assert result["accuracy_vs_given"] == pytest.approx((frame["predicted_label"] == frame["given_label"]).mean())


def test_predict_folder_of_images(trained: dict, tmp_path: Path):
    folder = tmp_path / "new_images"
    write_noise_jpegs(folder, ["a.jpg", "sub/b.png", "sub/deeper/c.jpeg"], size=40)
    (folder / "notes.txt").write_text("not an image")
    result = predict.run(predict_cfg(trained["ws"], trained["ckpt"], tmp_path, f"images={folder}"))
    out = trained["ws"] / "predictions" / "new_images.parquet"
    assert result["out"] == str(out)
    frame, meta = read_store(out)
    assert frame["sample_id"].tolist() == ["a.jpg", "sub/b.png", "sub/deeper/c.jpeg"]
    assert frame["given_label"].isna().all()
    assert meta["images"] == str(folder.resolve()) and meta["split"] is None
    assert meta["class_names"] == [str(i) for i in range(10)]
    # custom output path
    custom = tmp_path / "elsewhere" / "preds.parquet"
    predict.run(predict_cfg(trained["ws"], trained["ckpt"], tmp_path, f"images={folder}", f"out={custom}"))
    assert read_store(custom)[0]["sample_id"].tolist() == frame["sample_id"].tolist()


def test_predict_folder_with_a_corrupt_image(trained: dict, tmp_path: Path):
    folder = tmp_path / "imgs"
    write_noise_jpegs(folder, ["ok.jpg", "broken.jpg"])
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(KibbleError, match=r"broken.jpg: image is unreadable.*on_bad_image=skip"):
        predict.run(predict_cfg(trained["ws"], trained["ckpt"], tmp_path, f"images={folder}"))
    assert not (trained["ws"] / "predictions" / "imgs.parquet").exists()
    result = predict.run(predict_cfg(trained["ws"], trained["ckpt"], tmp_path, f"images={folder}", "on_bad_image=skip"))
    frame, meta = read_store(result["out"])
    assert frame["sample_id"].tolist() == ["ok.jpg"] and list(meta["skipped"]) == ["broken.jpg"]


def test_predict_errors(trained: dict, tmp_path: Path):
    ws, ckpt = trained["ws"], trained["ckpt"]
    with pytest.raises(KibbleError, match=r"no rows in split 'val'"):
        predict.run(predict_cfg(ws, ckpt, tmp_path, "split=val"))
    with pytest.raises(KibbleError, match="checkpoint not found"):
        predict.run(predict_cfg(ws, tmp_path / "nope.ckpt", tmp_path))
    with pytest.raises(KibbleError, match="folder does not exist"):
        predict.run(predict_cfg(ws, ckpt, tmp_path, f"images={tmp_path / 'nope'}"))
    other = tmp_path / "other_ws"
    shutil.copytree(ws, other, ignore=shutil.ignore_patterns("runs", "predictions", "cache"))
    classes = other / "classes.yaml"
    classes.write_text(classes.read_text().replace("name: '0'", "name: zero"))
    manifest = pd.read_parquet(other / "manifest.parquet")
    manifest["label"] = manifest["label"].replace({"0": "zero"})
    manifest.to_parquet(other / "manifest.parquet", index=False)
    with pytest.raises(KibbleError, match=r"the model's 10 classes differ from .*classes.yaml .*checkpoint-only \['0'\], workspace-only \['zero'\]"):
        predict.run(predict_cfg(other, ckpt, tmp_path))


def test_eval_from_checkpoint_and_from_predictions_agree(trained: dict, tmp_path: Path):
    ws, ckpt = trained["ws"], trained["ckpt"]
    from_ckpt = evaluate.run(eval_cfg(ws, tmp_path / "a", f"ckpt_path={ckpt}"))
    metrics_file = tmp_path / "a" / "eval" / "metrics.json"
    written = json.loads(metrics_file.read_text())
    assert written["accuracy"] == from_ckpt["accuracy"] and written["split"] == "test"
    assert written["n"] == 359 and written["n_missing_predictions"] == 0
    assert [r["class"] for r in written["per_class"]] == [str(i) for i in range(10)]
    assert sum(r["support"] for r in written["per_class"]) == 359
    assert set(written["per_class"][0]) == {"class", "precision", "recall", "f1", "support", "predicted"}
    assert (tmp_path / "a" / "eval" / "predictions.parquet").is_file()

    out = predict.run(predict_cfg(ws, ckpt, tmp_path))["out"]
    from_file = evaluate.run(eval_cfg(ws, tmp_path / "b", f"predictions={out}"))
    for key in ("accuracy", "f1_macro", "per_class", "confusion_matrix"):
        assert from_file[key] == from_ckpt[key]
    assert from_file["source"] == str(Path(out).resolve())


def test_eval_agrees_with_train_test_metrics(digits_workspace: Path, tmp_path: Path):
    """The accuracy/macro F1 `kibble train` reports on the test split are the ones `kibble eval` computes."""
    ws = tmp_path / "ws"
    shutil.copytree(digits_workspace, ws)
    cfg = compose_config("train", [f"workspace={ws}", *TINY_MODEL, "data=digits", *TINY_TRAIN, "++trainer.limit_train_batches=6", "~trainer.limit_test_batches"], output_dir=tmp_path / "train")
    result = train.run(cfg)
    evaluated = evaluate.run(eval_cfg(ws, tmp_path, f"ckpt_path={result['best_checkpoint']}"))
    assert evaluated["n"] == result["n_test"]
    assert evaluated["accuracy"] == pytest.approx(result["test_accuracy"], abs=1e-6)
    assert evaluated["f1_macro"] == pytest.approx(result["test_f1_macro"], abs=1e-5)


def test_eval_errors(trained: dict, tmp_path: Path):
    ws, ckpt = trained["ws"], trained["ckpt"]
    with pytest.raises(KibbleError, match=r"no rows in split 'val'"):
        evaluate.run(eval_cfg(ws, tmp_path, f"ckpt_path={ckpt}", "split=val"))
    with pytest.raises(KibbleError, match="give ckpt_path=CKPT or predictions=PARQUET"):
        evaluate.run(eval_cfg(ws, tmp_path))
    with pytest.raises(KibbleError, match="not both"):
        evaluate.run(eval_cfg(ws, tmp_path, f"ckpt_path={ckpt}", f"predictions={tmp_path / 'p.parquet'}"))
    # a prediction store made with another class list
    other_names = [f"c{i}" for i in range(10)]
    manifest = load_manifest(ws / "manifest.parquet")
    test = manifest[manifest["split"] == "test"]
    probs = np.full((len(test), 10), 0.1, dtype=np.float32)
    store = write_store(tmp_path / "other.parquet", make_frame(test["sample_id"].tolist(), probs), {"class_names": other_names, "complete": True})
    with pytest.raises(KibbleError, match=r"other.parquet: class list .* differs from classes.yaml"):
        evaluate.run(eval_cfg(ws, tmp_path, f"predictions={store}"))
    # a store that covers none of the split
    store = write_store(tmp_path / "none.parquet", make_frame(["x", "y"], np.full((2, 10), 0.1)), {"class_names": [str(i) for i in range(10)], "complete": True})
    with pytest.raises(KibbleError, match="none of the split's 359 sample_ids have a prediction"):
        evaluate.run(eval_cfg(ws, tmp_path, f"predictions={store}"))


def test_eval_scores_the_rows_it_has(trained: dict, tmp_path: Path):
    manifest = load_manifest(trained["ws"] / "manifest.parquet")
    test = manifest[manifest["split"] == "test"].iloc[:50]
    probs = np.eye(10, dtype=np.float32)[[int(l) for l in test["label"]]]  # a perfect predictor
    store = write_store(tmp_path / "part.parquet", make_frame(test["sample_id"].tolist(), probs), {"class_names": [str(i) for i in range(10)], "complete": True})
    result = evaluate.run(eval_cfg(trained["ws"], tmp_path, f"predictions={store}"))
    assert result["n"] == 50 and result["n_missing_predictions"] == 309
    assert result["accuracy"] == 1.0 and result["f1_macro"] == 1.0


def test_predict_and_eval_features_checkpoint(trained: dict, trained_features: Path, tmp_path: Path):
    ws = trained["ws"]
    result = predict.run(predict_cfg(ws, trained_features, tmp_path, "out=" + str(tmp_path / "f.parquet")))
    frame, meta = read_store(result["out"], class_names=[str(i) for i in range(10)])
    assert meta["model"] == "FeatureClassifier" and len(frame) == 359
    evaluated = evaluate.run(eval_cfg(ws, tmp_path, f"ckpt_path={trained_features}"))
    assert evaluated["accuracy"] == pytest.approx(result["accuracy_vs_given"])
    # a folder of new images is embedded on the fly with the checkpoint's embedder settings
    folder = tmp_path / "new"
    shutil.copytree(ws / "images" / "digits" / "7", folder)
    result = predict.run(predict_cfg(ws, trained_features, tmp_path, f"images={folder}"))
    frame, _ = read_store(result["out"])
    assert len(frame) == len(list(folder.glob("*.png")))


def test_cli_predict_then_eval(trained: dict, tmp_path: Path):
    ws, ckpt = trained["ws"], trained["ckpt"]
    out = tmp_path / "cli.parquet"
    proc = run_kibble("predict", f"workspace={ws}", f"ckpt_path={ckpt}", f"out={out}", f"hydra.run.dir={tmp_path / 'run_p'}", check=True)
    assert f"wrote 359 predictions for split 'test' to {out}" in proc.stdout
    proc = run_kibble("eval", f"workspace={ws}", f"predictions={out}", f"hydra.run.dir={tmp_path / 'run_e'}", check=True)
    metrics = json.loads((tmp_path / "run_e" / "metrics.json").read_text())
    assert "precision" in proc.stdout and "support" in proc.stdout  # the per-class table
    assert f"accuracy {metrics['accuracy']:.4f}" in proc.stdout


def test_classification_metrics_against_sklearn():
    names = ["a", "b", "c", "d"]
    y_true = ["a", "a", "b", "b", "c", "c", "a"]
    y_pred = ["a", "b", "b", "b", "a", "c", "a"]
    m = classification_metrics(y_true, y_pred, names)
    assert m["n"] == 7 and m["accuracy"] == pytest.approx(5 / 7)
    # macro over the classes that occur ("d" never does), like torchmetrics' macro F1 in training
    assert m["f1_macro"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert m["n_classes_evaluated"] == 3
    row_a = m["per_class"][0]
    assert row_a == {"class": "a", "precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3), "f1": pytest.approx(2 / 3), "support": 3, "predicted": 3}
    assert m["per_class"][3]["support"] == 0
    assert m["confusion_matrix"][0] == [2, 1, 0, 0]
    same = classification_metrics([0, 0, 1, 1, 2, 2, 0], [0, 1, 1, 1, 0, 2, 0], names)
    assert same["accuracy"] == m["accuracy"] and same["per_class"] == m["per_class"]
    with pytest.raises(KibbleError, match="row 1 has class 'z', not in the class list"):
        classification_metrics(["a", "z"], ["a", "a"], names)
    with pytest.raises(KibbleError, match="no rows"):
        classification_metrics([], [], names)
