"""Atomic file writes: a crash never leaves a half-written file in place of a good one.

Every write goes to a temp file beside its target, then one rename puts it in place. Temp files are
named `.<target>.<host>-<pid>-<random>.tmp`, so the next writer that holds the workspace lock can tell
a killed writer's leftovers from a live one's (`kibble.transaction.clean_temporaries`). Written files
get the permissions the process umask allows (0666 & ~umask), like any file `open()` creates, not the
0600 of `tempfile.mkstemp`.

Inside a workspace transaction (`kibble.transaction.Transaction`, opened by
`kibble.labels.lock.workspace_transaction`) a write under the workspace is staged instead: the temp
file is fsynced and kept, and the transaction renames all of them in place together at commit.
`current_path` gives the staged version to a reader inside the same transaction.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import tempfile
import threading
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Iterator, Protocol

import pandas as pd
import yaml

TEMP_SUFFIX = ".tmp"
CRASH_ENV = "KIBBLE_TEST_CRASH_AT"  # fault injection for tests: SIGKILL this process at the n-th write step


class Stager(Protocol):
    """What a transaction offers `atomic_path` (kibble.transaction.Transaction)."""

    def covers(self, target: Path) -> bool: ...
    def stage(self, target: Path) -> Any: ...  # a context manager yielding the path to write
    def current(self, target: Path) -> Path: ...
    def remove(self, target: Path) -> None: ...


STAGER: ContextVar[Stager | None] = ContextVar("kibble_stager", default=None)


def host_tag() -> str:
    """8 hex digits naming this machine in temp file names (a pid means something only on its host)."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def new_temp(target: Path, directory: bool = False) -> Path:
    """An empty temp file (or folder) beside `target`, named for this host and pid, with umask permissions."""
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.{host_tag()}-{os.getpid()}-"
    if directory:
        folder = Path(tempfile.mkdtemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=target.parent))
        folder.chmod(0o777 & ~umask())
        return folder
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=target.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask())
    finally:
        os.close(fd)
    return Path(tmp)


def _stager_for(target: Path) -> Stager | None:
    stager = STAGER.get()
    return stager if stager is not None and stager.covers(target) else None


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `target`; rename it over `target` only if the block succeeds.

    Inside a transaction covering `target`, the temp file is staged and renamed at commit instead."""
    target = Path(target)
    stager = _stager_for(target)
    if stager is not None:
        with stager.stage(target) as staged:
            yield staged
        return
    tmp_path = new_temp(target)
    try:
        crash_point()
        yield tmp_path
        crash_point()
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def current_path(target: str | Path) -> Path:
    """The file a reader should open for `target`: its staged version inside a transaction that wrote it."""
    target = Path(target)
    stager = _stager_for(target)
    return stager.current(target) if stager is not None else target


def remove_file(target: str | Path) -> None:
    """Delete `target` (if there); inside a transaction, at its commit."""
    target = Path(target)
    stager = _stager_for(target)
    if stager is not None:
        stager.remove(target)
    else:
        target.unlink(missing_ok=True)


def fsync_path(path: str | Path) -> None:
    """Flush a file (or a folder's entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_umask_lock = threading.Lock()


def umask() -> int:
    """The process umask (read from /proc where it can be, without changing it)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:  # os.umask can only be read by setting it
        old = os.umask(0o022)
        os.umask(old)
    return old


_crash_steps = 0


def crash_point() -> None:
    """Test hook: with KIBBLE_TEST_CRASH_AT=n, the n-th step of this process kills it with SIGKILL.

    Steps are the moments between the writes of a file (temp created, written, renamed; a transaction's
    commit record, each rename). Costs one environment lookup when the variable is unset."""
    global _crash_steps
    at = os.environ.get(CRASH_ENV)
    if not at:
        return
    _crash_steps += 1
    if _crash_steps == int(at):
        os.kill(os.getpid(), signal.SIGKILL)


def crash_steps() -> int:
    """How many crash points this process has passed (counted only while KIBBLE_TEST_CRASH_AT is set)."""
    return _crash_steps


def atomic_write_text(target: str | Path, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def atomic_write_json(target: str | Path, obj: Any) -> Path:
    return atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n")


def atomic_write_yaml(target: str | Path, obj: Any) -> Path:
    return atomic_write_text(target, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


def atomic_write_parquet(target: str | Path, frame: pd.DataFrame) -> Path:
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False)
    return Path(target)


def atomic_write_csv(target: str | Path, frame: pd.DataFrame) -> Path:
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(target)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")
