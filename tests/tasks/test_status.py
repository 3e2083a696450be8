"""`kibble status`: one screen of where a workspace stands, read-only, and the next command.

A round is made cheaply: a synthetic OOF (no training) -> `kibble queue` -> reviews -> `kibble merge`,
the same files `kibble kfold` + the round callbacks would leave.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import compose_config
from kibble import KibbleError
from kibble.cli import main as cli_main
from kibble.data.classes import ClassList
from kibble.paths import Workspace
from kibble.predictions.store import make_frame, write_store
from kibble.tasks import merge, queue, status

N_QUEUED = 20
N_CORRECTED = 8


def snapshot(root: Path) -> dict[str, str]:
    """Every file (and folder) under root with its content hash: what 'nothing written' compares."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return out


def run_status(ws: Path, tmp: Path, *extra: str) -> dict:
    return status.run(compose_config("status", [f"workspace={ws}", *extra], output_dir=tmp / "status_out"))


def write_oof(ws: Path) -> None:
    """rounds/000/oof.parquet as kfold assembles it: every train image, confident in its given label but
    for the first N_QUEUED, which the 'model' doubts."""
    classes = ClassList.load(ws / "classes.yaml").names
    manifest = pd.read_parquet(ws / "manifest.parquet")
    train = manifest[manifest["split"] == "train"].reset_index(drop=True)
    given = [classes.index(l) for l in train["label"]]
    probs = np.full((len(train), len(classes)), 0.02, dtype=np.float32)
    probs[np.arange(len(train)), given] = 1.0
    probs[:N_QUEUED] = 0.1
    probs[np.arange(N_QUEUED), [(g + 1) % len(classes) for g in given[:N_QUEUED]]] = 0.5
    probs /= probs.sum(1, keepdims=True)
    rd = Workspace(ws).round_dir(0)
    rd.mkdir(parents=True)
    write_store(rd / "oof.parquet", make_frame(train["sample_id"].tolist(), probs, train["label"].tolist(), fold=0),
                {"class_names": classes, "complete": True})
    (rd / "round.json").write_text(json.dumps({"round": 0, "n_folds": 3}))
    (rd / "metrics.json").write_text(json.dumps({"round": 0, "oof_accuracy_given": 0.987, "test_accuracy": 0.95}))


@pytest.fixture(scope="module")
def rounds(digits_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three copies of the digits workspace: fresh, round 0 queued, round 0 merged (-> round 1)."""
    root = tmp_path_factory.mktemp("status")
    out = {"fresh": root / "fresh", "queued": root / "queued", "merged": root / "merged"}
    shutil.copytree(digits_workspace, out["fresh"], ignore=shutil.ignore_patterns("runs", "multiruns"))
    shutil.copytree(out["fresh"], out["queued"])
    write_oof(out["queued"])
    queue.run(compose_config("queue", [f"workspace={out['queued']}", "strategy.strategies=[self_confidence]", "strategy.params={}",
                                       f"strategy.budget={N_QUEUED}"], output_dir=root / "queue_out"))
    shutil.copytree(out["queued"], out["merged"], ignore=shutil.ignore_patterns("runs", "multiruns"))
    q = pd.read_csv(out["merged"] / "rounds/000/queue.csv", dtype=str, keep_default_na=False)
    reviews = pd.DataFrame({
        "sample_id": q["sample_id"], "annotator": "ann",
        "label": [s if i < N_CORRECTED else g for i, (s, g) in enumerate(zip(q["suggested_label"], q["given_label"]))],
        "verdict": ["corrected" if i < N_CORRECTED else "confirmed" for i in range(len(q))],
    })
    reviews.to_csv(root / "reviews.csv", index=False)
    merge.run(compose_config("merge", [f"workspace={out['merged']}", f"reviews={root / 'reviews.csv'}"], output_dir=root / "merge_out"))
    return out


def test_fresh_workspace(rounds: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture):
    d = run_status(rounds["fresh"], tmp_path)
    screen = capsys.readouterr().out
    assert d["round"] == 0 and d["splits"]["train"]["rows"] > 0 and set(d["splits"]) >= {"train", "test"}
    assert d["labels"]["changed"] == 0 and d["labels"]["answers"] == 0
    assert [r["round"] for r in d["rounds"]] == [0] and not d["rounds"][0]["oof"]
    assert d["next"]["command"] == f"kibble kfold workspace={rounds['fresh']}"
    for text in ("round 0", "split", "train", "labels changed so far: 0 of", "flagged annotators: none", "drift:",
                 f"next: kibble kfold workspace={rounds['fresh']}"):
        assert text in screen, screen


def test_queued_round_waits_for_reviews(rounds: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture):
    d = run_status(rounds["queued"], tmp_path)
    r0 = d["rounds"][0]
    assert r0["oof"] and r0["queue"]["n"] == N_QUEUED and r0["pushed"] is None and r0["merged"] is None
    assert d["next"]["command"].startswith(f"kibble merge workspace={rounds['queued']} reviews=")
    assert "0.987/0.950" in capsys.readouterr().out


def test_after_a_merge(rounds: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture):
    d = run_status(rounds["merged"], tmp_path)
    screen = capsys.readouterr().out
    assert d["round"] == 1
    assert d["labels"]["changed"] == N_CORRECTED and d["labels"]["answers"] == N_QUEUED and d["labels"]["corrected"] == N_CORRECTED
    r0, r1 = d["rounds"]
    assert r0["merged"] == {"answers": N_QUEUED, "images": N_QUEUED, "corrected": N_CORRECTED, "queued_answered": N_QUEUED, "queued": N_QUEUED}
    assert r1["round"] == 1 and not r1["oof"]
    assert d["next"]["command"] == f"kibble kfold workspace={rounds['merged']}"
    assert f"labels changed so far: {N_CORRECTED} of" in screen and f"{N_QUEUED} answers, {N_CORRECTED} corrected" in screen
    assert "001*" in screen, screen


def test_push_pull_flags_drift_and_a_writer(rounds: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture):
    ws = tmp_path / "ws"
    shutil.copytree(rounds["queued"], ws)
    rd = ws / "rounds" / "000"
    q = pd.read_csv(rd / "queue.csv", dtype=str)
    (rd / "labelstudio.json").write_text(json.dumps({"project_id": 7, "server": "http://ls", "tasks": {k: i for i, k in enumerate(q["queue_id"])}}))
    d = run_status(ws, tmp_path)
    assert d["rounds"][0]["pushed"]["tasks"] == N_QUEUED and d["next"]["command"] == f"kibble labelstudio pull workspace={ws} round=0"
    (rd / "labelstudio_export.json").write_text(json.dumps(
        [{"id": 1, "annotations": [{"was_cancelled": False}]}, {"id": 2, "annotations": [{"was_cancelled": True}]}, {"id": 3}]))
    (rd / "annotator_quality.json").write_text(json.dumps(
        {"flagged": ["bob"], "annotators": [{"annotator": "bob", "flag_reason": "gold accuracy 0.40 < 0.80 on 5 gold items"}]}))
    (ws / "monitor" / "batch1").mkdir(parents=True)
    (ws / "monitor" / "batch1" / "monitor.json").write_text(json.dumps(
        {"verdict": "drift", "drifted": True, "n_current": 300, "n_reference": 359, "queue": {"n": 50},
         "checks": [{"name": "mmd", "drifted": True, "decides": True}, {"name": "psi", "drifted": True, "decides": False}]}))
    (ws / "rounds" / "000" / "metrics.json").write_text("{not json")
    capsys.readouterr()
    d = run_status(ws, tmp_path)
    screen = capsys.readouterr().out
    assert d["rounds"][0]["pulled"] == {"tasks": 3, "annotated": 1}
    assert d["flagged"] == {0: [{"annotator": "bob", "reason": "gold accuracy 0.40 < 0.80 on 5 gold items"}]}
    assert d["monitor"][0]["verdict"] == "drift" and d["monitor"][0]["fired"] == ["mmd"] and d["monitor"][0]["path"] == "monitor/batch1"
    assert "1/3 annotated" in screen and "round 0: bob (gold accuracy 0.40" in screen and "DRIFT  monitor/batch1  300 current vs 359 reference; mmd" in screen
    assert "! rounds/000/metrics.json: unreadable (JSONDecodeError" in screen
    # a writer holds the lock: say so, and the next step is to wait
    (ws / ".kibble").mkdir(exist_ok=True)
    (ws / ".kibble" / "holder.json").write_text(json.dumps({"task": "kibble merge", "pid": os.getpid(), "host": None}))
    d = run_status(ws, tmp_path)
    screen = capsys.readouterr().out
    assert "being written by kibble merge (pid" in screen and d["next"]["command"] == ""
    (ws / ".kibble" / "holder.json").write_text(json.dumps({"task": "kibble merge", "pid": 2**22 + 12345, "host": None}))
    d = run_status(ws, tmp_path)
    assert "that process is gone" in capsys.readouterr().out and d["next"]["command"].startswith("kibble labelstudio pull")


def test_the_command_writes_nothing(rounds: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """Through the real `kibble status` entry point (Hydra and all): no run dir, no lock file, no byte changed."""
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")  # the cli sets these for its process; monkeypatch restores them
    monkeypatch.setenv("KIBBLE_TASK", "")
    monkeypatch.setattr(sys, "argv", ["kibble", "status"])
    monkeypatch.chdir(rounds["merged"])  # even run from inside the workspace
    for name in ("fresh", "merged"):
        before = snapshot(rounds[name])
        assert cli_main(["status", f"workspace={rounds[name]}"]) == 0
        assert "next: kibble kfold" in capsys.readouterr().out
        assert snapshot(rounds[name]) == before


def test_not_a_workspace_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    with pytest.raises(KibbleError, match="no such directory"):
        run_status(tmp_path / "missing", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(KibbleError, match="not a kibble workspace"):
        run_status(tmp_path / "empty", tmp_path)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    monkeypatch.setenv("KIBBLE_TASK", "")
    monkeypatch.setattr(sys, "argv", ["kibble", "status"])
    assert cli_main(["status", f"workspace={tmp_path / 'empty'}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kibble status: error: ") and "not a kibble workspace" in err[0], err
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == []


def test_next_kfold_keeps_the_last_kfold_runs_overrides(rounds: dict[str, Path], tmp_path: Path):
    """Round 1 must train as round 0 did: the overrides of the latest `kibble kfold` run come along, the
    round-specific ones (round=, cv.fold=, workspace=) do not; half-done folds are counted."""
    ws = tmp_path / "ws"
    shutil.copytree(rounds["merged"], ws)
    for stamp, overrides in (("2024-01-01_10-00-00", ["experiment=old"]),
                             ("2024-01-02_10-00-00", [f"workspace={ws}", "experiment=demo_digits", "round=0", "cv.fold=1", "trainer.max_epochs=2"])):
        (ws / "runs" / "kfold" / stamp / ".hydra").mkdir(parents=True)
        (ws / "runs" / "kfold" / stamp / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    rd = ws / "rounds" / "001"
    (rd / "fold_0").mkdir(parents=True)
    (rd / "round.json").write_text(json.dumps({"round": 1, "n_folds": 3}))
    (rd / "fold_0" / "heldout.meta.json").write_text(json.dumps({"complete": True}))
    d = run_status(ws, tmp_path)
    assert d["next"]["command"] == f"kibble kfold workspace={ws} experiment=demo_digits trainer.max_epochs=2"
    assert "1 of 3 folds done" in d["next"]["why"] and d["rounds"][1]["folds_done"] == 1
