"""One lock per workspace, taken by every writer of the label history, the manifest and the round state.

Why: a merge reads the history and the manifest, decides, then writes both and the round; two writers
interleaving those steps lose answers (one merge's events overwritten by the other's append), repeat
event ids, or leave a manifest that is not the policy applied to the history. Every writer (import,
merge, labelstudio pull, the loop's merge step, k-fold assembly and queue writing) therefore runs its
read-decide-write inside `workspace_lock`; readers (train, eval, report, pandas) never need it, because
every file is replaced atomically.

The lock is an OS file lock (`filelock`: flock on POSIX, released by the kernel when the holder dies, so
a crash never leaves a stale lock) on `W/.kibble/workspace.lock`. The holder writes who it is (pid, task,
host, start time) to `W/.kibble/holder.json`, so a writer that gives up can say whom it waited for.
The lock is re-entrant within a thread: the loop holds it around its merge step, and the merge inside
takes it again for free.

Whoever takes the lock first finishes a transaction a killed writer committed but did not apply, and
deletes the temp files killed writers left (`kibble.transaction.recover`, `clean_temporaries`; one log
line each). `workspace_transaction` is the lock plus one transaction: every write under the workspace in
the block commits together, or not at all (docs/design-notes.md, "Crash-safe label transactions").
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from kibble import KibbleError
from kibble.io import atomic_write_json
from kibble.paths import Workspace
from kibble.transaction import CONTROL_DIR, LOCK_FILE, clean_temporaries, recover, transaction

log = logging.getLogger(__name__)

LOCK_DIR = CONTROL_DIR
HOLDER_FILE = "holder.json"
DEFAULT_TIMEOUT = 60.0

_held = threading.local()  # per thread: {lock path: [FileLock, depth]}


def lock_paths(workspace: str | Path | Workspace) -> tuple[Path, Path]:
    """(lock file, holder file) of a workspace."""
    root = workspace.root if isinstance(workspace, Workspace) else Path(workspace).expanduser().resolve()
    return root / LOCK_DIR / LOCK_FILE, root / LOCK_DIR / HOLDER_FILE


def default_task() -> str:
    """What a holder calls itself when the caller does not say: `kibble <task>` or the script's name."""
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if prog == "kibble" and len(sys.argv) > 1:
        return f"kibble {sys.argv[1]}"
    return prog


def read_holder(workspace: str | Path | Workspace) -> dict[str, Any] | None:
    """Who holds (or last held) the workspace lock; None when nobody wrote it."""
    try:
        return json.loads(lock_paths(workspace)[1].read_text())
    except (OSError, ValueError):
        return None


def describe_holder(holder: dict[str, Any] | None) -> str:
    """`kibble loop (pid 1234, since 14:02:11)`; the host too when it is another machine."""
    if not holder:
        return "another process"
    where = f"pid {holder.get('pid')}"
    if holder.get("host") and holder["host"] != socket.gethostname():
        where += f" on {holder['host']}"
    since = holder.get("started")
    if since:
        try:
            started = datetime.fromisoformat(since)
            since = started.strftime("%H:%M:%S" if started.date() == datetime.now().date() else "%Y-%m-%d %H:%M:%S")
        except ValueError:
            pass
        where += f", since {since}"
    return f"{holder.get('task') or 'an unnamed task'} ({where})"


def lock_timeout_of(cfg: Any, default: float = DEFAULT_TIMEOUT) -> float | None:
    """`lock_timeout` of a task config (seconds; null = wait without limit); the default when the key is absent."""
    if cfg is None or "lock_timeout" not in cfg:
        return default
    value = cfg.get("lock_timeout")
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise KibbleError(f"lock_timeout={value!r}: give seconds (e.g. lock_timeout=60) or null to wait without limit") from None
    if seconds < 0:
        raise KibbleError(f"lock_timeout={value!r}: give seconds >= 0 (e.g. lock_timeout=60) or null to wait without limit")
    return seconds


@contextmanager
def workspace_lock(workspace: str | Path | Workspace, task: str | None = None,
                   timeout: float | None = DEFAULT_TIMEOUT) -> Iterator[Path]:
    """Hold the workspace's writer lock for the block; wait up to `timeout` seconds (None: no limit) for it.

    Fails with one line naming the holder when the wait runs out; nothing has been written then.
    Nested use in the same thread (the loop's merge step around `merge_reviews`) does not wait.
    """
    lock_file, holder_file = lock_paths(workspace)
    key = str(lock_file)
    held = getattr(_held, "locks", None)
    if held is None:
        held = _held.locks = {}
    if key in held:  # re-entered by the thread that holds it
        held[key][1] += 1
        try:
            yield lock_file
        finally:
            held[key][1] -= 1
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_file))
    task = task or default_task()
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("workspace %s is locked by %s; waiting%s", lock_file.parents[1], describe_holder(read_holder(workspace)),
                 "" if timeout is None else f" up to {timeout:g} s")
        try:
            lock.acquire(timeout=-1 if timeout is None else timeout, poll_interval=0.05)
        except Timeout:
            raise KibbleError(
                f"workspace {lock_file.parents[1]} is locked by {describe_holder(read_holder(workspace))}; "
                f"waited {timeout:g} s — wait for it or raise lock_timeout"
            ) from None
    held[key] = [lock, 1]
    try:
        atomic_write_json(holder_file, {
            "task": task, "pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.now().astimezone().isoformat(timespec="seconds"), "acquired_at": time.time(),
        })
        recover(lock_file.parents[1])  # a killed writer's committed transaction, finished before anyone reads
        clean_temporaries(lock_file.parents[1])
        yield lock_file
    finally:
        del held[key]
        try:
            holder_file.unlink(missing_ok=True)
        finally:
            lock.release()


@contextmanager
def workspace_transaction(workspace: str | Path | Workspace, task: str | None = None,
                          timeout: float | None = DEFAULT_TIMEOUT) -> Iterator[Path]:
    """The workspace lock, and every write under the workspace in the block as one transaction.

    The writes are staged and renamed into place together when the block ends; an exception (or a
    kill) before that leaves every file as it was. Inside, `kibble.io.current_path` reads a staged
    version. Nested use joins the outer transaction.
    """
    task = task or default_task()
    with workspace_lock(workspace, task, timeout) as lock_file, transaction(lock_file.parents[1], task):
        yield lock_file
