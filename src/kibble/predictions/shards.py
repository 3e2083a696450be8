"""Prediction as independent jobs: `kibble predict shard=i/n` predicts one slice of the rows, and the
shards are assembled into the one store a single job would have written.

Why jobs and not DDP: a cluster schedules small independent jobs sooner than one large one, a failed
shard is re-run alone, and nothing needs a process group across nodes (a SLURM array or Hydra's
submitit launcher: `kibble predict -m shard=0/8,1/8,...`). Rows are cut into `n` contiguous slices of
the full row list (the split in manifest order, or the folder's sorted files), so the assembled store
has the rows in the order an unsharded run gives. Each shard's sidecar records the fingerprint of the
full row list and the checkpoint; assembly refuses shards of another row list or checkpoint, and
names the shards still missing with the command that makes them. The shard that completes the set
assembles (under a file lock beside the output, so two finishing together assemble once); the shard
files are removed once the assembled store is in place.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from filelock import FileLock

from kibble import KibbleError
from kibble.io import read_json, remove_file
from kibble.predictions.store import read_store, sidecar_path, write_store

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(value: Any) -> tuple[int, int] | None:
    """`"i/n"` -> (i, n) with 0 <= i < n; None/"" -> None (no sharding). One line on anything else."""
    if value is None or str(value).strip() in ("", "null", "None"):
        return None
    match = _SHARD.match(str(value))
    if not match:
        raise KibbleError(f"shard={value!r}; write shard=i/n (e.g. shard=0/8: the first of 8 shards)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 0 <= index < count:
        raise KibbleError(f"shard={value!r}: i must be in 0..n-1 and n >= 1 (e.g. shard=0/{max(count, 1)})")
    return index, count


def rows_fingerprint(sample_ids) -> str:
    """Hash of the full row list (order included): shards of one run agree on it."""
    digest = hashlib.sha256()
    for sid in np.asarray(sample_ids, dtype=object):
        digest.update(str(sid).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def shard_rows(rows: pd.DataFrame, index: int, count: int) -> pd.DataFrame:
    """The `index`-th of `count` contiguous slices of `rows` (sizes differ by at most one)."""
    bounds = np.linspace(0, len(rows), count + 1).round().astype(int)
    return rows.iloc[bounds[index]:bounds[index + 1]].reset_index(drop=True)


def shard_path(out: str | Path, index: int, count: int) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}.shard-{index:04d}-of-{count:04d}{out.suffix}")


def shard_meta(path: Path) -> dict[str, Any] | None:
    meta = sidecar_path(path)
    return read_json(meta) if path.is_file() and meta.is_file() else None


def assembled_for(out: str | Path, count: int, fingerprint: str, ckpt: str) -> dict[str, Any] | None:
    """The sidecar of `out` when it was assembled from `count` shards of this row list and checkpoint, else None."""
    done = shard_meta(Path(out))
    same = done and done.get("rows_fingerprint") == fingerprint and done.get("ckpt_path") == ckpt and done.get("n_shards") == count
    return done if same else None


def missing_shards(out: str | Path, count: int, fingerprint: str, ckpt: str) -> list[int]:
    """Shards with no complete store for this row list and checkpoint."""
    missing = []
    for i in range(count):
        meta = shard_meta(shard_path(out, i, count))
        if not (meta and meta.get("complete") and meta.get("rows_fingerprint") == fingerprint and meta.get("ckpt_path") == ckpt):
            missing.append(i)
    return missing


def assemble_shards(out: str | Path, count: int, fingerprint: str, ckpt: str, rerun_hint: str) -> dict[str, Any] | None:
    """Concatenate the `count` shard stores into `out` when all are complete; None while some are missing.

    Returns the assembled sidecar. Another row list's or checkpoint's shard counts as missing; a store
    already assembled from this row list and checkpoint is kept (a re-run changes nothing).
    """
    out = Path(out)
    with FileLock(str(out.with_name(f".{out.name}.assemble.lock"))):
        done = assembled_for(out, count, fingerprint, ckpt)
        if done:
            return done
        missing = missing_shards(out, count, fingerprint, ckpt)
        if missing:
            return None
        frames, metas = [], []
        for i in range(count):
            frame, meta = read_store(shard_path(out, i, count))
            frames.append(frame)
            metas.append(meta)
        first = metas[0]
        if any(m["class_names"] != first["class_names"] for m in metas):
            raise KibbleError(f"{out}: shards disagree on the class list; re-run them with one checkpoint ({rerun_hint})")
        frame = pd.concat(frames, ignore_index=True)
        skipped = {k: v for m in metas for k, v in (m.get("skipped") or {}).items()}
        meta = {k: v for k, v in first.items() if k not in ("shard", "n", "skipped", "dtype")}
        meta.update(n=len(frame), n_shards=count, skipped=skipped, complete=True)
        write_store(out, frame, meta)
        for i in range(count):  # the assembled store is in place: the slices are redundant
            remove_file(shard_path(out, i, count))
            remove_file(sidecar_path(shard_path(out, i, count)))
        return meta


def missing_line(out: str | Path, count: int, missing: list[int], rerun_hint: str) -> str:
    shown = ", ".join(f"{i}/{count}" for i in missing[:8]) + (" ..." if len(missing) > 8 else "")
    return (f"{out}: {len(missing)} of {count} shard(s) not done yet ({shown}); run `{rerun_hint} shard=<i>/{count}` for each, "
            "and the last one assembles the store")
