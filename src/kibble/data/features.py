"""Features mode: embed every image once with a frozen pretrained backbone, cached on disk.

The cache folder is keyed by backbone + weights + eval transform + image root, so folds and rounds
reuse it; new images (a pool added later) are embedded incrementally. Layout of one cache folder
(read and written by kibble.data.feature_files):

    features.npy          float32 (N, D), row i is the image of sample_ids.parquet row i
    sample_ids.parquet    sample_id [, file_size, file_mtime_ns, file_fingerprint]
    chunks/*.npz          embeddings finished since the last consolidation (same columns + features)
    meta.json             backbone, weights, data config, one entry per embedding run

Embedding is long (Stanford Dogs: ~12 min for effnet-lite0 on 2 CPU cores), so it must
survive being killed: every `chunk_size` images (or `chunk_seconds`, whichever comes first) the
finished embeddings are written as one chunk file, atomically. A re-run reads the consolidated
cache plus the chunks, embeds only what is still missing, and then consolidates everything into
features.npy + sample_ids.parquet (caches written before chunks existed read as they are).

A row is re-embedded when its image file was replaced: each row records the file's size, mtime
and a fingerprint (hash of its first and last 4 KiB). A different size means a new image; a
different mtime with the same size is settled by the fingerprint, so copying a workspace with
`cp -r` (new mtimes) does not re-embed anything. Rows of old caches without these columns are
trusted and get them recorded. One process at a time writes a cache folder (a file lock on
`.lock`): parallel fold jobs wait for the first to embed, then read its result.

On a GPU the backbone runs under autocast (bf16 where supported, else fp16) with channels_last;
the cache key ignores precision, so a cache made on a GPU serves a CPU run and vice versa (bf16
embeddings differ slightly from fp32 ones; meta.json records the device and precision of each run).

Embedding reports progress through kibble.progress (a bar on a terminal, a plain line with rate and
ETA every 30 s in a log). The input size follows the backbone's pretrained config unless
embedder.input_size is set; images much smaller than that get one warning naming the override.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from kibble import KibbleError
from kibble.data.dataset import ManifestDataset
from kibble.data.feature_files import exclusive, file_stats, merge_parts, read_cache, read_chunks, stale_rows, with_stat_columns, write_chunk
from kibble.data.manifest import resolve_image_path
from kibble.data.transforms import build_transform, transform_key
from kibble.io import atomic_path, atomic_write_json, read_json
from kibble.models.backbone import create_backbone, data_config_for
from kibble.progress import Progress

log = logging.getLogger(__name__)

_PRECISIONS = {"32": None, "32-true": None, "fp32": None, "bf16": torch.bfloat16, "bf16-mixed": torch.bfloat16,
               "16": torch.float16, "16-mixed": torch.float16, "fp16": torch.float16}


_WEIGHTS_DIGESTS: dict[tuple[str, int, int], str] = {}


def _weights_id(pretrained: str | None) -> str:
    """A weights file's identity for the cache key: its name and a hash of its content (not its size or
    time: rewriting the same tensors must keep the cache, replacing them must not). Memoised per
    (path, size, mtime), so a round hashes each file once."""
    if pretrained in (None, "none", "hub"):
        return str(pretrained)
    path = Path(str(pretrained)).expanduser()
    if not path.is_file():
        return str(pretrained)
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _WEIGHTS_DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _WEIGHTS_DIGESTS[memo] = digest.hexdigest()[:16]
    return f"{path.name}:{_WEIGHTS_DIGESTS[memo]}"


def resolve_device(device: str | None) -> torch.device:
    """auto = the GPU when torch sees one, else the CPU."""
    name = str(device or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError:
        resolved = None
    if resolved is None or resolved.type not in ("cpu", "cuda"):
        raise KibbleError(f"embedder.device={device!r}: use auto, cpu, cuda or cuda:N")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise KibbleError(f"embedder.device={device}: torch sees no GPU here; use embedder.device=auto or cpu")
    return resolved


def autocast_dtype(precision: str | int | None, device: torch.device) -> torch.dtype | None:
    """auto = bf16 on GPUs that have it, fp16 on older ones, fp32 on the CPU (CPU bf16 is rarely faster)."""
    name = str(precision if precision is not None else "auto").lower()
    if name == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name not in _PRECISIONS:
        raise KibbleError(f"embedder.precision={precision!r}: use auto, 32, bf16 or 16")
    return _PRECISIONS[name]


UPSCALE_WARN_FACTOR = 3.0   # images this many times smaller than the embedder's input: say so
SIZE_SAMPLE = 200            # images whose header is read to estimate the data set's size
_WARNED: set[str] = set()    # one warning per process, however many Embedders a run builds


def sample_image_sizes(paths: list[Path], n: int = SIZE_SAMPLE, seed: int = 0) -> list[tuple[int, int]]:
    """(width, height) of up to `n` of `paths`, seeded; only headers are read. Unreadable files are
    left out (they are reported where they are loaded)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    picked = rng.choice(len(paths), size=min(n, len(paths)), replace=False) if len(paths) else []
    sizes = []
    for i in picked:
        try:
            with Image.open(paths[int(i)]) as im:
                sizes.append(tuple(im.size))
        except Exception:  # noqa: BLE001 - a hint from a sample; the loader reports bad images
            continue
    return sizes


def upscale_warning(sizes: list[tuple[int, int]], input_size: int, backbone: str,
                    factor: float = UPSCALE_WARN_FACTOR) -> str | None:
    """The warning for images much smaller than the input size, or None.

    Why: the input size follows the backbone's pretrained config (224 px for effnet-lite0), which is
    right for photos but silently blows 32 px digits up 7x (slower, and not always what is wanted).
    The suggested override is the images' own size rounded to a multiple of 32 (the backbones' stride).
    """
    if not sizes:
        return None
    width = int(np.median([w for w, _ in sizes]))
    height = int(np.median([h for _, h in sizes]))
    short = float(np.median([min(w, h) for w, h in sizes]))
    scale = int(input_size) / max(short, 1.0)
    if scale < factor:
        return None
    suggested = max(32, int(round(short / 32)) * 32)
    return (f"images are about {width}x{height} px (median of a {len(sizes)}-image sample) but {backbone} embeds at "
            f"{int(input_size)} px: they are upscaled {scale:.0f}x; set embedder.input_size={suggested} if that is not wanted")


class Embedder:
    """Frozen timm backbone (num_classes=0 -> pooled features) with its eval transform.

    device: auto | cpu | cuda[:N]; precision: auto | 32 | bf16 | 16 (autocast); num_workers: an
    int or auto (one per core but one, at most 8); chunk_size / chunk_seconds: how much work a
    kill may cost (see the module docstring).
    """

    def __init__(self, backbone: str, pretrained: str | None = "none", input_size: int | None = None, batch_size: int = 64,
                 num_workers: int | str = 0, device: str = "auto", precision: str | int = "auto", chunk_size: int = 2048,
                 chunk_seconds: float = 120.0):
        self.backbone = backbone
        self.pretrained = pretrained
        self.input_size = input_size
        self.batch_size = int(batch_size)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.num_workers = max(0, min(8, cores - 1)) if str(num_workers) == "auto" else int(num_workers)
        self.device = resolve_device(device)
        self.dtype = autocast_dtype(precision, self.device)
        self.chunk_size = max(1, int(chunk_size))
        self.chunk_seconds = float(chunk_seconds)
        self._model: torch.nn.Module | None = None

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            model = create_backbone(self.backbone, num_classes=0, pretrained=self.pretrained).eval()
            if self.device.type == "cuda":
                model = model.to(self.device, memory_format=torch.channels_last)
            self._model = model
        return self._model

    @property
    def data_config(self) -> dict[str, Any]:
        return data_config_for(self.model, self.input_size)

    @property
    def embed_size(self) -> int:
        """The side images are embedded at: embedder.input_size, else the backbone's pretrained config."""
        return int(self.data_config["input_size"][-1])

    def warn_if_upscaled(self, paths: list[Path]) -> None:
        """One warning line when the images are much smaller than an input size nobody chose."""
        if self.input_size or not paths:
            return
        message = upscale_warning(sample_image_sizes(paths), self.embed_size, self.backbone)
        if message and message not in _WARNED:
            _WARNED.add(message)
            log.warning(message)

    @property
    def precision_name(self) -> str:
        return {None: "32", torch.bfloat16: "bf16", torch.float16: "16"}[self.dtype]

    def cache_key(self, root_id: str = "") -> str:
        """Backbone + weights + eval transform + image root: what an embedding depends on.

        root_id is the workspace's recorded data_root: relative for images inside the workspace (so a
        copied workspace keeps its cache), absolute for shared image folders.
        """
        raw = f"{self.backbone}|{_weights_id(self.pretrained)}|{transform_key(self.data_config)}|{root_id}"
        return f"{self.backbone}-{hashlib.sha256(raw.encode()).hexdigest()[:12]}"

    @torch.inference_mode()
    def batches(self, rows: pd.DataFrame, data_root: str | Path) -> Iterator[np.ndarray]:
        """float32 embeddings of `rows`, one array per batch, in row order."""
        dataset = ManifestDataset(rows, data_root, [], build_transform(self.data_config, train=False))
        cuda = self.device.type == "cuda"
        loader = DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers, pin_memory=cuda)
        model = self.model
        for x, _, _ in loader:
            x = x.to(self.device, non_blocking=True)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
                out = model(x)
            yield out.float().cpu().numpy()

    def embed(self, rows: pd.DataFrame, data_root: str | Path, progress: bool = True) -> np.ndarray:
        """Embeddings of `rows` in row order, not cached (features_for caches)."""
        self.warn_if_upscaled([resolve_image_path(p, data_root) for p in rows["path"]])
        out = []
        with Progress("embedding", len(rows), "images", enabled=progress, logger=log) as bar:
            for features in self.batches(rows, data_root):
                out.append(features)
                bar.advance(len(features))
        return np.concatenate(out) if out else np.zeros((0, self.model.num_features), dtype=np.float32)

    def features_for(self, rows: pd.DataFrame, data_root: str | Path, cache_dir: str | Path, root_id: str | None = None,
                     progress: bool = True, hold_lock: bool = True) -> tuple[list[str], np.ndarray]:
        """Embeddings for `rows` (by sample_id), computing only those missing from the cache or whose file changed.

        hold_lock=True: the cache folder's lock is held while embedding, so a second process asking for the same
        rows waits and then finds them cached. hold_lock=False (`kibble embed shard=i/n`: disjoint slices on
        several machines): the lock is held only to see what is missing and, afterwards, to consolidate; the
        embedding writes chunk files in between, so shards embed at the same time.
        """
        folder = Path(cache_dir) / self.cache_key(str(Path(data_root).resolve()) if root_id is None else root_id)
        unique = rows.drop_duplicates("sample_id").reset_index(drop=True)
        paths = [resolve_image_path(p, data_root) for p in unique["path"]]
        unlocked, unlocked_s = 0, 0.0  # images embedded without the lock, and their seconds (recorded at consolidation)
        if not hold_lock:
            with exclusive(folder):
                todo = stale_rows(read_cache(folder)[0], unique, paths)[0]
            if todo.any():  # chunk files: the locked pass below (or any later reader) consolidates them
                started = time.perf_counter()
                self._embed_chunks(unique[todo], [p for p, t in zip(paths, todo) if t], data_root, folder, progress)
                unlocked, unlocked_s = int(todo.sum()), time.perf_counter() - started
        with exclusive(folder):
            cached, matrix, chunk_files = read_cache(folder)
            todo, cached, refreshed = stale_rows(cached, unique, paths)
            started = time.perf_counter()
            if todo.any():
                written = self._embed_chunks(unique[todo], [p for p, t in zip(paths, todo) if t], data_root, folder, progress)
                cached, matrix = merge_parts([(cached, matrix), *read_chunks(written)], folder)
                chunk_files = chunk_files + written
            if chunk_files or refreshed:
                run = {"images": int(todo.sum()) + unlocked, "seconds": round(time.perf_counter() - started + unlocked_s, 2),
                       "device": str(self.device), "precision": self.precision_name}
                self._consolidate(folder, cached, matrix, chunk_files, run if run["images"] else None)
        wanted = rows["sample_id"].tolist()
        if matrix is None:
            return wanted, np.zeros((0, self.model.num_features), dtype=np.float32)
        position = {s: i for i, s in enumerate(cached["sample_id"])}
        return wanted, matrix[[position[s] for s in wanted]]

    def _embed_chunks(self, todo: pd.DataFrame, paths: list[Path], data_root: str | Path, folder: Path, progress: bool) -> list[Path]:
        """Embed `todo`, writing a chunk file every chunk_size images or chunk_seconds; returns the chunk files."""
        stats = file_stats(paths)
        self.warn_if_upscaled(paths)
        log.info("embedding %d images with %s at %d px on %s (feature cache %s)", len(todo), self.backbone,
                 self.embed_size, self.device.type, folder.name)
        pending: list[np.ndarray] = []
        written: list[Path] = []
        start = done = 0
        began = flushed = time.perf_counter()
        with Progress("embedding", len(todo), "images", enabled=progress, logger=log) as bar:
            for features in self.batches(todo, data_root):
                pending.append(features)
                done += len(features)
                bar.advance(len(features))
                if done - start >= self.chunk_size or time.perf_counter() - flushed >= self.chunk_seconds or done == len(todo):
                    written.append(write_chunk(folder, todo.iloc[start:done], paths[start:done], stats.iloc[start:done], np.concatenate(pending)))
                    start, pending, flushed = done, [], time.perf_counter()
        log.info("feature cache %s: embedded %d images in %.0f s", folder.name, done, time.perf_counter() - began)
        return written

    def _consolidate(self, folder: Path, cached: pd.DataFrame, matrix: np.ndarray, chunk_files: list[Path], run: dict | None) -> None:
        """Rewrite features.npy + sample_ids.parquet from everything read, then drop the chunks."""
        frame = with_stat_columns(cached)
        with atomic_path(folder / "features.npy") as tmp_matrix, atomic_path(folder / "sample_ids.parquet") as tmp_ids:
            with open(tmp_matrix, "wb") as fh:
                np.save(fh, np.ascontiguousarray(matrix, dtype=np.float32))
            frame.to_parquet(tmp_ids, index=False)
        # (both renames happen here, back to back; the chunks go only once both are in place)
        for path in chunk_files:
            path.unlink(missing_ok=True)
        meta_path = folder / "meta.json"
        history = read_json(meta_path).get("embedding_runs", []) if meta_path.is_file() else []
        if run is not None:
            history.append(run)
            log.info("feature cache %s: %d rows", folder.name, len(frame))
        atomic_write_json(meta_path, {
            "backbone": self.backbone, "pretrained": str(self.pretrained),
            "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in self.data_config.items()},
            "embedding_runs": history,  # how long embedding took (benchmarks report it)
        })
