"""The on-disk layout of one feature-cache folder (kibble.data.features): reading it, its chunk files,
and which rows must be embedded again because their image file changed.

    features.npy          float32 (N, D), row i is the image of sample_ids.parquet row i
    sample_ids.parquet    sample_id [, file_size, file_mtime_ns, file_fingerprint]
    chunks/*.npz          embeddings finished since the last consolidation (same columns + features)

Kept apart from the Embedder (which runs the model) so each module has one job.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from kibble import KibbleError
from kibble.io import atomic_path

log = logging.getLogger(__name__)

STAT_COLUMNS = ("file_size", "file_mtime_ns", "file_fingerprint")
def fingerprint(path: str | Path, size: int) -> str:
    """Hash of the first and last 4 KiB: tells a replaced image from a copied one without reading it all."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
        fh.seek(max(0, size - 4096))
        tail = fh.read(4096)
    return hashlib.blake2b(head + tail, digest_size=8).hexdigest()


def file_stats(paths: list[Path]) -> pd.DataFrame:
    """size and mtime_ns per path (-1 when the file cannot be read)."""
    sizes, mtimes = [], []
    for path in paths:
        try:
            st = os.stat(path)
            sizes.append(st.st_size)
            mtimes.append(st.st_mtime_ns)
        except OSError:
            sizes.append(-1)
            mtimes.append(-1)
    return pd.DataFrame({"file_size": np.array(sizes, np.int64), "file_mtime_ns": np.array(mtimes, np.int64)})


@contextmanager
def exclusive(folder: Path) -> Iterator[None]:
    """An OS file lock on folder/.lock (released by the kernel if the holder dies); none if the folder is read-only."""
    from filelock import FileLock, Timeout

    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder / ".lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("waiting for another process that is embedding into %s", folder)
            lock.acquire()
    except OSError:
        yield
        return
    try:
        yield
    finally:
        lock.release()


def with_stat_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Stat columns in one dtype each (Int64 keeps mtime_ns exact; NA = not recorded, an old cache)."""
    frame = frame.copy()
    for column in ("file_size", "file_mtime_ns"):
        frame[column] = frame[column].astype("Int64") if column in frame else pd.array([pd.NA] * len(frame), dtype="Int64")
    frame["file_fingerprint"] = frame["file_fingerprint"].astype(object) if "file_fingerprint" in frame else None
    return frame[["sample_id", *STAT_COLUMNS]]


def read_chunks(paths: list[Path]) -> list[tuple[pd.DataFrame, np.ndarray]]:
    parts = []
    for path in paths:
        try:
            with np.load(path) as chunk:
                frame = pd.DataFrame({"sample_id": chunk["sample_id"].astype(object), **{c: chunk[c] for c in STAT_COLUMNS}})
                parts.append((with_stat_columns(frame), chunk["features"]))
        except (OSError, ValueError, KeyError, EOFError) as err:
            log.warning("feature cache chunk %s unreadable (%s); its images are embedded again", path.name, err)
    return parts


def read_cache(folder: Path) -> tuple[pd.DataFrame, np.ndarray | None, list[Path]]:
    """(rows: sample_id + stat columns, matrix, chunk files read): consolidated rows, then chunks, newest wins."""
    parts: list[tuple[pd.DataFrame, np.ndarray]] = []
    ids_file, matrix_file = folder / "sample_ids.parquet", folder / "features.npy"
    if ids_file.is_file() and matrix_file.is_file():
        frame, matrix = pd.read_parquet(ids_file), np.load(matrix_file)
        if len(frame) == len(matrix):
            parts.append((with_stat_columns(frame), matrix))
        else:
            log.warning("feature cache %s: features.npy and sample_ids.parquet disagree; re-embedding its rows", folder)
    chunk_files = sorted((folder / "chunks").glob("*.npz"))
    frame, matrix = merge_parts(parts + read_chunks(chunk_files), folder)
    return frame, matrix, chunk_files


def merge_parts(parts: list[tuple[pd.DataFrame, np.ndarray | None]], folder: Path) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Concatenate (rows, matrix) parts; a sample_id seen twice keeps its last (newest) row."""
    parts = [(f, m) for f, m in parts if m is not None and len(f)]
    if not parts:
        return with_stat_columns(pd.DataFrame({"sample_id": pd.Series([], dtype=object)})), None
    widths = {m.shape[1] for _, m in parts}
    if len(widths) > 1:
        raise KibbleError(f"feature cache {folder} holds embeddings of widths {sorted(widths)}; delete the folder to rebuild it")
    frame = pd.concat([f for f, _ in parts], ignore_index=True)
    keep = ~frame["sample_id"].duplicated(keep="last").to_numpy()
    return frame[keep].reset_index(drop=True), np.concatenate([m for _, m in parts])[keep]


def write_chunk(folder: Path, rows: pd.DataFrame, paths: list[Path], stats: pd.DataFrame, features: np.ndarray) -> Path:
    prints = [fingerprint(p, int(s)) if s >= 0 else "" for p, s in zip(paths, stats["file_size"])]
    target = folder / "chunks" / f"chunk-{time.time_ns():020d}-{os.getpid()}.npz"
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, sample_id=np.array(rows["sample_id"].astype(str).tolist(), dtype=str), features=features.astype(np.float32),
                 file_size=stats["file_size"].to_numpy(), file_mtime_ns=stats["file_mtime_ns"].to_numpy(),
                 file_fingerprint=np.array(prints, dtype=str))
    return target


def stale_rows(cached: pd.DataFrame, unique: pd.DataFrame, paths: list[Path]) -> tuple[np.ndarray, pd.DataFrame, bool]:
    """(mask over `unique` of rows to embed, cached rows with their stats recorded or refreshed, whether any were).

    Missing from the cache -> embed. File unreadable now -> keep the cached row. No stats recorded
    (an old cache) -> keep, record them. Other size -> embed. Same size, same mtime -> keep.
    Same size, new mtime -> the fingerprint decides (and a kept row gets the new mtime).
    """
    current = file_stats(paths)
    where = pd.Series(np.arange(len(cached)), index=cached["sample_id"].to_numpy(), dtype=float)
    at = where.reindex(unique["sample_id"].to_numpy()).to_numpy()
    todo = np.isnan(at)
    hit = np.flatnonzero(~todo)
    j = at[hit].astype(np.int64)
    size, mtime = current["file_size"].to_numpy()[hit], current["file_mtime_ns"].to_numpy()[hit]
    old_size = cached["file_size"].to_numpy(dtype=np.int64, na_value=-2)[j]
    old_mtime = cached["file_mtime_ns"].to_numpy(dtype=np.int64, na_value=-2)[j]
    readable, known = size >= 0, old_size != -2
    todo[hit[readable & known & (old_size != size)]] = True
    record = {int(k): fingerprint(paths[hit[k]], int(size[k])) for k in np.flatnonzero(readable & ~known)}
    for k in np.flatnonzero(readable & known & (old_size == size) & (old_mtime != mtime)):
        now = fingerprint(paths[hit[k]], int(size[k]))
        if now == cached.at[int(j[k]), "file_fingerprint"]:
            record[int(k)] = now
        else:
            todo[hit[k]] = True
    if not record:
        return todo, cached, False
    cached = cached.copy()
    for k, mark in record.items():
        row = int(j[k])
        cached.at[row, "file_size"], cached.at[row, "file_mtime_ns"], cached.at[row, "file_fingerprint"] = int(size[k]), int(mtime[k]), mark
    return todo, cached, True
