"""Re-import and append never lose an answer: a failing import writes nothing, a re-import archives the old
history and carries its human answers, an append adds images and keeps everything (kibble.data.reimport)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from helpers import import_workspace, write_noise_jpegs
from kibble import KibbleError
from kibble.data.classes import ClassList
from kibble.labels.history import load_events
from kibble.labels.merge import merge_reviews
from kibble.labels.reviews import validate_reviews
from kibble.paths import Workspace


def tree_digest(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under root (the workspace, byte for byte)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def review_some(ws_path: Path, n: int = 6) -> pd.DataFrame:
    """Merge `n` corrections (alice, round 0) into the workspace and leave a round-0 queue file behind."""
    ws = Workspace(ws_path)
    classes = ClassList.load(ws.classes)
    manifest = pd.read_parquet(ws.manifest)
    rows = manifest[manifest.split == "train"].head(n)
    wrong = [classes.names[(classes.names.index(l) + 1) % len(classes.names)] for l in rows["label"]]
    reviews = validate_reviews(pd.DataFrame({"sample_id": rows["sample_id"].values, "label": wrong, "verdict": "corrected",
                                             "annotator": "alice"}), manifest, classes.names)
    merge_reviews(ws, reviews, round_index=0)
    (ws.round_dir(0)).mkdir(parents=True, exist_ok=True)
    rows[["sample_id", "path"]].to_csv(ws.round_dir(0) / "queue.csv", index=False)
    return pd.DataFrame({"sample_id": rows["sample_id"].values, "label": wrong})


@pytest.mark.parametrize("override", [["taxonomy=no_such_taxonomy"], ["source=image_folder", "source.root=/nonexistent/images"]],
                         ids=["unknown_taxonomy", "bad_source_path"])
def test_a_failing_reimport_leaves_the_workspace_byte_identical(fresh_digits_workspace, override):
    review_some(fresh_digits_workspace)
    before = tree_digest(fresh_digits_workspace)
    with pytest.raises(Exception) as err:  # Hydra wraps an importer's KibbleError; the CLI prints its one line
        import_workspace(fresh_digits_workspace, ["overwrite=true", *override])
    assert isinstance(err.value, KibbleError) or isinstance(err.value.__cause__, KibbleError)
    assert tree_digest(fresh_digits_workspace) == before


def test_reimport_archives_the_history_and_carries_human_answers_over(fresh_digits_workspace):
    ws = Workspace(fresh_digits_workspace)
    answers = review_some(fresh_digits_workspace)
    old_events = load_events(ws.label_events)
    old_manifest = pd.read_parquet(ws.manifest)
    import_workspace(fresh_digits_workspace, ["overwrite=true"])

    archives = sorted((ws.root / "history").iterdir())
    assert len(archives) == 1 and archives[0].name.startswith("001-")
    pd.testing.assert_frame_equal(pd.read_parquet(archives[0] / "label_events.parquet"), old_events)
    pd.testing.assert_frame_equal(pd.read_parquet(archives[0] / "manifest.parquet"), old_manifest)
    assert (archives[0] / "classes.yaml").is_file() and (archives[0] / "rounds" / "000" / "queue.csv").is_file()
    assert not (ws.root / "rounds").exists()  # moved, not deleted

    events = load_events(ws.label_events)
    human = old_events[old_events.source != "import"]
    assert set(human.event_id) <= set(events.event_id)  # the same answers, same ids
    labels = pd.read_parquet(ws.manifest).set_index("sample_id")["label"]
    assert (labels.loc[answers.sample_id].values == answers.label.values).all()  # still resolved as answered
    assert ws.current_round() == 1  # round numbers go on after the archived rounds


def test_reimport_of_fewer_samples_leaves_answers_about_gone_ones_in_the_archive(fresh_digits_workspace, tmp_path):
    ws = Workspace(fresh_digits_workspace)
    answers = review_some(fresh_digits_workspace, n=4)
    manifest = pd.read_parquet(ws.manifest)
    gone = answers.sample_id.iloc[0]
    table = tmp_path / "subset.csv"
    manifest[manifest.sample_id != gone][["sample_id", "path", "label", "split"]].to_csv(table, index=False)
    report = import_workspace(fresh_digits_workspace, ["overwrite=true", "source=csv", f"source.path={table}",
                                                      f"source.root={ws.data_root}"])
    assert report  # the workspace path
    events = load_events(ws.label_events)
    assert gone not in set(events.sample_id)
    assert set(answers.sample_id.iloc[1:]) <= set(events[events.source == "review"].sample_id)
    archived = pd.read_parquet(next((ws.root / "history").iterdir()) / "label_events.parquet")
    assert gone in set(archived[archived.source == "review"].sample_id)


def test_keep_history_false_archives_but_starts_from_the_imported_labels(fresh_digits_workspace):
    ws = Workspace(fresh_digits_workspace)
    review_some(fresh_digits_workspace)
    import_workspace(fresh_digits_workspace, ["overwrite=true", "keep_history=false"])
    assert set(load_events(ws.label_events).source) == {"import"}
    assert ws.current_round() == 0
    archived = pd.read_parquet(next((ws.root / "history").iterdir()) / "label_events.parquet")
    assert (archived.source == "review").sum() == 6


def test_append_adds_pool_images_and_keeps_everything(fresh_digits_workspace, tmp_path):
    ws = Workspace(fresh_digits_workspace)
    review_some(fresh_digits_workspace)
    old_events = load_events(ws.label_events)
    old_manifest = pd.read_parquet(ws.manifest)
    rounds_before = tree_digest(ws.root / "rounds")
    write_noise_jpegs(tmp_path / "new", ["a.jpg", "b.jpg", "sub/c.jpg"])
    import_workspace(fresh_digits_workspace, ["mode=append", f"pool.folder={tmp_path / 'new'}"])

    manifest = pd.read_parquet(ws.manifest)
    assert len(manifest) == len(old_manifest) + 3
    added = manifest[~manifest.sample_id.isin(old_manifest.sample_id)]
    assert set(added.split) == {"pool"} and added.label.isna().all()
    pd.testing.assert_frame_equal(manifest.iloc[: len(old_manifest)][old_manifest.columns].reset_index(drop=True),
                                  old_manifest, check_dtype=False)
    pd.testing.assert_frame_equal(load_events(ws.label_events), old_events)  # pool rows have no label: no event
    assert tree_digest(ws.root / "rounds") == rounds_before
    assert ws.current_round() == 1


def test_append_of_a_known_sample_id_with_another_file_is_one_line(fresh_digits_workspace, tmp_path):
    ws = Workspace(fresh_digits_workspace)
    manifest = pd.read_parquet(ws.manifest)
    write_noise_jpegs(tmp_path / "imgs", ["x.jpg"])
    table = tmp_path / "t.csv"
    pd.DataFrame({"sample_id": [manifest.sample_id.iloc[0]], "path": ["x.jpg"], "label": [manifest.label.iloc[0]],
                  "split": ["train"]}).to_csv(table, index=False)
    before = tree_digest(ws.root)
    with pytest.raises(KibbleError, match=r"already in the workspace as .* \(1 such\); mode=append only adds") as err:
        import_workspace(fresh_digits_workspace, ["mode=append", "source=csv", f"source.path={table}"])
    assert "\n" not in str(err.value)
    assert tree_digest(ws.root) == before


def test_append_labelled_rows_get_import_events(fresh_digits_workspace, tmp_path):
    ws = Workspace(fresh_digits_workspace)
    write_noise_jpegs(tmp_path / "imgs", ["x.jpg", "y.jpg"])
    table = tmp_path / "t.csv"
    pd.DataFrame({"sample_id": ["new/x", "new/y"], "path": ["imgs/x.jpg", "imgs/y.jpg"], "label": ["3", None],
                  "split": ["train", "pool"]}).to_csv(table, index=False)
    n_events = len(load_events(ws.label_events))
    import_workspace(fresh_digits_workspace, ["mode=append", "source=csv", f"source.path={table}"])
    events = load_events(ws.label_events)
    assert len(events) == n_events + 1 and events.iloc[-1].sample_id == "new/x"
    manifest = pd.read_parquet(ws.manifest).set_index("sample_id")
    assert Path(manifest.loc["new/x", "path"]).is_absolute()  # outside the workspace's data root: kept absolute


def test_new_import_into_an_imported_workspace_points_to_append_and_overwrite(fresh_digits_workspace):
    with pytest.raises(KibbleError, match="mode=append to add images, or overwrite=true to re-import"):
        import_workspace(fresh_digits_workspace)


def test_an_import_with_a_class_without_train_images_says_so(tmp_path):
    write_noise_jpegs(tmp_path / "imgs", ["a.jpg", "b.jpg", "c.jpg"])
    table = tmp_path / "t.csv"
    pd.DataFrame({"path": ["imgs/a.jpg", "imgs/b.jpg", "imgs/c.jpg"], "label": ["cat", "cat", "dog"],
                  "split": ["train", "train", "test"]}).to_csv(table, index=False)
    ws = import_workspace(tmp_path / "ws", ["source=csv", f"source.path={table}"])
    notes = json.loads((ws / "import_report.json").read_text())["notes"]
    assert any(n.startswith("warning: 1 class(es) without train images: ['dog']") for n in notes)


def test_a_reimport_failing_after_its_archive_leaves_the_workspace_as_it_was(fresh_digits_workspace, monkeypatch):
    """The archive (copies, the move of rounds/) and the new files are one transaction (kibble.transaction)."""
    import kibble.data.reimport as reimport

    review_some(fresh_digits_workspace)
    before = {k: v for k, v in tree_digest(fresh_digits_workspace).items() if not k.startswith(".kibble/")}

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(reimport, "save_manifest", fail)  # after the archive and the new history were staged
    with pytest.raises(Exception) as err:
        import_workspace(fresh_digits_workspace, ["overwrite=true"])
    assert "disk full" in str(err.value) or "disk full" in str(err.value.__cause__)
    after = {k: v for k, v in tree_digest(fresh_digits_workspace).items() if not k.startswith(".kibble/")}
    assert after == before  # no archive, rounds/ in place, no temp files
    assert not (fresh_digits_workspace / "history").exists() or not any((fresh_digits_workspace / "history").iterdir())
