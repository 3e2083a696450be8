"""kibble.transaction: several files change together or not at all; leftovers of killed writers are cleaned."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kibble.io import atomic_write_text, current_path, host_tag, remove_file
from kibble.labels.lock import workspace_lock, workspace_transaction
from kibble.transaction import _apply, active_transaction, clean_temporaries, journal_path, recover, transaction


def files(root: Path) -> dict[str, str]:
    """What a reader sees: every file but the lock's folder and (hidden) temp files."""
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file() and ".kibble" not in p.parts and not p.name.endswith(".tmp")}


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_writes_in_a_transaction_appear_together_at_its_end(tmp_path: Path):
    atomic_write_text(tmp_path / "a.txt", "old a")
    with transaction(tmp_path, "test") as tx:
        atomic_write_text(tmp_path / "a.txt", "new a")
        atomic_write_text(tmp_path / "rounds" / "000" / "b.txt", "new b")
        assert files(tmp_path) == {"a.txt": "old a"}  # staged: invisible to other readers
        assert current_path(tmp_path / "a.txt").read_text() == "new a"  # ... but read back inside
        atomic_write_text(tmp_path / "a.txt", "newer a")  # staged twice: the latest wins
        atomic_write_text(tmp_path.parent / f"{tmp_path.name}-outside.txt", "now")  # not under the root: written at once
        assert (tmp_path.parent / f"{tmp_path.name}-outside.txt").is_file()
        assert active_transaction(tmp_path) is tx
    assert files(tmp_path) == {"a.txt": "newer a", "rounds/000/b.txt": "new b"}
    assert not journal_path(tmp_path).exists() and not list(tmp_path.rglob("*.tmp"))


def test_an_exception_in_a_transaction_changes_nothing(tmp_path: Path):
    atomic_write_text(tmp_path / "a.txt", "old a")
    with pytest.raises(ValueError):
        with transaction(tmp_path, "test"):
            atomic_write_text(tmp_path / "a.txt", "new a")
            remove_file(tmp_path / "a.txt")
            atomic_write_text(tmp_path / "b.txt", "new b")
            raise ValueError("a check failed after some writes")
    assert files(tmp_path) == {"a.txt": "old a"} and not list(tmp_path.rglob("*.tmp"))


def test_a_nested_transaction_joins_the_outer_one(tmp_path: Path):
    with transaction(tmp_path, "outer") as outer:
        with transaction(tmp_path, "inner") as inner:
            atomic_write_text(tmp_path / "a.txt", "a")
        assert inner is outer and files(tmp_path) == {}  # committed by the outer block only
        remove_file(tmp_path / "gone.txt")
    assert files(tmp_path) == {"a.txt": "a"}


def test_recovery_redoes_a_committed_transaction_and_can_run_twice(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    atomic_write_text(tmp_path / "a.txt", "old a")
    atomic_write_text(tmp_path / "gone.txt", "x")
    (tmp_path / "rounds").mkdir()
    atomic_write_text(tmp_path / "rounds" / "q.csv", "q")
    staged_a, staged_b = tmp_path / f".a.txt.{host_tag()}-1-x.tmp", tmp_path / f".b.txt.{host_tag()}-1-y.tmp"
    staged_a.write_text("new a")
    staged_b.write_text("new b")
    ops = [{"op": "replace", "from": staged_a.name, "to": "a.txt"}, {"op": "replace", "from": staged_b.name, "to": "b.txt"},
           {"op": "remove", "to": "gone.txt"}, {"op": "move", "from": "rounds", "to": "history/001/rounds"}]
    _apply(tmp_path, ops[:1])  # killed after the first rename
    journal_path(tmp_path).parent.mkdir()
    journal_path(tmp_path).write_text(json.dumps({"task": "kibble merge", "pid": 1, "started": "t", "ops": ops}))
    with caplog.at_level(logging.WARNING, logger="kibble"):
        line = recover(tmp_path)
    assert "finished an interrupted kibble merge (pid 1, t) from its commit record: 4 change(s)" in line
    assert files(tmp_path) == {"a.txt": "new a", "b.txt": "new b", "history/001/rounds/q.csv": "q"}
    assert recover(tmp_path) is None
    _apply(tmp_path, ops)  # every step can be redone
    assert files(tmp_path) == {"a.txt": "new a", "b.txt": "new b", "history/001/rounds/q.csv": "q"}
    assert [r.getMessage() for r in caplog.records] == [line]


def test_the_next_writer_removes_temp_files_of_dead_writers_only(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    (tmp_path / "rounds" / "000").mkdir(parents=True)
    (tmp_path / "images").mkdir()
    dead = [tmp_path / f".manifest.parquet.{host_tag()}-{dead_pid()}-abc_1234.tmp",
            tmp_path / "rounds" / "000" / f".queue.csv.{host_tag()}-{dead_pid()}-zz9.tmp",
            tmp_path / f".state.json.{'0' * 8 if host_tag() != '0' * 8 else '1' * 8}-1-old.tmp",  # another host, a day old
            tmp_path / ".label_events.parquet.k3j4h5g6.tmp"]  # named before temp files carried a pid: an hour old
    alive = [tmp_path / f".manifest.parquet.{host_tag()}-{os.getpid()}-live.tmp",  # a live writer's (here: this process)
             tmp_path / f".state.json.{'0' * 8 if host_tag() != '0' * 8 else '1' * 8}-1-new.tmp",
             tmp_path / ".label_events.parquet.a1b2c3d4.tmp",
             tmp_path / "images" / f".x.png.{host_tag()}-{dead_pid()}-img.tmp"]  # the image folder is not swept
    for path in dead + alive:
        path.write_text("partial")
    old = time.time() - 2 * 24 * 3600
    for path in dead[2:]:
        os.utime(path, (old, old))
    staged_folder = tmp_path / "history" / f".001-x.{host_tag()}-{dead_pid()}-dir.tmp"
    (staged_folder / "sub").mkdir(parents=True)
    (staged_folder / "sub" / "f").write_text("copy")
    with caplog.at_level(logging.WARNING, logger="kibble"):
        with workspace_lock(tmp_path, "kibble merge"):
            pass
        with workspace_lock(tmp_path, "kibble merge"):  # nothing left to say the second time
            pass
    assert not any(p.exists() for p in dead) and not staged_folder.exists()
    assert all(p.exists() for p in alive)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "removed 5 temporary file(s) left by interrupted writes" in lines[0], lines


def test_workspace_transaction_holds_the_lock_and_commits_at_the_end(tmp_path: Path):
    with workspace_transaction(tmp_path, "kibble merge") as lock_file:
        atomic_write_text(tmp_path / "state.json", "{}")
        assert (lock_file.parent / "holder.json").is_file() and not (tmp_path / "state.json").exists()
    assert (tmp_path / "state.json").read_text() == "{}"


def test_a_reader_waits_for_a_live_writer_to_apply_its_commit_instead_of_taking_over(tmp_path: Path):
    from kibble.transaction import settle

    journal_path(tmp_path).parent.mkdir()
    with workspace_lock(tmp_path, "kibble merge"):  # a live writer between its commit record and its renames
        journal_path(tmp_path).write_text(json.dumps({"task": "kibble merge", "ops": []}))
        start = time.monotonic()
        settle(tmp_path, wait_s=0.3)  # here the same process, another lock descriptor: as another process sees it
        assert time.monotonic() - start >= 0.3 and journal_path(tmp_path).is_file()
        journal_path(tmp_path).unlink()
