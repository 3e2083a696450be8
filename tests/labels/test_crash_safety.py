"""A merge killed (SIGKILL) at any step leaves the workspace as before or as after it; the next command recovers.

A child process runs `merge_reviews` with KIBBLE_TEST_CRASH_AT=n (kibble.io.crash_point): it kills
itself at its n-th write step (temp file created, written, renamed; the commit record; each rename of
the commit). Every step of a merge is tried (23 here), each on its own copy of a tiny workspace.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from kibble.data.classes import ClassList
from kibble.data.manifest import save_manifest
from kibble.io import CRASH_ENV, atomic_write_parquet
from kibble.labels.history import initial_events, load_events
from kibble.labels.lock import workspace_lock
from kibble.labels.merge import merge_reviews
from kibble.labels.policy import resolve_labels
from kibble.labels.policy_file import read_policy_file
from kibble.paths import Workspace
from kibble.transaction import CONTROL_DIR, journal_path

CLASSES = ["cat", "dog", "fox"]
# The driver merges once uninterrupted (counting the steps), then forks one child per step, each on
# its own copy of the workspace, which kills itself there. Forking a warm process keeps the test fast
# (a fresh interpreter spends seconds importing pandas, pyarrow and scipy before the merge starts).
DRIVER = """
import json, os, shutil, sys
import pandas as pd
from kibble.io import CRASH_ENV, crash_steps
from kibble.labels.merge import merge_reviews
pristine, reference, reviews_path, workdir = sys.argv[1:5]
reviews = pd.read_parquet(reviews_path)
os.environ[CRASH_ENV] = str(10**9)
shutil.copytree(pristine, reference)
merge_reviews(reference, reviews, source="review", task="kibble merge")
n_steps = crash_steps()
runs = []
for k in range(1, n_steps + 1):
    ws = os.path.join(workdir, f"ws{k:02d}")
    shutil.copytree(pristine, ws)
    pid = os.fork()
    if pid == 0:
        os.environ[CRASH_ENV] = str(crash_steps() + k)
        try:
            merge_reviews(ws, reviews, source="review", task="kibble merge")
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    runs.append({"step": k, "workspace": ws, "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None})
print(json.dumps({"steps": n_steps, "runs": runs}))
"""


def make_workspace(root: Path, n: int = 60) -> Workspace:
    """n samples, three classes, no images (a merge does not open them)."""
    ws = Workspace(root)
    ws.root.mkdir(parents=True)
    manifest = pd.DataFrame({
        "sample_id": [f"s{i:03d}" for i in range(n)],
        "path": [f"img/s{i:03d}.png" for i in range(n)],
        "label": [CLASSES[i % 3] if i < n - 10 else None for i in range(n)],
        "split": ["train"] * (n - 20) + ["val"] * 10 + ["pool"] * 10,
    })
    ClassList.from_names(CLASSES).save(ws.classes)
    save_manifest(manifest, ws.manifest, CLASSES)
    atomic_write_parquet(ws.label_events, initial_events(manifest))
    ws.update_state(round=0, data_root=".")
    return ws


def make_reviews(n: int = 60) -> pd.DataFrame:
    """Two annotators: corrections, confirmations, a skip and new labels for pool images; fixed timestamps."""
    rows = []
    for i in range(0, n - 10, 2):
        rows.append({"sample_id": f"s{i:03d}", "label": CLASSES[(i + 1) % 3], "verdict": "corrected", "annotator": "alice"})
        rows.append({"sample_id": f"s{i:03d}", "label": CLASSES[(i + (i % 4 == 0)) % 3],
                     "verdict": "confirmed" if i % 4 else "corrected", "annotator": "bob"})
    rows.append({"sample_id": "s001", "label": None, "verdict": "skipped", "annotator": "bob"})
    rows += [{"sample_id": f"s{i:03d}", "label": "fox", "verdict": "corrected", "annotator": "alice"} for i in range(n - 10, n)]
    frame = pd.DataFrame(rows)
    frame["note"] = ""
    frame["created_at"] = "2024-05-01T12:00:00+00:00"
    return frame


def state_of(ws: Workspace) -> dict[str, str]:
    """Hash of every workspace file but the lock's folder and temp files; policy.yaml without its timestamps."""
    out = {}
    for path in sorted(ws.root.rglob("*")):
        rel = path.relative_to(ws.root)
        if not path.is_file() or rel.parts[0] == CONTROL_DIR or path.name.endswith(".tmp"):
            continue
        data = path.read_bytes()
        if path.name == "policy.yaml":
            saved = yaml.safe_load(data)
            data = json.dumps({"policy": saved["policy"], "changes": [{k: v for k, v in c.items() if k != "at"} for c in saved["changes"]]},
                              sort_keys=True).encode()
        out[str(rel)] = hashlib.sha256(data).hexdigest()
    return out


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.tmp")]


def check_consistent(ws: Workspace) -> None:
    """The workspace loads, event ids are unique, the manifest is the saved policy applied to the history."""
    events = load_events(ws.label_events)
    assert events["event_id"].is_unique
    saved = read_policy_file(ws)
    resolved = resolve_labels(events, saved["policy"] if saved else None).set_index("sample_id")
    manifest = pd.read_parquet(ws.manifest).set_index("sample_id")
    labels = manifest.loc[resolved.index, "label"].where(manifest.loc[resolved.index, "label"].notna(), None)
    assert labels.tolist() == resolved["label"].where(resolved["label"].notna(), None).tolist()


def copy_tree(source: Path, target: Path) -> Workspace:
    shutil.copytree(source, target)
    return Workspace(target)


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """{pristine, reference, reviews, steps, runs: [{step, workspace, signal}]}: a merge killed at each of its steps."""
    root = tmp_path_factory.mktemp("crash")
    pristine = make_workspace(root / "pristine")
    reviews = make_reviews()
    reviews.to_parquet(root / "reviews.parquet")
    (root / "killed").mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(CRASH_ENV, None)
    res = subprocess.run([sys.executable, "-c", DRIVER, str(pristine.root), str(root / "reference"), str(root / "reviews.parquet"),
                          str(root / "killed")], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    return {"pristine": pristine, "reference": Workspace(root / "reference"), "reviews": reviews, **out}


def test_a_merge_killed_at_any_step_leaves_before_or_after_and_rerunning_converges(killed: dict, tmp_path: Path,
                                                                                    caplog: pytest.LogCaptureFixture):
    before, after = state_of(killed["pristine"]), state_of(killed["reference"])
    assert after != before and not temp_files(killed["reference"].root)
    check_consistent(killed["reference"])
    assert killed["steps"] >= 20, killed["steps"]  # holder file, each staged file, the commit record, each rename
    outcomes = []
    for run in killed["runs"]:
        n = run["step"]
        assert run["signal"] == signal.SIGKILL, f"step {n} was not killed: {run}"
        ws = copy_tree(Path(run["workspace"]), tmp_path / f"ws{n:02d}")
        committed = journal_path(ws.root).is_file()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="kibble"):
            Workspace(ws.root).require()  # a reader: finishes a committed transaction, says so in one line
        assert not journal_path(ws.root).is_file()
        recovered = [r for r in caplog.records if "finished an interrupted kibble merge" in r.getMessage()]
        assert len(recovered) == int(committed), f"step {n}: {[r.getMessage() for r in caplog.records]}"
        now = state_of(ws)
        assert now in (before, after), f"step {n}: a mix of before and after"
        outcomes.append("after" if now == after else "before")
        check_consistent(ws)

        leftovers = temp_files(ws.root)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="kibble"):
            summary = merge_reviews(ws, killed["reviews"], source="review", task="kibble merge")  # the same merge again
        assert not temp_files(ws.root), f"step {n}: temp files left after the next writer"
        cleaned = [r for r in caplog.records if "temporary file(s) left by interrupted writes" in r.getMessage()]
        assert len(cleaned) == int(bool(leftovers)), f"step {n}: {leftovers}"
        assert state_of(ws) == after, f"step {n}: the re-run merge did not converge"
        assert (summary["n_events_added"] == 0) == (outcomes[-1] == "after")  # after: every answer already recorded
        check_consistent(ws)
    assert "before" in outcomes and "after" in outcomes, outcomes  # the kills fell on both sides of the commit point


def test_a_writer_finishes_a_committed_transaction_before_it_reads(killed: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    committed = [r for r in killed["runs"] if journal_path(Path(r["workspace"])).is_file()]
    assert len(committed) >= 3  # killed after the commit record: among the renames, before the record is deleted
    ws = copy_tree(Path(committed[len(committed) // 2]["workspace"]), tmp_path / "ws")
    with caplog.at_level(logging.WARNING, logger="kibble"), workspace_lock(ws, "kibble queue"):  # a writer, not a reader
        assert not journal_path(ws.root).is_file()
        assert state_of(ws) == state_of(killed["reference"])
    assert sum("finished an interrupted kibble merge" in r.getMessage() for r in caplog.records) == 1
