"""Oddities get one line: an empty reviews file writes nothing, unknown target classes and classes left
without train images are warned about (and eval refuses unknown target classes), train rows without a
label are said, advice never points at a re-import, k-fold with too few rows says what helps (issue 13, item 8)."""

from __future__ import annotations

import logging

import pytest
import yaml

from kibble.data.classes import ClassList
from kibble.data.manifest import classes_without_train
from kibble.labels.history import load_events

from test_merge import make_workspace, manifest_of, merge, snapshot, write_csv


def test_a_header_only_reviews_file_writes_nothing(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    before = snapshot(ws)
    summary = merge(ws, write_csv(tmp_path / "empty.csv", "sample_id,label,verdict,annotator\n"))
    assert summary["n_reviews"] == 0 and not summary["written"]
    assert snapshot(ws) == before  # no manifest rewrite, no policy.yaml, same round


def test_a_header_only_file_still_carries_a_deliberate_policy_change(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    merge(ws, write_csv(tmp_path / "r.csv", "sample_id,label,verdict,annotator\ns1,dog,corrected,alice\n"))
    summary = merge(ws, write_csv(tmp_path / "empty.csv", "sample_id,label,verdict,annotator\n"),
                    "policy.precedence=round", "policy.reapply=true")
    assert summary["written"] and summary["policy_changed"]


def test_unknown_classes_in_targets_are_a_warning_line(tmp_path, caplog):
    path = tmp_path / "classes.yaml"
    path.write_text(yaml.safe_dump({"classes": ["cat", "dog"], "targets": {"class_f1": {"dog": 0.9, "wolf": 0.95}}}))
    with caplog.at_level(logging.WARNING):
        classes = ClassList.load(path)
        ClassList.load(path)  # said once per file, not at every load
    lines = [r.getMessage() for r in caplog.records if "targets.class_f1" in r.getMessage()]
    assert len(lines) == 1 and "unknown class(es) ['wolf']; their targets are ignored" in lines[0] and "\n" not in lines[0]
    assert classes.targets["class_f1"]["dog"] == 0.9


def test_a_merge_that_leaves_a_class_without_train_images_warns(tmp_path, caplog):
    ws = make_workspace(tmp_path / "ws")
    with caplog.at_level(logging.WARNING):
        merge(ws, write_csv(tmp_path / "r.csv", "sample_id,label,verdict,annotator\ns3,dog,corrected,alice\n"))
    assert manifest_of(ws).loc["s3", "label"] == "dog" and len(load_events(ws.label_events)) == 5
    assert any("1 class(es) without train images after this merge: ['fox']" in r.getMessage() for r in caplog.records)


def test_classes_without_train_ignores_excluded_and_other_splits(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    manifest = manifest_of(ws).reset_index()
    assert classes_without_train(manifest, ["cat", "dog", "fox"]) == []
    manifest["excluded"] = manifest["sample_id"] == "s3"
    assert classes_without_train(manifest, ["cat", "dog", "fox", "owl"]) == ["fox", "owl"]


def test_eval_refuses_target_classes_that_do_not_exist(tmp_path):
    from helpers import compose_config
    from kibble import KibbleError
    from kibble.tasks import evaluate

    ws = make_workspace(tmp_path / "ws")
    raw = yaml.safe_load(ws.classes.read_text())
    raw["targets"]["class_f1"] = {"dog": 0.9, "wolf": 0.95}  # a typo: the gate would skip it and could pass
    ws.classes.write_text(yaml.safe_dump(raw))
    before = snapshot(ws)
    cfg = compose_config("eval", [f"workspace={ws.root}", f"predictions={tmp_path / 'p.parquet'}"], output_dir=tmp_path / "out")
    with pytest.raises(KibbleError) as err:
        evaluate.run(cfg)
    assert f"{ws.classes}: targets.class_f1 names unknown class(es) ['wolf']" in str(err.value) and "\n" not in str(err.value)
    assert snapshot(ws) == before and not (tmp_path / "out" / "metrics.json").exists()


def test_a_missing_classes_file_never_advises_a_reimport_of_an_imported_workspace(tmp_path):
    from kibble import KibbleError

    ws = make_workspace(tmp_path / "ws")
    ws.classes.unlink()
    with pytest.raises(KibbleError) as err:
        ClassList.load(ws.classes)
    line = str(err.value)
    assert "restore it from a backup" in line and "keeping the class order" in line and "re-importing is not needed" in line
    assert "overwrite" not in line and "kibble import" not in line
    fresh = tmp_path / "new"
    fresh.mkdir()
    with pytest.raises(KibbleError, match=rf"run `kibble import workspace={fresh}` to create the workspace"):
        ClassList.load(fresh / "classes.yaml")


@pytest.mark.parametrize("n_rows", [0, 1])
def test_too_few_train_rows_for_any_kfold_do_not_advise_lowering_the_folds(n_rows):
    import pandas as pd

    from kibble import KibbleError
    from kibble.data.folds import assign_folds

    rows = pd.DataFrame({"sample_id": [f"s{i}" for i in range(n_rows)], "label": ["cat"] * n_rows})
    with pytest.raises(KibbleError) as err:
        assign_folds(rows, 5)
    assert f"{n_rows} labelled train row(s): k-fold needs train images with labels" in str(err.value)
    assert "cv.n_folds" not in str(err.value)
    with pytest.raises(KibbleError, match=r"only 3 train rows for 5 folds; lower cv.n_folds to 3 or less"):
        assign_folds(pd.DataFrame({"sample_id": ["a", "b", "c"], "label": ["cat"] * 3}), 5)


def test_training_warns_about_train_rows_without_a_label_and_classes_without_train_images(tmp_path, caplog):
    from kibble.data.datamodule import ManifestDataModule
    from kibble.data.manifest import save_manifest

    ws = make_workspace(tmp_path / "ws")
    manifest = manifest_of(ws).reset_index()
    manifest.loc[manifest["sample_id"] == "s3", "label"] = None  # the only fox train image, label emptied
    save_manifest(manifest, ws.manifest, ["cat", "dog", "fox"])
    with caplog.at_level(logging.WARNING):
        dm = ManifestDataModule(str(ws.root), num_workers=0)
    messages = [r.getMessage() for r in caplog.records]
    assert any("1 train row(s) have no label (e.g. sample_id 's3') and are not trained on" in m for m in messages), messages
    assert any("1 class(es) have no train images: ['fox']; the model cannot learn them" in m for m in messages), messages
    assert "s3" not in set(dm.training_rows()["sample_id"])
