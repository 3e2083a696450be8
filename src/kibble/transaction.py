"""One transaction over several workspace files: a crash leaves all of them old or all of them new.

Why: a merge changes the label history, the manifest's label view, the round state (and the policy
file, the round's quality files, a pull's export); each file was replaced atomically, but one after
the other, so a kill between two renames left a history and a manifest that disagreed. Protocol
(docs/design-notes.md, "Crash-safe label transactions"):

1. stage: every write under the workspace goes to a temp file beside its target (`kibble.io.atomic_path`
   sees the active transaction), which is fsynced and kept; deletions and folder moves are recorded;
2. commit: one small commit record, `W/.kibble/transaction.json` (the renames to do, in order), is
   written to a temp file, fsynced and renamed into place: the transaction is committed;
3. apply: each staged file is renamed over its target, the folders are fsynced, the record deleted.

Recovery (`recover`, run by every writer right after it takes the workspace lock, and by readers
through `settle` from `Workspace.require`): a commit record means a committed transaction whose
renames may be unfinished; they are redone (each one is idempotent: a staged file that is gone was
already renamed) and the record deleted, with one log line. No record means nothing was committed: the
staged files of a killed transaction are ordinary leftover temp files, invisible to every reader,
which `clean_temporaries` deletes (again under the lock, one log line) once their writer is dead.

Transactions run inside the workspace lock (`kibble.labels.lock.workspace_transaction`); this module
knows nothing of the lock beyond its file name, so a reader can try it without waiting.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from kibble import KibbleError
from kibble.io import STAGER, crash_point, fsync_path, host_tag, new_temp

log = logging.getLogger(__name__)

CONTROL_DIR = ".kibble"  # the lock, its holder file and the commit record: never part of a transaction
LOCK_FILE = "workspace.lock"
JOURNAL = "transaction.json"
SWEEP_SKIP = ("images", "runs", "multiruns")  # top-level folders the temp sweep leaves alone (many files, no kibble temp files)
SWEEP_DEPTH = 5
OTHER_HOST_AGE_S = 24 * 3600  # a temp file of another machine: its pid cannot be checked from here
LEGACY_AGE_S = 3600  # temp files named before they carried host and pid
_TEMP = re.compile(r"^\..+\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[A-Za-z0-9_]+\.tmp$")
_LEGACY_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def journal_path(root: str | Path) -> Path:
    return Path(root) / CONTROL_DIR / JOURNAL


class Transaction:
    """The staged writes of one transaction over the files under `root` (but `root/.kibble/`)."""

    def __init__(self, root: str | Path, task: str, parent: Transaction | None = None):
        self.root = Path(os.path.abspath(root))
        self.task = task
        self.parent = parent
        self.ops: dict[str, dict[str, str]] = {}  # target (relative to root) -> its change, in the order made

    # -- what kibble.io asks ------------------------------------------------------------------
    def covers(self, target: Path) -> bool:
        return self._own(target) or (self.parent is not None and self.parent.covers(target))

    @contextmanager
    def stage(self, target: Path, directory: bool = False) -> Iterator[Path]:
        """Yield a temp path (file or folder) for `target`; keep it, fsynced, for the commit."""
        if not self._own(target):
            with self.parent.stage(target, directory) as staged:  # type: ignore[union-attr]
                yield staged
            return
        tmp = new_temp(target, directory=directory)
        try:
            crash_point()
            yield tmp
            _fsync_tree(tmp)
            crash_point()
        except BaseException:
            _remove(tmp)
            raise
        key = self._key(target)
        self._drop(key)  # staged twice: the latest version wins
        self.ops[key] = {"op": "replace", "from": self._key(tmp), "to": key}

    def current(self, target: Path) -> Path:
        """The staged version of `target`, for a reader inside this transaction (a missing path if removed)."""
        if not self._own(target):
            return self.parent.current(target) if self.parent is not None else target
        op = self.ops.get(self._key(target))
        if op is None or op["op"] == "move":
            return target
        if op["op"] == "remove":
            return self.root / CONTROL_DIR / "removed" / op["to"]
        return self.root / op["from"]

    def remove(self, target: Path) -> None:
        if not self._own(target):
            self.parent.remove(target)  # type: ignore[union-attr]
            return
        key = self._key(target)
        self._drop(key)
        self.ops[key] = {"op": "remove", "to": key}

    def move(self, source: Path, target: Path) -> None:
        """Rename `source` (a file or folder under root) to `target` at commit."""
        key = self._key(target)
        self._drop(key)
        self.ops[key] = {"op": "move", "from": self._key(source), "to": key}

    # -- commit / abort ---------------------------------------------------------------------------
    def commit(self) -> int:
        """Write the commit record, apply it, delete it; returns the number of changes."""
        ops = list(self.ops.values())
        if not ops:
            return 0
        journal = journal_path(self.root)
        try:
            for folder in {(self.root / op["from"]).parent for op in ops if op["op"] == "replace"}:
                fsync_path(folder)  # the staged files' names are on the disk before the record that names them
            record = {"format": 1, "task": self.task, "pid": os.getpid(), "host": socket.gethostname(),
                      "started": datetime.now().astimezone().isoformat(timespec="seconds"), "ops": ops}
            tmp = new_temp(journal)
            try:
                with open(tmp, "w") as fh:
                    json.dump(record, fh, indent=1)
                    fh.flush()
                    os.fsync(fh.fileno())
                crash_point()
                os.replace(tmp, journal)  # the commit point
            finally:
                tmp.unlink(missing_ok=True)
        except BaseException:
            self.abort()  # not committed: nothing changes
            raise
        fsync_path(journal.parent)
        crash_point()
        _apply(self.root, ops)
        journal.unlink()
        crash_point()
        self.ops = {}
        return len(ops)

    def abort(self) -> None:
        """Delete what was staged: the files under root stay as they were."""
        for key in list(self.ops):
            self._drop(key)
        self.ops = {}

    # -- helpers ------------------------------------------------------------------------------------
    def _own(self, target: Path) -> bool:
        try:
            rel = Path(os.path.abspath(target)).relative_to(self.root)
        except ValueError:
            return False
        return bool(rel.parts) and rel.parts[0] != CONTROL_DIR

    def _key(self, path: Path) -> str:
        return Path(os.path.abspath(path)).relative_to(self.root).as_posix()

    def _drop(self, key: str) -> None:
        op = self.ops.pop(key, None)
        if op is not None and op["op"] == "replace":
            _remove(self.root / op["from"])


@contextmanager
def transaction(root: str | Path, task: str) -> Iterator[Transaction]:
    """Every write under `root` in the block (this thread) is staged; all are committed when it ends.

    An exception aborts: nothing under root changes. Nested use for the same root joins the outer
    transaction (it commits when the outermost block ends). The caller holds the workspace lock.
    """
    active = STAGER.get()
    joined = active_transaction(root)
    if joined is not None:
        yield joined
        return
    tx = Transaction(root, task, parent=active if isinstance(active, Transaction) else None)
    token = STAGER.set(tx)
    try:
        yield tx
    except BaseException:
        STAGER.reset(token)
        tx.abort()
        raise
    STAGER.reset(token)
    tx.commit()


def active_transaction(root: str | Path) -> Transaction | None:
    """The transaction staging writes under `root` in this thread, if any."""
    tx = STAGER.get()
    root = Path(os.path.abspath(root))
    while isinstance(tx, Transaction):
        if tx.root == root:
            return tx
        tx = tx.parent
    return None


def _apply(root: Path, ops: list[dict[str, str]]) -> None:
    """Do the changes of a commit record; every step can be redone (recovery after a kill)."""
    folders = set()
    for op in ops:
        target = root / op["to"]
        if op["op"] == "replace":
            source = root / op["from"]
            if os.path.lexists(source):  # gone: renamed before the kill
                os.replace(source, target)
        elif op["op"] == "move":
            source = root / op["from"]
            if os.path.lexists(source) and not os.path.lexists(target):
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, target)
        elif op["op"] == "remove":
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        else:
            raise KibbleError(f"{journal_path(root)}: unknown change {op['op']!r} in the commit record; "
                              "it was written by a newer kibble: finish the transaction with that version")
        folders.add(target.parent)
        crash_point()
    for folder in folders:
        if folder.is_dir():
            fsync_path(folder)


def recover(root: str | Path) -> str | None:
    """Finish a committed transaction a killed writer left (call it holding the workspace lock).

    Returns the one line logged, or None when there was nothing to do."""
    root = Path(os.path.abspath(root))
    journal = journal_path(root)
    if not journal.is_file():
        return None
    try:
        record = json.loads(journal.read_text())
        ops = list(record["ops"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise KibbleError(f"{journal}: unreadable commit record ({err}); it names the staged files of an interrupted "
                          "transaction: move it out of .kibble/ to open the workspace as its files are now") from None
    _apply(root, ops)
    journal.unlink()
    fsync_path(journal.parent)
    line = f"{root}: finished an interrupted {describe(record)} from its commit record: {len(ops)} change(s) put in place"
    log.warning(line)
    return line


def settle(root: str | Path, wait_s: float = 30.0) -> None:
    """For a reader: make sure no committed transaction is half applied before it opens files.

    Nothing to do without a commit record (the common case: one stat). With one, take the workspace
    lock if free and recover; if a live writer holds it, it is applying its own commit: wait until
    the record is gone (up to `wait_s`)."""
    from filelock import FileLock, Timeout

    root = Path(os.path.abspath(root))
    journal = journal_path(root)
    if not journal.is_file():
        return
    lock = FileLock(str(root / CONTROL_DIR / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:  # a live writer holds the lock: it is applying its own commit
        deadline = time.monotonic() + wait_s
        while journal.is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        return
    except OSError as err:  # (Timeout is an OSError too) a reader without write permission cannot finish it
        log.warning("%s: an interrupted %s is not finished yet and this process cannot finish it (%s); "
                    "run any kibble command that writes (e.g. kibble merge) as the workspace's owner", root,
                    _task_of(journal), err)
        return
    try:
        recover(root)
    finally:
        lock.release()


def _task_of(journal: Path) -> str:
    try:
        return describe(json.loads(journal.read_text()))
    except (OSError, ValueError, AttributeError):
        return "transaction"


def clean_temporaries(root: str | Path) -> list[Path]:
    """Delete the temp files (and staged folders) that killed writers left under `root`; one log line.

    A temp file names its host and pid (`kibble.io.new_temp`): it is removed when that process is
    gone (on this host), or after a day (another host), or after an hour (an older, unnamed one).
    Call it holding the workspace lock, after `recover`."""
    root = Path(os.path.abspath(root))
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    now = time.time()
    mine = host_tag()
    for folder, dirnames, filenames in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        if depth == 0:
            dirnames[:] = [d for d in dirnames if d not in SWEEP_SKIP]
        if depth >= SWEEP_DEPTH:
            dirnames[:] = []
        for name in [d for d in dirnames if d.endswith(".tmp")] + [f for f in filenames if f.endswith(".tmp")]:
            path = Path(folder) / name
            if _stale(path, name, mine, now):
                _remove(path)
                removed.append(path)
                if name in dirnames:
                    dirnames.remove(name)
    if removed:
        shown = ", ".join(str(p.relative_to(root)) for p in removed[:3]) + (" ..." if len(removed) > 3 else "")
        log.warning("%s: removed %d temporary file(s) left by interrupted writes: %s", root, len(removed), shown)
    return removed


def _stale(path: Path, name: str, mine: str, now: float) -> bool:
    match = _TEMP.match(name)
    try:
        age = now - path.lstat().st_mtime
    except OSError:
        return False
    if match is None:
        return bool(_LEGACY_TEMP.match(name)) and age > LEGACY_AGE_S
    if match["host"] != mine:
        return age > OTHER_HOST_AGE_S
    return not _alive(int(match["pid"]))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    try:  # a killed child its parent has not reaped yet is a zombie: dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync_tree(path: Path) -> None:
    if path.is_dir():
        for sub in path.rglob("*"):
            if sub.is_file():
                fsync_path(sub)
    fsync_path(path)


def describe(record: dict[str, Any]) -> str:
    """`kibble merge (pid 1234, 2024-05-01T14:02:11+00:00)` of a commit record."""
    return f"{record.get('task') or 'a transaction'} (pid {record.get('pid')}, {record.get('started')})"
