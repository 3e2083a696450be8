"""Data issues beyond labels (issue 17, item 11): near-duplicates, outliers, blank / low-information / odd-size images.

A label-cleaning strategy ranks rows whose *label* looks wrong; the rows found here have a problem with
the *image* (a solid-colour frame, a 10000 x 10000 scan, the same photo twice, something unlike the
rest of the data set), which no relabelling fixes. Each round's queue step writes them to
rounds/NNN/data_issues.csv (`ISSUE_COLUMNS`: sample_id, issue, score, detail), the round report shows
them (kibble.report.round:data_issue_sections) and a share of the queue budget goes to them as
kind=data_issue rows (kibble.queue.callback, config `strategy.data_issues`): by default only the image
checks (blank, odd_size, low_information); near_duplicate and outlier are reported, queued on request.

Embedding checks use the round's OOF embeddings (cv.save_embeddings) and `kibble.strategies.knn`'s
neighbour search rather than cleanlab's Datalab: Datalab builds its own sklearn k-NN graph (exact
only, no faiss switch at 10^5+ rows), picks its own thresholds per issue type, and pulls its whole
issue-manager stack into every round; here the same search as the `neighbors` strategy (exact below
20,000 rows, faiss above) gives cosine similarities whose thresholds are stated below and configurable.

Image checks read each file once, small: JPEGs are decoded at a reduced DCT scale (PIL's draft mode),
other formats are decoded only up to `max_decode_pixels` and reduced at once; bigger non-JPEGs are
judged from their header (size, aspect) alone, never decoded in full.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from kibble import KibbleError
from kibble.values import is_in

log = logging.getLogger(__name__)

ISSUE_COLUMNS = ["sample_id", "issue", "score", "detail"]
# queue priority, most certain first: the image checks are near-certain, the embedding ones are hints
ISSUES = ("blank", "odd_size", "low_information", "near_duplicate", "outlier")
# The thresholds below were chosen on the dev halves of scripts/bench_data_issues.py (Imagewoof photos with
# injected issues; docs/benchmarks.md reports them on its test halves, beside cleanlab's Datalab and CleanVision).
# Cosine similarity of two rows' effnet-lite0 embeddings from which they are near-duplicates: a photo saved
# again resized to 60-90 %, cropped by up to 8 % a side, a little brighter or darker and re-encoded lands at
# about 0.86-0.97 from its original (0.98, the first guess, found none of them); dev chose 0.86-0.88.
NEAR_DUPLICATE_THRESHOLD = 0.86
OUTLIER_K = 10
OUTLIER_MADS = 2.5  # flagged: mean k-NN cosine distance above median + 2.5 robust SDs (1.4826 MAD); dev chose 2.5-3
BLANK_STD = 2.0  # grey-level standard deviation (0..255) below which an image is one flat colour
# grey-level histogram entropy below which it holds about two tones: a two-colour image's antialiased edges
# lift it to 0.7-1.3 bits once reduced to 128 px (1 bit, the first guess, missed a quarter of them); photos
# sit at 5-7.5 bits, the digits demo's 8 x 8 scans at 3.6 or more
LOW_ENTROPY_BITS = 2.0
ODD_PIXELS_FACTOR = 16.0  # pixel count over 16x or under 1/16 of the data set's median
ODD_ASPECT_FACTOR = 3.0  # aspect ratio 3x wider or taller than the median aspect
STATS_SIDE = 128  # images are reduced to about this size before their statistics are taken
MAX_DECODE_PIXELS = 4096 * 4096  # non-JPEGs larger than this are judged from the header only
_ROTATING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def _check_embeddings(emb: np.ndarray, need: int) -> np.ndarray:
    emb = np.asarray(emb)
    if emb.ndim != 2 or emb.shape[0] < need or emb.shape[1] < 1:
        raise KibbleError(f"data issues: embeddings must be an (N, D) array with N >= {need}; got shape {emb.shape}")
    if not np.issubdtype(emb.dtype, np.number) or not np.isfinite(emb).all():
        raise KibbleError("data issues: embeddings must be finite numbers (NaN/inf found or not numeric)")
    return emb.astype(np.float32, copy=False)


def _check_nbrs(nbrs: np.ndarray, n: int) -> np.ndarray:
    nbrs = np.asarray(nbrs)
    if nbrs.ndim != 2 or len(nbrs) != n or not np.issubdtype(nbrs.dtype, np.integer) or (nbrs < 0).any() or (nbrs >= n).any():
        raise KibbleError(f"data issues: nbrs must be an (N={n}, k) array of row indices; got shape {nbrs.shape}")
    return nbrs


def _unit(emb: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, 1e-12)


def _cosine_to(unit: np.ndarray, nbrs: np.ndarray) -> np.ndarray:
    """(N, k) cosine similarity of each row to its neighbours."""
    return np.einsum("nd,nkd->nk", unit, unit[nbrs])


def near_duplicates(emb: np.ndarray, threshold: float = NEAR_DUPLICATE_THRESHOLD, k: int = 5, method: str = "auto",
                    nbrs: np.ndarray | None = None) -> pd.DataFrame:
    """Groups of rows whose embeddings have cosine similarity >= threshold (pairs joined transitively).

    Returns one row per member of a group that is not its representative (the group's lowest row index):
    columns row, of (the representative's row), similarity (to its most similar group member), group.
    A group larger than k + 1 is still found whole through its members' overlapping neighbour lists.
    nbrs: a precomputed (N, k') neighbour index (`find_data_issues` shares one search with `outliers`).
    """
    from kibble.strategies.knn import neighbor_indices

    if not (isinstance(threshold, (int, float)) and 0 < threshold <= 1):
        raise KibbleError(f"near_duplicates: threshold must be in (0, 1]; got {threshold!r}")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise KibbleError(f"near_duplicates: k must be a positive integer; got {k!r}")
    emb = _check_embeddings(emb, 2)
    n = len(emb)
    k = min(int(k), n - 1)
    unit = _unit(emb)
    nbrs = neighbor_indices(unit, k, "cosine", method=method) if nbrs is None else _check_nbrs(nbrs, n)
    sims = _cosine_to(unit, nbrs)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    rows, cols = np.nonzero(sims >= threshold - 1e-6)
    best = np.full(n, np.nan)
    for r, c in zip(rows, cols):
        j = int(nbrs[r, c])
        s = float(sims[r, c])
        a, b = find(int(r)), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
        best[r] = s if np.isnan(best[r]) else max(best[r], s)
        best[j] = s if np.isnan(best[j]) else max(best[j], s)
    roots = np.array([find(i) for i in range(n)])
    members = np.flatnonzero(~np.isnan(best) & (roots != np.arange(n)))
    return pd.DataFrame({"row": members, "of": roots[members], "similarity": best[members], "group": roots[members]}).astype(
        {"row": np.int64, "of": np.int64, "similarity": np.float64, "group": np.int64})


def outliers(emb: np.ndarray, k: int = OUTLIER_K, mads: float = OUTLIER_MADS, method: str = "auto",
             nbrs: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(score, flagged): each row's mean cosine distance to its k nearest rows, flagged above
    median + `mads` x 1.4826 MAD of the scores (a robust 3-sigma rule: a few per cent of a smooth
    distribution, more where a cluster sits apart). Exact ties of the whole set flag nothing."""
    from kibble.strategies.knn import neighbor_indices

    if not isinstance(k, (int, np.integer)) or k < 1:
        raise KibbleError(f"outliers: k must be a positive integer; got {k!r}")
    if not (isinstance(mads, (int, float)) and mads > 0):
        raise KibbleError(f"outliers: mads must be a positive number; got {mads!r}")
    emb = _check_embeddings(emb, int(k) + 1)
    unit = _unit(emb)
    nbrs = neighbor_indices(unit, int(k), "cosine", method=method) if nbrs is None else _check_nbrs(nbrs, len(emb))[:, : int(k)]
    score = (1.0 - _cosine_to(unit, nbrs)).mean(axis=1).astype(np.float64)
    median = float(np.median(score))
    spread = 1.4826 * float(np.median(np.abs(score - median)))
    flagged = score > median + mads * spread if spread > 0 else np.zeros(len(score), dtype=bool)
    return score, flagged


def _one_image_stats(path: Path, side: int, max_decode_pixels: int) -> dict:
    from PIL import Image

    with Image.open(path) as img:
        width, height = img.size
        try:  # PNG keeps EXIF where PIL finds it only by decoding the pixels: its orientation is not read
            if img.format != "PNG" and img.getexif().get(0x0112) in _ROTATING_ORIENTATIONS:
                width, height = height, width
        except Exception:  # a broken EXIF block: the size as stored
            pass
        stats = {"width": width, "height": height, "std": math.nan, "entropy": math.nan, "decoded": False}
        if img.format != "JPEG" and width * height > max_decode_pixels:
            return stats  # judged from the header: odd_size still sees it
        img.draft("L", (side, side))  # JPEG: decoded at 1/2..1/8 scale; a no-op for other formats
        img.thumbnail((side, side))
        grey = np.asarray(img.convert("L"), dtype=np.float64)
    counts = np.bincount(grey.astype(np.uint8).ravel(), minlength=256)
    p = counts[counts > 0] / counts.sum()
    stats.update(std=float(grey.std()), entropy=float(-(p * np.log2(p)).sum()), decoded=True)
    return stats


def image_stats(paths: Sequence[str | Path], side: int = STATS_SIDE, max_decode_pixels: int = MAX_DECODE_PIXELS) -> pd.DataFrame:
    """Per image: width, height (upright, after EXIF rotation), aspect (w/h), grey-level std and
    entropy (bits) of a copy reduced to about side x side, and whether pixels were decoded. Files that
    cannot be read get NaN everywhere and readable=False (kibble's bad-image checks report them)."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(paths, (str, Path)):
        raise KibbleError("image_stats: paths must be a list of image paths, not one path")
    if not isinstance(side, (int, np.integer)) or side < 8:
        raise KibbleError(f"image_stats: side must be an integer >= 8; got {side!r}")
    if not isinstance(max_decode_pixels, (int, np.integer)) or max_decode_pixels < 1:
        raise KibbleError(f"image_stats: max_decode_pixels must be a positive integer; got {max_decode_pixels!r}")
    records = []
    for path in paths:
        try:
            records.append({**_one_image_stats(Path(path), int(side), int(max_decode_pixels)), "readable": True})
        except (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
            records.append({"width": math.nan, "height": math.nan, "std": math.nan, "entropy": math.nan, "decoded": False, "readable": False})
    frame = pd.DataFrame(records, columns=["width", "height", "std", "entropy", "decoded", "readable"])
    frame["aspect"] = frame["width"] / frame["height"]
    return frame[["width", "height", "aspect", "std", "entropy", "decoded", "readable"]]


def cached_image_stats(paths: Sequence[str | Path], cache_file: str | Path, **kwargs) -> pd.DataFrame:
    """`image_stats`, reading only images that are new or changed since the last call: every round runs
    the image checks over all its rows, and re-reading 10^4-10^5 files each round costs minutes. The
    cache (Parquet) is keyed by path, size and modification time, so a replaced image is read again."""
    from kibble.io import atomic_write_parquet

    keys = []
    for path in paths:
        try:
            st = Path(path).stat()
            keys.append((str(path), int(st.st_size), int(st.st_mtime_ns)))
        except OSError:
            keys.append((str(path), -1, -1))
    key_frame = pd.DataFrame(keys, columns=["path", "size", "mtime_ns"])
    cache_file = Path(cache_file)
    cached = pd.read_parquet(cache_file) if cache_file.is_file() else None
    stats_columns = ["width", "height", "aspect", "std", "entropy", "decoded", "readable"]
    if cached is not None and set(stats_columns) <= set(cached.columns):
        merged = key_frame.merge(cached.drop_duplicates(["path", "size", "mtime_ns"], keep="last"), on=["path", "size", "mtime_ns"], how="left")
    else:
        merged = key_frame.assign(**{c: np.nan for c in stats_columns})
    missing = merged["readable"].isna().to_numpy()
    if missing.any():
        fresh = image_stats([keys[i][0] for i in np.flatnonzero(missing)], **kwargs)
        merged = merged.astype({c: object for c in stats_columns})
        merged.loc[missing, stats_columns] = fresh[stats_columns].to_numpy(dtype=object)
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        stored = merged[merged["size"] >= 0].astype({"width": float, "height": float, "aspect": float, "std": float,
                                                     "entropy": float, "decoded": bool, "readable": bool})
        atomic_write_parquet(cache_file, stored)
    out = merged[stats_columns].astype({"width": float, "height": float, "aspect": float, "std": float, "entropy": float,
                                        "decoded": bool, "readable": bool})
    return out.reset_index(drop=True)


def image_issues(stats: pd.DataFrame, blank_std: float = BLANK_STD, low_entropy_bits: float = LOW_ENTROPY_BITS,
                 odd_pixels_factor: float = ODD_PIXELS_FACTOR, odd_aspect_factor: float = ODD_ASPECT_FACTOR) -> pd.DataFrame:
    """Flags from `image_stats`: blank (std < blank_std), low_information (entropy < low_entropy_bits, not
    blank), odd_size (pixels over/under `odd_pixels_factor` x the median, or aspect `odd_aspect_factor` x
    off the median aspect). Returns row, issue, score (how far past the line), detail."""
    missing = {"width", "height", "aspect", "std", "entropy"} - set(stats.columns)
    if missing:
        raise KibbleError(f"image_issues: stats lack columns {sorted(missing)} (use image_stats)")
    for name, value in (("blank_std", blank_std), ("low_entropy_bits", low_entropy_bits)):
        if not (isinstance(value, (int, float)) and value >= 0):
            raise KibbleError(f"image_issues: {name} must be a non-negative number; got {value!r}")
    for name, value in (("odd_pixels_factor", odd_pixels_factor), ("odd_aspect_factor", odd_aspect_factor)):
        if not (isinstance(value, (int, float)) and value > 1):
            raise KibbleError(f"image_issues: {name} must be a number > 1; got {value!r}")
    out = []
    std, entropy = stats["std"].to_numpy(float), stats["entropy"].to_numpy(float)
    pixels = (stats["width"] * stats["height"]).to_numpy(float)
    aspect = stats["aspect"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        for i in np.flatnonzero(std < blank_std):
            out.append((i, "blank", float(blank_std - std[i]), f"grey std {std[i]:.2f} < {blank_std:g}: one flat colour"))
        for i in np.flatnonzero((entropy < low_entropy_bits) & ~(std < blank_std)):
            out.append((i, "low_information", float(low_entropy_bits - entropy[i]), f"grey entropy {entropy[i]:.2f} bits < {low_entropy_bits:g}"))
        if np.isfinite(pixels).any():
            mid_pixels, mid_aspect = float(np.nanmedian(pixels)), float(np.nanmedian(aspect))
            size_ratio = np.abs(np.log(pixels / mid_pixels))
            aspect_ratio = np.abs(np.log(aspect / mid_aspect))
            odd = (size_ratio > math.log(odd_pixels_factor)) | (aspect_ratio > math.log(odd_aspect_factor))
            for i in np.flatnonzero(odd):
                w, h = int(stats["width"].iloc[i]), int(stats["height"].iloc[i])
                out.append((i, "odd_size", float(max(size_ratio[i] / math.log(odd_pixels_factor), aspect_ratio[i] / math.log(odd_aspect_factor))),
                            f"{w}x{h} (median {math.sqrt(mid_pixels * mid_aspect):.0f}x{math.sqrt(mid_pixels / mid_aspect):.0f})"))
    return pd.DataFrame(out, columns=["row", "issue", "score", "detail"]).astype({"row": np.int64, "score": np.float64})


def find_data_issues(sample_ids: Sequence[str], paths: Sequence[str | Path] | None = None, emb: np.ndarray | None = None,
                     near_duplicate_threshold: float = NEAR_DUPLICATE_THRESHOLD, outlier_k: int = OUTLIER_K,
                     outlier_mads: float = OUTLIER_MADS, checks: Iterable[str] = ISSUES, image_cache: str | Path | None = None,
                     **image_kwargs) -> pd.DataFrame:
    """The data-issues table (`ISSUE_COLUMNS`) of one round's rows: image checks when `paths` are given,
    embedding checks when `emb` is (rows in the order of `sample_ids`). Sorted by issue priority, score."""
    ids = np.asarray([str(s) for s in sample_ids], dtype=object)
    checks = set(checks)
    unknown = checks - set(ISSUES)
    if isinstance(outlier_k, bool) or not isinstance(outlier_k, (int, np.integer)) or outlier_k < 1:
        raise KibbleError(f"data issues: outlier_k must be a positive integer; got {outlier_k!r}")
    if unknown:
        raise KibbleError(f"data issues: unknown checks {sorted(unknown)}; use any of {list(ISSUES)}")
    parts = []
    if paths is not None and checks & {"blank", "low_information", "odd_size"}:
        if len(paths) != len(ids):
            raise KibbleError(f"data issues: {len(paths)} paths for {len(ids)} sample_ids")
        stats = cached_image_stats(paths, image_cache) if image_cache is not None else image_stats(paths)
        found = image_issues(stats, **image_kwargs)
        parts.append(found[found["issue"].isin(checks)])
    if emb is not None and len(ids) > 1:
        emb = _check_embeddings(emb, 2)
        if len(emb) != len(ids):
            raise KibbleError(f"data issues: {len(emb)} embedding rows for {len(ids)} sample_ids")
        from kibble.strategies.knn import neighbor_indices

        nbrs = neighbor_indices(_unit(emb), min(max(int(outlier_k), 5), len(ids) - 1), "cosine")  # one search for both checks
        if "near_duplicate" in checks:
            dup = near_duplicates(emb, near_duplicate_threshold, nbrs=nbrs[:, :5])
            parts.append(pd.DataFrame({"row": dup["row"], "issue": "near_duplicate", "score": dup["similarity"],
                                       "detail": [f"of {ids[o]} (cosine {s:.3f})" for o, s in zip(dup["of"], dup["similarity"])]}))
        if "outlier" in checks and len(ids) > outlier_k:
            score, flagged = outliers(emb, outlier_k, outlier_mads, nbrs=nbrs)
            rows = np.flatnonzero(flagged)
            parts.append(pd.DataFrame({"row": rows, "issue": "outlier", "score": score[rows],
                                       "detail": [f"mean cosine distance to {outlier_k} nearest {score[r]:.3f}" for r in rows]}))
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=ISSUE_COLUMNS).astype({"score": np.float64})
    table = pd.concat(parts, ignore_index=True)
    table["sample_id"] = ids[table["row"].to_numpy(int)]
    table["_priority"] = table["issue"].map({name: i for i, name in enumerate(ISSUES)})
    table = table.sort_values(["_priority", "score", "sample_id"], ascending=[True, False, True], kind="stable")
    return table[ISSUE_COLUMNS].reset_index(drop=True)


def issue_queue_order(table: pd.DataFrame, exclude: set[str] | None = None) -> pd.DataFrame:
    """One row per sample (its first issue by priority, every issue named in `reason`), in queue order."""
    if exclude and not table.empty:
        table = table[~is_in(table["sample_id"].astype(str), list(exclude))]
    if table.empty:
        return pd.DataFrame(columns=["sample_id", "issue", "score", "reason"])
    named = table["issue"].astype(str) + ": " + table["detail"].astype(str)
    reasons = named.groupby(table["sample_id"], sort=False).agg("; ".join)
    first = table.drop_duplicates("sample_id", keep="first").copy()
    first["reason"] = first["sample_id"].map(reasons)
    return first[["sample_id", "issue", "score", "reason"]].reset_index(drop=True)
