"""Scale benchmark, neighbors part: `neighbors`' exact vs approximate k-NN from 10^4 to 10^6 rows, and the ANN library choice.

Library code of scripts/bench_scale.py --part neighbors: synthetic embeddings shaped like a CNN's pooled
features, the exact references (scikit-learn, or float32 brute force where a float64 copy would not
fit), the timed arms, and the section whose notes justify `knn.EXACT_BELOW` and the faiss IVF index
with numbers from the same run. Apart from the probabilities part (kibble.benchmarks.scale) because
it answers a different question (where exact k-NN stops being affordable) and writes its own section.
"""

from __future__ import annotations

import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from kibble.benchmarks import command_line, replace_section
from kibble.benchmarks.scale import timed
from kibble.strategies import cleaning, knn

NEIGHBORS_TITLE = "Scale: `neighbors` k-NN from 10^4 to 10^6 rows, exact vs approximate (scripts/bench_scale.py --part neighbors)"


def clustered_embeddings(rows: int, dim: int = 1280, clusters: int = 120, noise: float = 0.2, spread: float = 0.5,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic embeddings shaped like a CNN's pooled features, float32 (rows, dim).

    120 Gaussian clusters; centres and within-cluster noise share a power-law spectrum (axis i has
    variance 1/i, axes shuffled) so that, after L2 normalisation, 128 principal components keep about
    72 % of the variance and 256 about 82 % (Imagewoof's effnet-lite0 embeddings: 74 % and 83 %); a
    common positive offset keeps cosines positive, as for post-ReLU features. `spread` scales the
    centres: 0.5 makes the clusters overlap (10-NN label purity about 0.8 at 10^5 rows). Labels are
    the clusters with `noise` of them replaced by a random class. Returns (embeddings, labels, noisy).
    """
    rng = np.random.default_rng(seed)
    scale = ((1.0 + np.arange(dim)) ** -0.5).astype(np.float32)
    rng.shuffle(scale)
    offset = (np.abs(rng.standard_normal(dim)) * scale).astype(np.float32)
    centres = (spread * rng.standard_normal((clusters, dim)) * scale).astype(np.float32) + offset
    truth = rng.integers(0, clusters, rows)
    emb = np.empty((rows, dim), dtype=np.float32)
    for start in range(0, rows, 1 << 14):
        part = rng.standard_normal((min(rows, start + (1 << 14)) - start, dim), dtype=np.float32)
        part *= scale
        part += centres[truth[start:start + len(part)]]
        emb[start:start + len(part)] = part
    labels = truth.copy()
    noisy = rng.random(rows) < noise
    labels[noisy] = rng.integers(0, clusters, int(noisy.sum()))
    return emb, labels, labels != truth


def exact_rows(emb: np.ndarray, rows: np.ndarray, k: int, metric: str = "cosine") -> np.ndarray:
    """The exact path (scikit-learn, float64) for the given query rows only: (len(rows), k), self dropped as neighbors does."""
    from sklearn.neighbors import NearestNeighbors

    emb = np.asarray(emb, dtype=np.float64)
    found = NearestNeighbors(n_neighbors=k + 1, metric=metric).fit(emb).kneighbors(emb[rows], return_distance=False)
    return _drop_rows_self(found, rows)


def flat_rows(emb: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Exact cosine neighbours of the given rows by chunked float32 brute force (no float64 copy of a 5 GB matrix)."""
    return _drop_rows_self(knn.brute_force(knn.preparer(emb, "cosine"), len(emb), rows, k + 1, "cosine"), rows)


def _drop_rows_self(found: np.ndarray, rows: np.ndarray) -> np.ndarray:
    is_self = found == rows[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), found.shape[1] - 1)
    keep = np.ones(found.shape, dtype=bool)
    keep[np.arange(len(rows)), drop] = False
    return found[keep].reshape(len(rows), found.shape[1] - 1)


def bench_neighbors(sizes=(10_000, 100_000, 1_000_000), dim: int = 1280, k: int = 10, queries: int = 2000,
                    exact_full_max: int = 10_000, exact_max: int = 100_000, seed: int = 0) -> tuple[list[dict], dict]:
    """Exact vs approximate k-NN for `neighbors` at each N in `sizes` (one run, cosine, single-threaded by default).

    exact s: the full exact search up to exact_full_max rows; up to exact_max, scikit-learn on `queries`
    random rows scaled by N / queries (brute force costs the same per query); above, not run: the
    largest measured rate scaled by N^2, and the reference neighbours come from float32 brute force.
    The comparisons (recall, scores, flags, AUPRC) are on the same random rows for every arm.
    """
    from sklearn.metrics import average_precision_score

    rows, info, rate = [], {"threads": knn.import_faiss().omp_get_max_threads()}, None
    for n in sizes:
        wall = time.perf_counter()
        emb, labels, noisy = clustered_embeddings(n, dim, seed=seed)
        info[f"generate_s_{n}"] = time.perf_counter() - wall
        sample = np.sort(np.random.default_rng(seed + 1).choice(n, min(n, queries), replace=False))
        if n <= exact_full_max:
            exact_s, _, found = timed(lambda: knn.neighbor_indices(emb, k, "cosine", method="exact"), 1)
            reference, how = found[sample], "measured, all rows"
        elif n <= exact_max:
            part_s, _, reference = timed(lambda: exact_rows(emb, sample, k), 1)
            exact_s, how = part_s * n / len(sample), f"{len(sample):,} rows x {n // len(sample)}"
        else:
            reference = flat_rows(emb, sample, k)
            exact_s, how = rate * n ** 2, "not run: N^2 from the largest measured"
        rate = exact_s / n ** 2 if rate is None or n <= exact_max else rate
        ann_s, ann_cpu, found = timed(lambda: knn.neighbor_indices(emb, k, "cosine", method="ann", seed=seed), 1)
        out = cleaning.score_neighbor_labels(labels, found)
        exact_score = (labels[reference] != labels[sample, None]).mean(axis=1)
        ann_score = out.score[sample]
        recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(found[sample], reference)])
        rows.append({
            "rows": n, "exact s": exact_s, "exact": how, "ANN s": ann_s, "ANN CPU s": ann_cpu, "exact / ANN": exact_s / ann_s,
            "recall@10": recall, "mean abs score diff": np.abs(ann_score - exact_score).mean(),
            "same flag": np.mean((ann_score > 0.5) == (exact_score > 0.5)),
            "AUPRC exact": average_precision_score(noisy[sample], exact_score),
            "AUPRC ANN": average_precision_score(noisy[sample], ann_score),
            "AUPRC ANN, all rows": average_precision_score(noisy, out.score),
            "ANN index": f"{f'PCA {knn.PCA_DIMS}' if dim > knn.PCA_DIMS else 'no PCA'}, {knn.list_count(n)} lists, nprobe {knn.probe_count(n, knn.list_count(n))}",
        })
        print(pd.DataFrame(rows[-1:]).to_string(index=False, float_format=lambda v: f"{v:.3g}"), flush=True)
        emb = labels = noisy = found = out = None  # freed before the next N (not `del`: pyflakes then flags the lambdas above)
    return rows, info


def bench_ann_libraries(n: int = 100_000, dim: int = 1280, k: int = 10, queries: int = 2000, seed: int = 0) -> list[dict]:
    """The candidates for neighbors' approximate search at one N, in one run, on the same rows and PCA-256 vectors.

    kibble's faiss IVF-Flat (knn.ann_search, PCA included) against HNSW graphs: faiss IndexHNSWFlat and
    hnswlib (when importable; it ships as an sdist only), M = 16, efConstruction = 40, efSearch = 64,
    timed as PCA + build + search of every row. recall@10 against scikit-learn's exact neighbours.
    """
    from sklearn.metrics import average_precision_score

    faiss = knn.import_faiss()
    emb, labels, noisy = clustered_embeddings(n, dim, seed=seed)
    sample = np.sort(np.random.default_rng(seed + 1).choice(n, min(n, queries), replace=False))
    reference = exact_rows(emb, sample, k)
    exact_score = (labels[reference] != labels[sample, None]).mean(axis=1)

    def recall(found: np.ndarray) -> dict:
        found = _drop_rows_self(found[sample], sample)
        score = (labels[found] != labels[sample, None]).mean(axis=1)
        return {"recall@10": float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, reference)])),
                "same flag": np.mean((score > 0.5) == (exact_score > 0.5)),
                "AUPRC": average_precision_score(noisy[sample], score),
                "AUPRC exact": average_precision_score(noisy[sample], exact_score)}

    rows, first = [], None
    nlist = knn.list_count(n)
    default = knn.probe_count(n, nlist)
    for nprobe in sorted({min(nlist, p) for p in (default, 8, 16, 32)}):
        probe_count = knn.probe_count
        knn.probe_count = lambda n_rows, nlist, _p=nprobe: min(nlist, _p)
        try:
            ivf_s, _, found = timed(lambda: knn.ann_search(emb, k + 1, "cosine", seed), 1)
        finally:
            knn.probe_count = probe_count
        rows.append({"rows": n, "index": f"faiss IVF-Flat (kibble): PCA 256, {nlist} lists, nprobe {nprobe}"
                     + (" (the default)" if nprobe == default else ""), "s": ivf_s, **recall(found)})
        first = found if nprobe == default else first

    threads = faiss.omp_get_max_threads()  # the default again on the other thread count: the same neighbours?
    faiss.omp_set_num_threads(2 if threads == 1 else 1)
    try:
        same = bool(np.array_equal(knn.ann_search(emb, k + 1, "cosine", seed), first))
        next(r for r in rows if r["index"].endswith("(the default)"))["same with 1 and 2 threads"] = same
    finally:
        faiss.omp_set_num_threads(threads)

    def project() -> np.ndarray:
        prepare = knn.preparer(emb, "cosine")
        if dim <= knn.PCA_DIMS:
            return prepare(np.arange(n))
        pca = faiss.PCAMatrix(dim, knn.PCA_DIMS)
        pca.train(prepare(np.sort(np.random.default_rng(seed).choice(n, min(n, 20_000), replace=False))))
        return np.vstack([pca.apply(prepare(np.arange(r.start, r.stop))) for r in knn.row_slices(n)])

    pca_s, _, z = timed(project, 1)

    def faiss_hnsw() -> np.ndarray:
        index = faiss.IndexHNSWFlat(z.shape[1], 16)
        index.hnsw.efConstruction = 40
        index.add(z)
        index.hnsw.efSearch = 64
        return index.search(z, k + 1)[1]

    hnsw_s, _, found = timed(faiss_hnsw, 1)
    rows.append({"rows": n, "index": "faiss HNSW-Flat on the same PCA 256: M 16, efConstruction 40, efSearch 64", "s": pca_s + hnsw_s, **recall(found)})
    try:
        import hnswlib
    except ImportError:
        rows.append({"rows": n, "index": "hnswlib: not installed (sdist only: needs a compiler)", "s": np.nan, "recall@10": np.nan})
        return rows

    def hnswlib_index() -> np.ndarray:
        index = hnswlib.Index(space="l2", dim=z.shape[1])
        index.init_index(max_elements=n, ef_construction=40, M=16, random_seed=seed)
        index.set_num_threads(faiss.omp_get_max_threads())
        index.add_items(z)
        index.set_ef(64)
        return index.knn_query(z, k=k + 1)[0].astype(np.int64)

    lib_s, _, found = timed(hnswlib_index, 1)
    rows.append({"rows": n, "index": f"hnswlib {getattr(hnswlib, '__version__', '')} on the same PCA 256: M 16, ef_construction 40, ef 64".replace("  ", " "),
                 "s": pca_s + lib_s, **recall(found)})
    return rows


def crossover(rows: list[dict]) -> float | None:
    """N where exact and ANN cost the same: log-log interpolation between the measured sizes it falls between."""
    pairs = [(r["rows"], r["exact s"] / r["ANN s"]) for r in rows if not r["exact"].startswith("not run")]
    for (n0, r0), (n1, r1) in zip(pairs, pairs[1:]):
        if r0 <= 1 < r1:
            return float(np.exp(np.log(n0) + (np.log(n1) - np.log(n0)) * -np.log(r0) / (np.log(r1) - np.log(r0))))
    return None


def neighbor_notes(rows: list[dict], info: dict, load: float, queries: int, libraries: list[dict] | None) -> list[str]:
    """The section's notes, every number taken from this run."""
    measured = [r for r in rows if not r["exact"].startswith("not run")]
    rate = measured[-1]["exact s"] / measured[-1]["rows"] ** 2
    cross = crossover(rows)
    first = measured[0]
    timing = (f"exact and ANN cost the same near {cross:,.0f} rows" if cross else
              f"exact already costs {first['exact / ANN']:.2f}x the ANN at {first['rows']:,} rows" if first["exact / ANN"] > 1 else
              f"exact stays cheaper up to {measured[-1]['rows']:,} rows")
    worst = min(measured, key=lambda r: r["AUPRC ANN"] - r["AUPRC exact"])
    notes = [
        f"Embeddings: `clustered_embeddings` (N x 1,280 float32: 120 overlapping Gaussian clusters with a power-law spectrum like "
        f"Imagewoof's effnet-lite0 features, 20 % of labels replaced by a random class); k = 10, cosine; "
        f"{info['threads']} faiss/BLAS thread(s); load average {load:.1f} at the start (a shared 2-core machine: absolute "
        "times are inflated by the other jobs; `ANN CPU s` is this process's CPU time).",
        f"Comparisons on the same {queries:,} random rows of each N: recall@10 = share of the exact neighbours the ANN "
        "returns; score = share of neighbours with another label; same flag = both flag the row or neither (score > 0.5); "
        "AUPRC for finding the planted noise by the score. `AUPRC ANN, all rows` scores every row.",
        "ANN (`knn.ann_search`, faiss IVF-Flat): rows L2-normalised, PCA to 256 dimensions, about 2 sqrt(N) k-means lists "
        f"(at most 2,048), each row scanning its nearest lists up to about {knn.SCAN_ROWS:,} rows (at least {knn.MIN_NPROBE} lists: "
        "the same work per row at any N), rows searched in the order of their nearest list; no re-ranking in the full "
        "space. Its recall is bounded by the PCA (256 components keep 82 % of the variance here, 83 % on Imagewoof) "
        "and by the lists scanned; same flag and AUPRC show what that costs the strategy. The clusters are sparse at "
        "small N (few rows per cluster), where the ANN agrees least.",
        f"exact_below = {knn.EXACT_BELOW:,} (`auto`): {timing} here, but the ANN agrees least at small N "
        f"(AUPRC {worst['AUPRC ANN']:.3f} vs exact {worst['AUPRC exact']:.3f} at {worst['rows']:,} rows), so `auto` keeps "
        f"the exact answer while it stays in minutes ({rate * knn.EXACT_BELOW ** 2:.0f} s at "
        f"{knn.EXACT_BELOW:,} rows under this run's load, N^2 from the {measured[-1]['rows']:,}-row rate); above it exact grows as N^2 "
        f"({rate * 1e10:.0f} s at 10^5, {rate * 1e12 / 86400:.1f} days at 10^6) and the ANN about linearly.",
    ]
    big = rows[-1]
    if big["exact"].startswith("not run"):
        notes.append(f"{big['rows']:,} rows: the ANN took {big['ANN s']:.0f} s wall, {big['ANN CPU s']:.0f} s CPU "
                     f"({big['ANN CPU s'] / big['ANN s']:.0%} of a core under the load), peak RSS of the run "
                     f"{info.get('peak_gb', float('nan')):.1f} GB (the 1,280-d float32 matrix alone is {big['rows'] * 1280 * 4 / 1e9:.1f} GB); "
                     f"flags agree on {big['same flag']:.1%} of the sampled rows, AUPRC {big['AUPRC ANN']:.3f} vs exact {big['AUPRC exact']:.3f}.")
    if libraries:
        ivf = next(r for r in libraries if r["index"].endswith("(the default)"))
        hnsw = next(r for r in libraries if r["index"].startswith("faiss HNSW"))
        lib = next(r for r in libraries if r["index"].startswith("hnswlib"))
        versus = ("matches or beats HNSW's AUPRC in less time here" if ivf["AUPRC"] >= hnsw["AUPRC"] - 0.005 and ivf["s"] <= hnsw["s"]
                  else "does not beat HNSW on both counts here")
        notes.append(
            "Library choice (table below): faiss, which has both index families and ships wheels; hnswlib "
            + (f"matches faiss's HNSW (recall {lib['recall@10']:.3f} vs {hnsw['recall@10']:.3f}, {lib['s']:.0f} s vs {hnsw['s']:.0f} s) "
               if not np.isnan(lib["recall@10"]) else "was not installed for this run ")
            + f"but is an sdist only (a compiler on every install). Index: IVF-Flat at its default "
            f"({ivf['s']:.0f} s, recall {ivf['recall@10']:.3f}, AUPRC {ivf['AUPRC']:.3f}) {versus} "
            f"({hnsw['s']:.0f} s, recall {hnsw['recall@10']:.3f}, AUPRC {hnsw['AUPRC']:.3f}; exact AUPRC {ivf['AUPRC exact']:.3f}); "
            "its build is one k-means on a sample (HNSW's graph build was not run at 10^6 here)"
            + (", and it returns the same neighbours with 1 and 2 threads." if ivf.get("same with 1 and 2 threads") else "."))
    return notes


def record_neighbors(rows: list[dict], info: dict, load: float, queries: int, libraries: list[dict] | None = None,
                     path: Path | None = None) -> None:
    table = pd.DataFrame(rows)
    notes = neighbor_notes(rows, info, load, queries, libraries)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    fmt = lambda t: t.astype(object).where(t.notna(), "").to_markdown(index=False, floatfmt=".3g")  # noqa: E731
    parts = [f"## {NEIGHBORS_TITLE}", "",
             f"Command: `{command_line()}`  ",
             f"Run: {stamp}, {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), Python {platform.python_version()}, "
             f"numpy {np.__version__}, faiss {knn.import_faiss().__version__}", "",
             fmt(table), "", *[f"- {n}" for n in notes]]
    if libraries:
        lib = pd.DataFrame(libraries)
        parts += ["", f"Library choice, same run, {libraries[0]['rows']:,} rows (the same rows and reference neighbours; "
                  "every index on the L2-normalised rows projected to 256 dimensions, times include the projection):", "",
                  fmt(lib.drop(columns="rows"))]
    replace_section(f"## {NEIGHBORS_TITLE}", "\n".join(parts) + "\n", path)
    print(f"wrote '## {NEIGHBORS_TITLE}' in docs/benchmarks.md")
